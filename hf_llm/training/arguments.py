"""Argument dataclasses shared by the training scripts.

Each script parses `ModelArguments`, `hf_llm.data.DataArguments` and a `TrainingArguments` subclass (here
[`PretrainConfig`]; TRL's configs for the later stages) with `TrlParser`, so `--config recipe.yaml` sets defaults and
CLI flags override them. Field names match Hugging Face's own flags (`model_name_or_path`, `output_dir`, ...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, TrainingArguments
from transformers.utils import logging

from hf_llm.errors import UsageError, one_line
from hf_llm.loading import check_attn_implementation, check_model_source, local_path_exists
from hf_llm.models.gpt.configuration_gpt import POSITION_EMBEDDING_TYPES, GPTConfig
from hf_llm.tokenizer import padded_vocab_size

from .output_dir import OutputDirArguments
from .presets import MODEL_PRESETS

logger = logging.get_logger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
PACKING_MODES = ("blocks", "padding_free")


@dataclass
class ModelArguments:
    """
    Which model to train: a fresh GPT built from a preset and/or explicit sizes, or an existing checkpoint.

    Args:
        model_name_or_path (`str`, *optional*):
            A saved model directory or Hub repo id to continue training from. When unset, a new `GPTForCausalLM` is
            built from `model_preset` and the size fields below.
        model_revision (`str`, defaults to `"main"`):
            Hub revision (branch, tag or commit) of `model_name_or_path` / `tokenizer_name_or_path`.
        model_preset (`str`, *optional*):
            Shape of a new model: one of `hf_llm.training.MODEL_PRESETS` (`"tiny"`, `"small"`, `"gpt2-124m"`).
            Ignored when `model_name_or_path` is set (a recipe's preset does not block continuing from a model);
            `--model_preset=` or `--model_preset none` clears a recipe's preset.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size (`int`, *optional*):
            Override the preset's size (a new model only).
        max_position_embeddings (`int`, *optional*):
            Override the preset's context length (a new model only).
        position_embedding_type (`str`, *optional*):
            `"learned"` or `"rope"` (a new model only).
        embedding_dropout, attention_dropout, residual_dropout (`float`, *optional*):
            Dropout probabilities (of a new model, or overriding a loaded model's).
        tie_word_embeddings (`bool`, *optional*):
            Share the LM head with the token embedding (a new model only).
        attn_implementation (`str`, *optional*):
            `"eager"`, `"sdpa"`, `"flash_attention_2"`, `"flex_attention"`, a Hub kernel, ...: any name transformers
            accepts (it validates the name when the model is built); defaults to transformers' choice (sdpa).
        dtype (`str`, *optional*):
            Dtype to load `model_name_or_path` in (`"auto"`, `"float32"`, `"bfloat16"`, `"float16"`). Leave unset for
            float32 master weights with bf16/fp16 autocast from `--bf16`/`--fp16`, the usual mixed-precision setup.
        tokenizer_name_or_path (`str`, *optional*):
            Tokenizer directory or Hub id. Defaults to `model_name_or_path`'s tokenizer; for a new model with no
            tokenizer, a byte-level BPE tokenizer of `tokenizer_vocab_size` tokens is trained on the training split.
        tokenizer_vocab_size (`int`, defaults to 4096):
            Vocabulary size of a tokenizer trained by the script.
    """

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Saved model directory or Hub repo id to continue training from."}
    )
    model_revision: str = field(default="main", metadata={"help": "Hub revision of the model and tokenizer."})
    model_preset: str | None = field(
        default=None,
        metadata={"help": f"Shape of a new model: one of {sorted(MODEL_PRESETS)} ('none' or '' clears a recipe's)."},
    )
    hidden_size: int | None = field(default=None, metadata={"help": "New model: width of the residual stream."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "New model: number of blocks."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "New model: attention heads."})
    intermediate_size: int | None = field(default=None, metadata={"help": "New model: MLP width."})
    max_position_embeddings: int | None = field(default=None, metadata={"help": "New model: context length."})
    position_embedding_type: str | None = field(default=None, metadata={"help": "New model: 'learned' or 'rope'."})
    embedding_dropout: float | None = field(default=None, metadata={"help": "Embedding dropout."})
    attention_dropout: float | None = field(default=None, metadata={"help": "Attention dropout."})
    residual_dropout: float | None = field(default=None, metadata={"help": "Residual dropout."})
    tie_word_embeddings: bool | None = field(default=None, metadata={"help": "New model: tie LM head to embeddings."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel: eager, sdpa, flash_attention_2, flex_attention, ..."}
    )
    dtype: str | None = field(default=None, metadata={"help": f"Load dtype of model_name_or_path: {list(DTYPES)}."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer directory or Hub id; default: the model's, or train one."}
    )
    tokenizer_vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size of a tokenizer we train."})

    def __post_init__(self):
        if self.model_preset is not None and self.model_preset.strip().lower() in ("", "none"):
            self.model_preset = None
        if self.model_preset is not None and self.model_preset not in MODEL_PRESETS:
            raise UsageError(
                f"--model_preset {self.model_preset!r} is unknown; choose one of {sorted(MODEL_PRESETS)}."
            )
        if self.model_name_or_path is not None and self.model_preset is not None:
            # A preset is the shape of a new model; a recipe that sets one can still continue from a checkpoint.
            logger.info(
                f"model_preset {self.model_preset!r} is ignored: --model_name_or_path {self.model_name_or_path} "
                "brings its own shape."
            )
            self.model_preset = None
        # A kernel this machine lacks (flash-attn) is refused now, at parse time, not after the data is loaded.
        check_attn_implementation(self.attn_implementation)
        # So is a missing or broken model directory (the tokenizer would otherwise fail on it with a Hub message).
        if self.model_name_or_path is not None:
            check_model_source(self.model_name_or_path)
        if self.tokenizer_name_or_path is not None:
            local_path_exists(self.tokenizer_name_or_path, "--tokenizer_name_or_path")
        if self.position_embedding_type is not None and self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise UsageError(
                f"--position_embedding_type {self.position_embedding_type!r} is unknown; choose one of "
                f"{list(POSITION_EMBEDDING_TYPES)}."
            )
        if self.dtype is not None and self.dtype not in DTYPES:
            raise UsageError(f"--dtype {self.dtype!r} is unknown; choose one of {list(DTYPES)}.")
        if self.tokenizer_vocab_size < 300:
            raise UsageError(
                f"--tokenizer_vocab_size {self.tokenizer_vocab_size} is too small for a byte-level BPE "
                "(256 bytes + special tokens); pass at least 300."
            )
        if self.model_name_or_path is not None:
            shape_flags = [name for name in _SHAPE_FIELDS if getattr(self, name) is not None]
            if shape_flags:
                raise UsageError(
                    f"--model_name_or_path {self.model_name_or_path} loads an existing model, whose shape cannot "
                    f"change; remove {', '.join('--' + name for name in shape_flags)}."
                )

    def config_overrides(self) -> dict:
        """The GPTConfig fields set explicitly on the command line or in the recipe (unset ones are left out).

        For a new model they override the preset; for `model_name_or_path` only dropouts can be set (shape flags are
        refused), and they override the loaded config.
        """
        return {name: getattr(self, name) for name in _CONFIG_FIELDS if getattr(self, name) is not None}


# GPTConfig fields that fix a model's shape (a loaded model keeps its own) ...
_SHAPE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "position_embedding_type",
    "tie_word_embeddings",
)
# ... and all the GPTConfig fields ModelArguments can set.
_CONFIG_FIELDS = (*_SHAPE_FIELDS, "embedding_dropout", "attention_dropout", "residual_dropout")


@contextlib.contextmanager
def attn_implementation_errors(attn_implementation: str | None) -> Iterator[None]:
    """
    Build or load a model with `--attn_implementation`, turning transformers' refusal into a `UsageError`.

    transformers validates the name (and whether its kernel is installed) when the model is built; its message lists
    what it accepts but not which flag to change.

    Args:
        attn_implementation (`str`, *optional*): `ModelArguments.attn_implementation`.
    """
    try:
        yield
    except (ValueError, ImportError) as error:
        message = one_line(error)
        about_attention = any(word in message.lower() for word in ("attn_implementation", "attention", "kernels"))
        if attn_implementation is None or not about_attention:
            raise
        raise UsageError(
            f"--attn_implementation {attn_implementation!r} cannot be used here: {message} Pass another "
            "--attn_implementation (e.g. sdpa or eager), or leave it unset for transformers' default."
        ) from error


def build_gpt_config(
    model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, vocab_multiple_of: int = 64
) -> GPTConfig:
    """
    A `GPTConfig` for a new model: the preset's shape, then the explicit size flags, then the tokenizer's vocabulary
    and special tokens.

    Args:
        model_args ([`ModelArguments`]): `model_preset` and the size overrides.
        tokenizer (`PreTrainedTokenizerBase`): Sets `vocab_size` (`len(tokenizer)` rounded up to
            `vocab_multiple_of`) and `bos/eos/pad_token_id`.
        vocab_multiple_of (`int`, defaults to 64): See [`padded_vocab_size`].

    Returns:
        `GPTConfig`: The configuration of the model to build.

    Raises:
        `ValueError`: If neither a preset nor the four core sizes are given, or the tokenizer lacks eos/pad tokens.
    """
    kwargs: dict[str, Any] = dict(MODEL_PRESETS[model_args.model_preset]) if model_args.model_preset else {}
    kwargs.update(model_args.config_overrides())
    missing = [name for name in ("hidden_size", "num_hidden_layers", "num_attention_heads") if name not in kwargs]
    if missing:
        raise UsageError(
            f"a new model needs its shape: pass --model_preset (one of {sorted(MODEL_PRESETS)}) or "
            f"{', '.join('--' + name for name in missing)}; or pass --model_name_or_path to continue from a model."
        )
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise UsageError(
            f"tokenizer {tokenizer.name_or_path!r} needs an eos and a pad token (eos={tokenizer.eos_token!r}, "
            f"pad={tokenizer.pad_token!r}); use hf_llm.tokenizer.train_tokenizer or add them with "
            "tokenizer.add_special_tokens."
        )
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise UsageError(
            f"tokenizer {tokenizer.name_or_path!r} uses the same token for pad and eos ({tokenizer.eos_token!r}); "
            "sequence classification, reward models and PPO need them distinct: add a '<|pad|>' token."
        )
    kwargs["vocab_size"] = padded_vocab_size(len(tokenizer), vocab_multiple_of)
    kwargs["eos_token_id"] = tokenizer.eos_token_id
    kwargs["pad_token_id"] = tokenizer.pad_token_id
    kwargs["bos_token_id"] = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    try:
        return GPTConfig(**kwargs)
    except ValueError as error:  # GPTConfig's checks name the field; the user set it with the flag of that name
        raise UsageError(f"{error} (set by --{str(error).split('GPTConfig.', 1)[-1].split(' ', 1)[0]})") from error


def bf16_available() -> bool:
    """Whether the accelerator trains in bf16 natively (a CUDA GPU with bf16 support: Ampere or newer)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class PretrainConfig(OutputDirArguments, TrainingArguments):
    """
    `transformers.TrainingArguments` with pretraining defaults. Every TrainingArguments flag works unchanged.

    Changed defaults: AdamW (`adam_beta2=0.95`, `weight_decay=0.1`), cosine schedule with warmup, `max_grad_norm=1.0`,
    TensorBoard logging, token counting for throughput (`include_num_input_tokens_seen="non_padding"`), non-finite
    losses shown in the logs (`logging_nan_inf_filter=False`), no DDP unused-parameter search
    (`ddp_find_unused_parameters=False`: every GPT parameter gets a gradient) and `bf16` chosen from the hardware.

    Args:
        overwrite_output_dir (`bool`, defaults to `False`):
            Delete what `--output_dir` holds and start over (see [`OutputDirArguments`]).
        bf16 (`bool`, *optional*):
            Train in bf16 mixed precision. Defaults to `True` on a GPU that supports it, `False` elsewhere (CPU bf16
            autocast is slow on most CPUs).
        resume_from_checkpoint (`str`, *optional*):
            A `checkpoint-N` directory, or `"latest"` for the newest complete checkpoint in `output_dir` (a fresh
            start when there is none, so the same command starts and resumes a preemptible job).
        packing (`str`, defaults to `"blocks"`):
            `"blocks"`: documents are concatenated (eos between them) and cut into `--block_size` blocks, the classic
            GPT recipe. `"padding_free"`: each batch is whole documents (cut at `--max_seq_length`) flattened into
            one row, with `position_ids` restarting per document so attention never crosses a document boundary.
        trust_remote_code (`bool`, defaults to `False`):
            Allow custom code shipped with a Hub checkpoint (a training flag in every stage, as in TRL's configs).
            Never needed for hf_llm checkpoints when `hf_llm` is installed.
    """

    learning_rate: float = field(default=6e-4, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule after warmup."})
    warmup_steps: float = field(
        default=0.05, metadata={"help": "Warmup steps (int) or fraction of all steps (float in [0, 1))."}
    )
    report_to: None | str | list[str] = field(
        default="tensorboard", metadata={"help": "Integrations to log to ('none' to disable)."}
    )
    logging_nan_inf_filter: bool = field(
        default=False, metadata={"help": "Hide NaN/Inf losses in the logs (the NaN guard stops the run anyway)."}
    )
    # Typed `str` (upstream: `str | bool`, which argparse reads as a bool and so refuses "non_padding").
    include_num_input_tokens_seen: str = field(
        default="non_padding", metadata={"help": "Count tokens for tokens/s: 'all', 'non_padding' or 'no'."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; default: on where the GPU supports it."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint-N directory, or 'latest' (newest complete one in output_dir)."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP: search for unused parameters every step (GPT has none)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom code from the Hub."})
    packing: str = field(
        default="blocks",
        metadata={
            "help": "'blocks': fixed --block_size blocks across documents; 'padding_free': whole documents (cut at "
            "--max_seq_length) flattened per batch with per-document position_ids."
        },
    )

    def __post_init__(self):
        if self.packing not in PACKING_MODES:
            raise UsageError(f"--packing {self.packing!r} is unknown; choose one of {list(PACKING_MODES)}.")
        if self.push_to_hub and not self.hub_model_id:
            # Checked now, not after hours of training: the final push names the repo explicitly.
            raise UsageError("--push_to_hub needs --hub_model_id, e.g. --hub_model_id your-name/gpt-pydocs.")
        if self.bf16 is None:
            self.bf16 = bf16_available() and not self.fp16 and not self.use_cpu
        super().__post_init__()
