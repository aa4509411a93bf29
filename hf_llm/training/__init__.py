"""Pieces every training script shares: argument dataclasses, callbacks, atomic checkpoints, recipes, presets."""

from ..parser import RecipeParser
from .arguments import (
    ModelArguments,
    PretrainConfig,
    attn_implementation_errors,
    bf16_available,
    build_gpt_config,
    padded_vocab_size,
)
from .callbacks import (
    GPU_PEAK_BF16_FLOPS,
    NonFiniteError,
    NonFiniteGuardCallback,
    PerplexityCallback,
    ThroughputCallback,
    add_callbacks,
    flops_per_token,
    get_peak_bf16_flops,
    perplexity_from_loss,
)
from .checkpointing import (
    AtomicCheckpointMixin,
    AtomicCheckpointTrainer,
    RunAlreadyFinished,
    check_checkpoint_matches_model,
    find_latest_checkpoint,
    is_complete_checkpoint,
    list_checkpoints,
    resolve_resume_checkpoint,
)
from .finalize import final_eval_metrics, prepare_tokenizer, save_and_push, train_with_callbacks
from .output_dir import FineTuningOutputArguments, OutputDirArguments, check_output_dir
from .presets import MODEL_PRESETS
from .recipes import RECIPE_NAME, recipe_dict, save_recipe

__all__ = [
    "GPU_PEAK_BF16_FLOPS",
    "MODEL_PRESETS",
    "RECIPE_NAME",
    "AtomicCheckpointMixin",
    "AtomicCheckpointTrainer",
    "ModelArguments",
    "NonFiniteError",
    "NonFiniteGuardCallback",
    "FineTuningOutputArguments",
    "OutputDirArguments",
    "PerplexityCallback",
    "PretrainConfig",
    "RecipeParser",
    "RunAlreadyFinished",
    "ThroughputCallback",
    "add_callbacks",
    "attn_implementation_errors",
    "bf16_available",
    "check_checkpoint_matches_model",
    "check_output_dir",
    "build_gpt_config",
    "find_latest_checkpoint",
    "final_eval_metrics",
    "flops_per_token",
    "get_peak_bf16_flops",
    "is_complete_checkpoint",
    "list_checkpoints",
    "padded_vocab_size",
    "perplexity_from_loss",
    "prepare_tokenizer",
    "recipe_dict",
    "resolve_resume_checkpoint",
    "save_and_push",
    "train_with_callbacks",
    "save_recipe",
]
