"""What every fine-tuning stage shares: base model and tokenizer, LoRA/QLoRA, merging, dropped-example reports.

The `classifier`, `sft`, `reward`, `ppo` and `dpo` scripts parse TRL's `ModelConfig` (`--model_name_or_path`,
`--use_peft`, `--lora_*`, `--load_in_4bit` / `--load_in_8bit`, `--dtype`, `--attn_implementation`) and build on these
helpers, so every stage loads, quantizes, adapts and merges a model the same way:

```python
tokenizer = load_tokenizer_for_stage(model_args, "sft")
model = load_model_for_stage(model_args, "sft", tokenizer)        # a GPT-2 checkpoint is converted first
peft_config = get_stage_peft_config(model_args, "sft")            # LoRA on every linear layer, or None
...
merge_adapter(training_args.output_dir, os.path.join(training_args.output_dir, "merged"))
```

Facts these helpers encode (checked on hf_llm's GPT with trl 1.12, peft 0.21, bitsandbytes 0.50, CPU; DESIGN §5):

- PEFT has no default `target_modules` for a new `model_type`: `"all-linear"` is used unless `--lora_target_modules`
  says otherwise (it leaves `lm_head` out, which TRL's chunked loss needs).
- A sequence-classification stage needs `task_type="SEQ_CLS"`: PEFT then trains and saves the new `score` head
  (`modules_to_save`); without it LoRA wraps a random frozen head that is never saved.
- A classifier pools the last non-pad token, so its pad token must differ from eos.
- QLoRA on CPU: nf4 with a float32 compute dtype and `device_map="cpu"`, then `prepare_model_for_kbit_training`.
- TRL configs default to bf16 and refuse to start on a CPU unless `bf16=False` and `use_cpu=True`
  ([`cpu_safe_defaults`]).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
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

from hf_llm.data import DataError, hf_llm_cache_dir
from hf_llm.errors import UsageError
from hf_llm.stages import STAGES
from hf_llm.tokenizer import ALPACA_CHAT_TEMPLATE, PAD_TOKEN

from .arguments import padded_vocab_size
from .output_dir import check_command_output_dir

if TYPE_CHECKING:
    from datasets import Dataset
    from peft import PeftConfig
    from trl import ModelConfig

logger = logging.get_logger(__name__)

#: Name of the sub-directory `--merge_adapter` writes the standalone merged model to.
MERGED_DIR_NAME = "merged"


# ----------------------------------------------------------------------------------------------------------------
# Training-config defaults
# ----------------------------------------------------------------------------------------------------------------


def accelerator_available() -> bool:
    """Whether a CUDA (or XPU/MPS) device is there for training; otherwise TRL configs need the CPU flags."""
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available()) or torch.backends.mps.is_available()


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
# Base model and tokenizer
# ----------------------------------------------------------------------------------------------------------------


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
    model_args: ModelConfig, stage: str, *, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """
    The stage's tokenizer, from the (resolved, see [`resolve_base_model`]) `--model_name_or_path`, checked with
    [`check_pad_token`].

    Args:
        model_args (`trl.ModelConfig`): `model_name_or_path` and `model_revision`.
        stage (`str`): A stage name of `hf_llm.stages.STAGES`.
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
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=trust_remote_code
    )
    revision = model_args.model_revision if not os.path.isdir(source) else None
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


