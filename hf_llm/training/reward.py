"""The reward stage's configuration and trainer: TRL's `RewardConfig` and `RewardTrainer` with hf_llm's
output-directory rules and atomic checkpoints. `train_scripts/reward.py` parses and runs them."""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from .checkpointing import AtomicCheckpointMixin
from .output_dir import FineTuningOutputArguments


@dataclass
class RewardConfig(FineTuningOutputArguments, trl.RewardConfig):
    """
    TRL's `RewardConfig` (every flag works unchanged), [`FineTuningOutputArguments`] (`--overwrite_output_dir`,
    `--merge_adapter`), and a default length from the model:

    Args:
        max_length (`int`, *optional*):
            Most tokens in `prompt + answer`; defaults to the model's context (TRL's 1024 would exceed it).
    """

    max_length: int | None = field(
        default=None, metadata={"help": "Most tokens in prompt + answer; default: the model's context."}
    )


class AtomicRewardTrainer(AtomicCheckpointMixin, trl.RewardTrainer):
    """TRL's `RewardTrainer` with atomic checkpoints."""
