"""What fine-tuning itself needs, shared by every fine-tuning stage: TRL configs that start on a CPU, the LoRA
config of a stage and parameter counts. (Over-long examples: `hf_llm.data.validation.handle_overlong`.)

The `classifier`, `sft`, `reward`, `ppo` and `dpo` scripts parse TRL's `ModelConfig` (`--model_name_or_path`,
`--use_peft`, `--lora_*`, `--load_in_4bit` / `--load_in_8bit`, `--dtype`, `--attn_implementation`). Loading the base
model and tokenizer (GPT-2 conversion, QLoRA quantization) and merging adapters live in `hf_llm.loading`:

```python
tokenizer = load_tokenizer_for_stage(model_args, "sft")          # hf_llm.loading
model = load_model_for_stage(model_args, "sft", tokenizer)       # hf_llm.loading
peft_config = get_stage_peft_config(model_args, "sft")           # LoRA on every linear layer, or None
```

What these helpers encode is in docs/fine-tuning.md (PEFT's default targets, the SEQ_CLS head, TRL's CPU flags).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers.utils import logging

from hf_llm.loading import accelerator_available
from hf_llm.stages import STAGES

if TYPE_CHECKING:
    from peft import PeftConfig
    from trl import ModelConfig

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Training-config defaults
# ----------------------------------------------------------------------------------------------------------------


def cpu_safe_defaults() -> dict[str, Any]:
    """
    Defaults that let a TRL config (`SFTConfig`, `RewardConfig`, `DPOConfig`, `PPOConfig`) start on a machine
    without an accelerator: TRL defaults to `bf16=True` and raises at construction on a CPU unless told otherwise.

    Returns:
        `dict[str, Any]`: `{"bf16": False, "use_cpu": True}` without an accelerator, `{}` with one. A recipe or a
        command-line flag still overrides them.
    """
    return {} if accelerator_available() else {"bf16": False, "use_cpu": True}


def apply_cpu_safe_defaults(parser) -> None:
    """
    Make [`cpu_safe_defaults`] the parser's defaults, before `parse_args_and_config()` (recipes and flags still win).

    Args:
        parser (`trl.TrlParser`): The script's parser.
    """
    defaults = cpu_safe_defaults()
    if defaults:
        parser.set_defaults_with_config(**defaults)


# ----------------------------------------------------------------------------------------------------------------
# LoRA
# ----------------------------------------------------------------------------------------------------------------


def get_stage_peft_config(model_args: ModelConfig, stage: str) -> PeftConfig | None:
    """
    TRL's `get_peft_config` with the stage's task type and a target that exists on every model.

    - `task_type` is `"SEQ_CLS"` for a sequence-classification stage (classifier, reward): PEFT then trains and saves
      the new `score` head; `"CAUSAL_LM"` otherwise.
    - `target_modules` defaults to `"all-linear"` (PEFT knows no default for hf_llm's `model_type`).

    Args:
        model_args (`trl.ModelConfig`): `use_peft` and the `lora_*` flags.
        stage (`str`): A stage name of `hf_llm.stages.STAGES`.

    Returns:
        `peft.LoraConfig` or `None` when `--use_peft false` (full fine-tuning).
    """
    from trl import get_peft_config

    if not model_args.use_peft:
        return None
    task_type = "SEQ_CLS" if STAGES[stage].sequence_classification else "CAUSAL_LM"
    if model_args.lora_task_type not in ("CAUSAL_LM", task_type):
        logger.warning(f"--lora_task_type {model_args.lora_task_type} ignored: the {stage} stage needs {task_type}")
    config = get_peft_config(model_args)
    config.task_type = task_type
    if config.target_modules is None and not model_args.lora_target_parameters:
        config.target_modules = "all-linear"
    if task_type == "SEQ_CLS":
        # PEFT adds `score` itself for SEQ_CLS; listing it keeps the saved adapter explicit about it.
        config.modules_to_save = sorted(set(config.modules_to_save or []) | {"score"})
    return config


def count_trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """`(trainable, total)` parameter counts (a 4-bit weight counts as its stored elements)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def fit_max_length_to_model(training_args: Any, model: torch.nn.Module) -> int:
    """
    Cap `--max_length` (TRL's `SFTConfig`, `RewardConfig`, `DPOConfig`) at the model's context, which TRL's trainers
    read from the config: unset, it becomes the context (logged); larger, it is lowered to it (a warning says so).

    Args:
        training_args: A TRL config with `max_length`.
        model (`torch.nn.Module`): The model to train (`config.max_position_embeddings`).

    Returns:
        `int`: The `max_length` the stage uses.
    """
    context = model.config.max_position_embeddings
    if training_args.max_length is None:
        logger.info(f"--max_length not set: using the model's context length, {context}")
    elif training_args.max_length > context:
        logger.warning(f"--max_length {training_args.max_length} is over the model's context: lowered to {context}")
    else:
        return training_args.max_length
    training_args.max_length = context
    return context