def load_model_for_stage(
    model_args: ModelConfig,
    stage: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
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
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.
        gradient_checkpointing (`bool`, defaults to `False`): For a quantized model, whether
            `prepare_model_for_kbit_training` turns gradient checkpointing on.
        config_kwargs: Config overrides, e.g. `num_labels`, `id2label`, `label2id` for a classifier.

    Returns:
        `PreTrainedModel`: The model, not yet wrapped with PEFT.
    """
    source = resolve_base_model(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=trust_remote_code
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
    # bitsandbytes 0.50 repacks a 4-bit weight for a faster CPU inference kernel (avx512-bf16 CPUs) the first time the
    # layer runs in eval mode without grad, and keeps that layout. During training that breaks twice: an evaluation
    # between steps leaves layers the training matmul cannot use ("a view of a leaf Variable ... in-place"), and
    # widths that are not whole 64-value blocks (the `tiny` preset's 96) cannot be repacked at all ("shape '[96, 1]'
    # is invalid"). A model loaded to train keeps the generic kernel in both modes.
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def count_trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """`(trainable, total)` parameter counts (a 4-bit weight counts as its stored elements)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------------
# Dropped examples
# ----------------------------------------------------------------------------------------------------------------


def drop_overlong_examples(
    dataset: Dataset,
    lengths: Sequence[int],
    max_length: int,
    *,
    strategy: str,
    split: str,
    what: str,
    fix: str,
) -> Dataset:
    """
    Remove examples whose `lengths[i] >= max_length` (e.g. a prompt that leaves no room for a response), counting and
    reporting them; never in silence.

    Args:
        dataset (`datasets.Dataset`): One split.
        lengths (`Sequence[int]`): The length that must stay under `max_length`, per example.
        max_length (`int`): The limit (TRL's `--max_length`).
        strategy (`str`): `--overlong_strategy`: `"error"` raises on the first such example; `"drop"` and
            `"truncate"` drop them with a warning (a prompt cut to fit leaves nothing to learn from).
        split (`str`): The split's name, for the messages.
        what (`str`): What is too long, e.g. `"prompt"`.
        fix (`str`): What the user can change, e.g. `"raise --max_length or shorten the prompts"`.

    Returns:
        `datasets.Dataset`: The kept examples.

    Raises:
        `DataError`: With `strategy="error"` and an over-long example, or when every example is over-long.
    """
    overlong = [i for i, length in enumerate(lengths) if length >= max_length]
    if not overlong:
        return dataset
    first = overlong[0]
    where = f"split {split!r}, example {first}: {what} of {lengths[first]} tokens >= --max_length {max_length}"
    if strategy == "error":
        raise DataError(
            f"{len(overlong)} of {len(dataset)} examples have a {what} of --max_length {max_length} tokens or more "
            f"({where}); {fix}, or pass --overlong_strategy drop to drop them."
        )
    if len(overlong) == len(dataset):
        raise DataError(f"every example of split {split!r} has a {what} of --max_length {max_length} or more; {fix}.")
    logger.warning(
        f"Dropped {len(overlong)} of {len(dataset)} {split} examples whose {what} is --max_length {max_length} tokens "
        f"or more (first: {where}); {fix} to keep them."
    )
    overlong_set = set(overlong)
    return dataset.select([i for i in range(len(dataset)) if i not in overlong_set])


# ----------------------------------------------------------------------------------------------------------------
# Merging
# ----------------------------------------------------------------------------------------------------------------


def _adapter_config(adapter_dir: str, revision: str | None = None, token: str | None = None) -> dict:
    from transformers.utils.peft_utils import find_adapter_config_file

    path = find_adapter_config_file(adapter_dir, revision=revision, token=token)
    if path is None:
        raise UsageError(
            f"{adapter_dir} holds no adapter_config.json: merge takes a LoRA adapter directory or Hub repo written by "
            "classifier.py / sft.py with --use_peft true (a full fine-tuning output is already standalone)."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_adapter_model(
    adapter_dir: str,
    *,
    num_labels: int | None = None,
    revision: str | None = None,
    token: str | None = None,
    trust_remote_code: bool = False,
):
    """
    Load a LoRA adapter on its base with `AutoPeftModelFor*` (the class follows the adapter's `task_type`).

    A classifier adapter stores only the trained `score` weights, so the base must be built with the right head size:
    `num_labels` defaults to the classes `classifier.py` writes next to the adapter (`labels.json`).

    Args:
        adapter_dir (`str`): An adapter directory or Hub repo id.
        num_labels (`int`, *optional*): The classifier's number of labels.
        revision (`str`, *optional*): Hub revision of the adapter.
        token (`str`, *optional*): Hub token.
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.

    Returns:
        `peft.PeftModel`: The base model with the adapter, in eval mode.
    """
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

    import hf_llm  # noqa: F401  (AutoPeftModel* load the base through the Auto classes)

    adapter_config = _adapter_config(adapter_dir, revision, token)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "token": token}
    if revision is not None:
        kwargs["revision"] = revision
    if adapter_config.get("task_type") == "SEQ_CLS":
        labels = _saved_labels(adapter_dir, revision, token)
        if num_labels is None and labels is not None:
            num_labels = len(labels)
        if num_labels is None:
            raise UsageError(
                f"{adapter_dir} is a classifier adapter with no labels.json to read its classes from: pass "
                "--num_labels (the number of classes it was trained on)."
            )
        kwargs["num_labels"] = num_labels
        if labels is not None:
            kwargs["id2label"] = dict(enumerate(labels))
            kwargs["label2id"] = {label: i for i, label in enumerate(labels)}
        peft_class = AutoPeftModelForSequenceClassification
    else:
        peft_class = AutoPeftModelForCausalLM
    model = peft_class.from_pretrained(adapter_dir, is_trainable=False, **kwargs)
    model.eval()
    return model


def _saved_labels(adapter_dir: str, revision: str | None, token: str | None) -> list[str] | None:
    """The classes `classifier.py` recorded next to its adapter (`labels.json`), or `None`."""
    from transformers.utils import cached_file

    path = cached_file(
        adapter_dir, "labels.json", revision=revision, token=token, _raise_exceptions_for_missing_entries=False
    )
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        id2label = json.load(f).get("id2label") or {}
    return [id2label[str(i)] for i in range(len(id2label))] or None


def merge_adapter(
    adapter_dir: str,
    output_dir: str,
    *,
    num_labels: int | None = None,
    revision: str | None = None,
    token: str | None = None,
    trust_remote_code: bool = False,
) -> str:
    """
    Merge a LoRA adapter into its base and save a standalone checkpoint that `AutoModelForCausalLM` /
    `AutoModelForSequenceClassification` and `pipeline()` load with no PEFT, `id2label` kept. The base is loaded in
    full precision (even after QLoRA: the adapter is merged into the original weights, not the 4-bit copy).

    Copies the adapter's tokenizer (or the base's), `recipe.yaml` and `data_fingerprint.json` when present.

    Args:
        adapter_dir (`str`): An adapter directory or Hub repo id (`hf-llm merge ADAPTER_DIR`).
        output_dir (`str`): Where to write the merged model.
        num_labels (`int`, *optional*): For a classifier adapter without its `labels.json` (see
            [`load_adapter_model`]).
        revision (`str`, *optional*): Hub revision of the adapter.
        token (`str`, *optional*): Hub token.
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.

    Returns:
        `str`: `output_dir`.
    """
    model = load_adapter_model(
        adapter_dir, num_labels=num_labels, revision=revision, token=token, trust_remote_code=trust_remote_code
    )
    base_model = model.peft_config[model.active_adapter].base_model_name_or_path
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    os.makedirs(output_dir, exist_ok=True)
    merged.save_pretrained(output_dir)
    tokenizer = None
    for source in (adapter_dir, base_model):
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                source, trust_remote_code=trust_remote_code, token=token, revision=revision
            )
            break
        except (OSError, ValueError):
            continue
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    if os.path.isdir(adapter_dir):
        for name in ("recipe.yaml", "data_fingerprint.json", "labels.json"):
            if os.path.isfile(os.path.join(adapter_dir, name)):
                shutil.copy2(os.path.join(adapter_dir, name), os.path.join(output_dir, name))
    logger.info(f"Merged adapter {adapter_dir} into {base_model}: saved to {os.path.abspath(output_dir)}")
    return output_dir


