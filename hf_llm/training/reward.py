"""The reward stage's configuration and trainer: TRL's `RewardConfig` and `RewardTrainer` with hf_llm's
output-directory rules and atomic checkpoints. `train_scripts/reward.py` parses and runs them."""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from .checkpointing import AtomicCheckpointMixin
from .output_dir import OutputDirArguments


@dataclass
class RewardConfig(OutputDirArguments, trl.RewardConfig):
    """
    TRL's `RewardConfig` (every flag works unchanged) plus:

    Args:
        overwrite_output_dir (`bool`, defaults to `False`):
            Delete what `--output_dir` holds and start over (see [`OutputDirArguments`]).
        max_length (`int`, *optional*):
            Most tokens in `prompt + answer`; defaults to the model's context (TRL's 1024 would exceed it).
        merge_adapter (`bool`, defaults to `False`):
            After LoRA training, also write a standalone merged reward model to `OUTPUT_DIR/merged`.
    """

    max_length: int | None = field(
        default=None, metadata={"help": "Most tokens in prompt + answer; default: the model's context."}
    )
    merge_adapter: bool = field(
        default=False, metadata={"help": "After LoRA training, also save a merged model in OUTPUT_DIR/merged."}
    )


class AtomicRewardTrainer(AtomicCheckpointMixin, trl.RewardTrainer):
    """TRL's `RewardTrainer` with atomic checkpoints."""
