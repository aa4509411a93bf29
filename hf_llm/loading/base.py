"""The base model and tokenizer a training stage starts from: a GPT-2 checkpoint converted once, a tokenizer that can
pad for the stage, and the model loaded (quantized for QLoRA) with the stage's head.

```python
tokenizer = load_tokenizer_for_stage(model_args, "sft")
model = load_model_for_stage(model_args, "sft", tokenizer)        # a GPT-2 checkpoint is converted first
```
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging

from hf_llm.data import hf_llm_cache_dir
from hf_llm.errors import UsageError
from hf_llm.stages import STAGES
from hf_llm.tokenizer import ALPACA_CHAT_TEMPLATE, PAD_TOKEN, padded_vocab_size

from .sources import load_errors

if TYPE_CHECKING:
    from trl import ModelConfig

logger = logging.get_logger(__name__)


def accelerator_available() -> bool:
    """Whether a CUDA (or XPU/MPS) device is there for training; otherwise TRL configs need the CPU flags."""
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available()) or torch.backends.mps.is_available()


def _gpt2_cache_dir(model_name_or_path: str, revision: str) -> Path:
    name = re.sub(
        r"[^A-Za-z0-9._-]+",
        "--",
        os.path.abspath(model_name_or_path) if os.path.isdir(model_name_or_path) else model_name_or_path,
    ).strip("-")
    return hf_llm_cache_dir() / "from_gpt2" / f"{name}@{revision}"


def resolve_base_model(model_name_or_path: str, *, revision: str = "main", trust_remote_code: bool = False) -> str:
    """
    The checkpoint a stage loads: `model_name_or_path` itself, or, for a transformers GPT-2 checkpoint
    (`model_type == "gpt2"`, e.g. `openai-community/gpt2`), hf_llm's GPT converted from it with
    `GPTForCausalLM.from_gpt2`. The conversion is saved once under `$HF_LLM_CACHE/from_gpt2/` with GPT-2's tokenizer,
    a distinct `<|pad|>` token (embeddings resized to a multiple of 64) and the Alpaca chat template, so adapters
    trained on it record a base they can be reloaded on.

    Call it on the main process first (`training_args.main_process_first()`): the others then find the saved copy.

    Args:
        model_name_or_path (`str`): A local directory or Hub repo id.
        revision (`str`, defaults to `"main"`): Hub revision.
        trust_remote_code (`bool`, defaults to `False`): Passed to `AutoConfig`.

    Returns:
        `str`: The path or id to load.
    """
    import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)

    with load_errors(model_name_or_path):
        config = AutoConfig.from_pretrained(model_name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    if config.model_type != "gpt2":
        # Adapters record their base as given: an absolute path reloads from any working directory.
        return os.path.abspath(model_name_or_path) if os.path.isdir(model_name_or_path) else model_name_or_path
    target = _gpt2_cache_dir(model_name_or_path, revision)
    if (target / "config.json").is_file():
        return str(target)
    from hf_llm.models.gpt import GPTForCausalLM

    logger.info(f"{model_name_or_path} is a GPT-2 checkpoint: converting it to hf_llm's GPT in {target}")
    model = GPTForCausalLM.from_gpt2(model_name_or_path, revision=revision)
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, revision=revision)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    if tokenizer.chat_template is None:
        tokenizer.chat_template = ALPACA_CHAT_TEMPLATE
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(padded_vocab_size(len(tokenizer)), mean_resizing=False)
    model.config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    os.replace(staging, target)  # atomic: a concurrent or killed run never sees half a checkpoint
    return str(target)


def check_pad_token(tokenizer: PreTrainedTokenizerBase, stage: str, *, source: str | None = None) -> None:
    """
    Check the tokenizer can pad for `stage`: a sequence classifier (classifier, reward) and PPO find padding as
    `input_ids != pad_token_id`, so they need a pad token distinct from eos; causal-LM stages get `pad = eos` when the
    tokenizer has none (padding is masked out of their loss).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The stage's tokenizer (modified in place for causal-LM stages).
        stage (`str`): A stage name of `hf_llm.stages.STAGES`.
        source (`str`, *optional*): Where the tokenizer came from, for the error message.

    Raises:
        `UsageError`: The stage needs a distinct pad token and the tokenizer has none.
    """
    distinct = tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    if STAGES[stage].sequence_classification or stage == "ppo":
        if not distinct:
            raise UsageError(
                f"the tokenizer of {source or 'the model'} has pad token {tokenizer.pad_token!r} (eos is "
                f"{tokenizer.eos_token!r}); the {stage} stage finds padding as input_ids != pad_token_id, so it needs "
                f"a distinct pad token. Start from a model trained with hf_llm (its tokenizer has {PAD_TOKEN!r}), or "
                f"from a GPT-2 checkpoint (converted with one added), or add a pad token and save it with the model."
            )
    elif tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_tokenizer_for_stage(
    model_args: ModelConfig, stage: str, *, model_name_or_path: str | None = None, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """
    The stage's tokenizer, from the (resolved, see [`resolve_base_model`]) `--model_name_or_path`, checked with
    [`check_pad_token`].

    Args:
        model_args (`trl.ModelConfig`): `model_name_or_path` and `model_revision`.
        stage (`str`): A stage name of `hf_llm.stages.STAGES`.
        model_name_or_path (`str`, *optional*): Load from here instead of `--model_name_or_path` (e.g. the merged SFT
            checkpoint `resolve_sft_checkpoint` returned for it); errors still name the user's flag value.
        trust_remote_code (`bool`, defaults to `False`): Passed to `AutoTokenizer`.

    Returns:
        `PreTrainedTokenizerBase`: The tokenizer, right-padding.
    """
    if model_args.model_name_or_path is None:
        raise UsageError(
            f"the {stage} stage fine-tunes an existing model: pass --model_name_or_path (a pretrain.py output "
            "directory, a Hub repo id, or a GPT-2 checkpoint such as openai-community/gpt2)."
        )
    source = resolve_base_model(
        model_name_or_path or model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
    )
    revision = model_args.model_revision if not os.path.isdir(source) else None
    with load_errors(model_args.model_name_or_path):
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "right"
    check_pad_token(tokenizer, stage, source=model_args.model_name_or_path)
    return tokenizer


def get_stage_quantization_config(model_args: ModelConfig) -> BitsAndBytesConfig | None:
    """
    TRL's `get_quantization_config`, made to run on a CPU: 4-bit compute in float32 there (bf16 matmuls on most
    CPUs are slow or missing) unless `--dtype` asks for another.

    Args:
        model_args (`trl.ModelConfig`): `load_in_4bit`, `load_in_8bit`, `bnb_4bit_quant_type`,
            `use_bnb_nested_quant`, `dtype`.

    Returns:
        `BitsAndBytesConfig` or `None` when neither `--load_in_4bit` nor `--load_in_8bit` is set.
    """
    from trl import get_quantization_config

    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        raise UsageError(
            "--load_in_4bit/--load_in_8bit freeze the base model in low precision, so only adapters can train: add "
            "--use_peft true (QLoRA), or drop the quantization flag for full fine-tuning."
        )
    config = get_quantization_config(model_args)
    if config is not None and config.load_in_4bit and model_args.dtype in (None, "auto"):
        config.bnb_4bit_compute_dtype = torch.float32 if not accelerator_available() else torch.bfloat16
    return config


def load_model_for_stage(
    model_args: ModelConfig,
    stage: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    model_name_or_path: str | None = None,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
    **config_kwargs,
) -> PreTrainedModel:
    """
    Load the stage's base model: `AutoModelForSequenceClassification` for a classifier or reward model (a new `score`
    head on a pretrained or GPT-2 backbone), `AutoModelForCausalLM` otherwise; quantized for QLoRA
    (`--load_in_4bit` / `--load_in_8bit`, then `prepare_model_for_kbit_training`).

    Args:
        model_args (`trl.ModelConfig`): Checkpoint, revision, dtype, attention kernel and quantization flags.
        stage (`str`): A stage name of `hf_llm.stages.STAGES`.
        tokenizer (`PreTrainedTokenizerBase`): From [`load_tokenizer_for_stage`]; its pad id goes into the config and
            it must fit the embedding table.
        model_name_or_path (`str`, *optional*): Load from here instead of `--model_name_or_path` (e.g. the merged
            SFT checkpoint); errors still name the user's flag value.
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.
        gradient_checkpointing (`bool`, defaults to `False`): For a quantized model, whether
            `prepare_model_for_kbit_training` turns gradient checkpointing on.
        config_kwargs: Config overrides, e.g. `num_labels`, `id2label`, `label2id` for a classifier.

    Returns:
        `PreTrainedModel`: The model, not yet wrapped with PEFT.
    """
    source = resolve_base_model(
        model_name_or_path or model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
    )
    auto_class = AutoModelForSequenceClassification if STAGES[stage].sequence_classification else AutoModelForCausalLM
    quantization_config = get_stage_quantization_config(model_args)
    load_kwargs: dict[str, Any] = {
        "revision": model_args.model_revision if not os.path.isdir(source) else None,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": trust_remote_code,
        "pad_token_id": tokenizer.pad_token_id,
        **config_kwargs,
    }
    if quantization_config is not None:
        from accelerate import PartialState

        load_kwargs["quantization_config"] = quantization_config
        # One full copy per process (DDP); bitsandbytes places the quantized weights at load time.
        load_kwargs["device_map"] = {"": PartialState().local_process_index} if torch.cuda.is_available() else "cpu"
    try:
        with load_errors(model_args.model_name_or_path):
            model = auto_class.from_pretrained(source, **load_kwargs)
    except ValueError as error:
        if "Unrecognized configuration class" in str(error):
            raise UsageError(
                f"{model_args.model_name_or_path} has no {auto_class.__name__[len('AutoModelFor') :]} class: {error}"
            ) from error
        raise
    vocab_size = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab_size:
        raise UsageError(
            f"the tokenizer has {len(tokenizer)} tokens but {model_args.model_name_or_path}'s embedding table holds "
            f"{vocab_size}: use the model's own tokenizer (saved with it by pretrain.py)."
        )
    if quantization_config is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        _disable_cpu_4bit_inference_kernel(model)
    return model


def _disable_cpu_4bit_inference_kernel(model: torch.nn.Module) -> None:
    # bitsandbytes repacks a 4-bit weight for a faster CPU inference kernel (avx512-bf16 CPUs) the first time the
    # layer runs in eval mode without grad, and keeps that layout. During training that breaks twice: an evaluation
    # between steps leaves layers the training matmul cannot use ("a view of a leaf Variable ... in-place"), and
    # widths that are not whole 64-value blocks (the `tiny` preset's 96) cannot be repacked at all ("shape '[96, 1]'
    # is invalid"). A model loaded to train keeps the generic kernel in both modes.
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