def merge_trained_adapter(
    output_dir: str,
    stage: str,
    *,
    trained_with_peft: bool,
    num_labels: int | None = None,
    trust_remote_code: bool = False,
) -> str | None:
    """
    `--merge_adapter` at the end of a stage: merge the adapter the run saved in `output_dir` into
    `OUTPUT_DIR/merged` (see [`merge_adapter`]). Call it on the main process only. A run trained in full has nothing
    to merge: it warns and returns `None`.

    Args:
        output_dir (`str`): The run's output directory, holding the saved adapter.
        stage (`str`): The stage name, for the log line.
        trained_with_peft (`bool`): Whether the run trained a LoRA adapter (`--use_peft true`).
        num_labels (`int`, *optional*): Classes of a classifier or reward adapter (see [`merge_adapter`]).
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.

    Returns:
        `str` or `None`: The merged model's directory, or `None` when there was nothing to merge.
    """
    if not trained_with_peft:
        logger.warning("--merge_adapter: nothing to merge, the model was fine-tuned in full (--use_peft false)")
        return None
    merged_dir = merge_adapter(
        output_dir,
        os.path.join(output_dir, MERGED_DIR_NAME),
        num_labels=num_labels,
        trust_remote_code=trust_remote_code,
    )
    logger.info(f"Merged {stage} model (no PEFT needed to load it): {merged_dir}")
    return merged_dir


def run_merge(args) -> int:
    """`hf-llm merge`: merge an adapter and optionally push the merged model."""
    check_command_output_dir(
        args.output_dir,
        inputs={"ADAPTER_DIR": args.adapter_dir},
        overwrite_output_dir=args.overwrite_output_dir,
        example_suffix="-merged",
    )
    output_dir = merge_adapter(
        args.adapter_dir,
        args.output_dir,
        num_labels=args.num_labels,
        revision=args.revision,
        token=args.hub_token,
        trust_remote_code=args.trust_remote_code,
    )
    if args.push_to_hub:
        from hf_llm.hub import push_output_dir

        push_output_dir(
            output_dir,
            args.hub_model_id,
            private=args.hub_private_repo,
            token=args.hub_token,
            commit_message=f"Merge of {args.adapter_dir}",
        )
    print(f"merged model: {os.path.abspath(output_dir)}")
    return 0


def add_merge_command(commands) -> None:
    """`hf-llm merge ADAPTER_DIR --output_dir DIR` and its flags."""
    command = commands.add_parser(
        "merge", help="merge a LoRA adapter into its base: a standalone model that loads without PEFT"
    )
    command.add_argument("adapter_dir", help="adapter directory or Hub repo id (classifier.py / sft.py output)")
    command.add_argument("--output_dir", required=True, help="where to write the merged model (a new or empty dir)")
    command.add_argument("--overwrite_output_dir", action="store_true", help="delete what --output_dir holds first")
    command.add_argument("--num_labels", type=int, help="classes of a classifier adapter without labels.json")
    command.add_argument("--revision", help="Hub revision of the adapter")
    command.add_argument("--trust_remote_code", action="store_true", help="allow custom code from the Hub")
    command.add_argument("--push_to_hub", action="store_true", help="push the merged model (needs --hub_model_id)")
    command.add_argument("--hub_model_id", help="repo to push to, e.g. your-name/gpt-sft-merged")
    command.add_argument("--hub_private_repo", action="store_true", help="create the repo private")
    command.add_argument("--hub_token", help="Hub token (default: HF_TOKEN or the saved login)")
    command.set_defaults(run=run_merge)
