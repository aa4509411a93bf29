"""The dpo stage's configuration and trainer: TRL's `DPOConfig` and `DPOTrainer` with hf_llm's output-directory rules,
the held-out win rate and atomic checkpoints. `train_scripts/dpo.py` parses and runs them."""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from .checkpointing import AtomicCheckpointMixin
from .output_dir import FineTuningOutputArguments


@dataclass
class DPOConfig(FineTuningOutputArguments, trl.DPOConfig):
    """
    TRL's `DPOConfig` (every flag works unchanged), [`FineTuningOutputArguments`] (`--overwrite_output_dir`,
    `--merge_adapter`), and the held-out win rate:

    Args:
        max_length (`int`, *optional*):
            Most tokens in `prompt + answer`; defaults to the model's context (TRL's 1024 would exceed it).
        reward_model_path (`str`, *optional*):
            A `reward.py` output that scores greedy answers to held-out prompts before and after training (mean
            reward, win rate over the SFT model). Without it no win rate is reported.
        win_rate_samples (`int`, defaults to 64):
            Held-out prompts (from the validation split) the win rate is measured on; 0 turns it off.
        win_rate_max_new_tokens (`int`, defaults to 64):
            Most tokens per greedy answer in that measurement.
    """

    max_length: int | None = field(
        default=None, metadata={"help": "Most tokens in prompt + answer; default: the model's context."}
    )
    reward_model_path: str | None = field(
        default=None, metadata={"help": "reward.py output that scores held-out answers (win rate vs. SFT)."}
    )
    win_rate_samples: int = field(default=64, metadata={"help": "Held-out prompts for the win rate (0: off)."})
    win_rate_max_new_tokens: int = field(default=64, metadata={"help": "Most tokens per greedy held-out answer."})


class AtomicDPOTrainer(AtomicCheckpointMixin, trl.DPOTrainer):
    """TRL's `DPOTrainer` with atomic checkpoints."""
