"""The ppo stage's configuration and trainer, and hf_llm's one import of TRL's PPO.

`PPOTrainer` left TRL's main API in 1.10 and was deleted in 1.13 (huggingface/trl#7020): it lives in
`trl.experimental.ppo` of the pinned TRL 1.12, imported here and nowhere else (docs/design.md says why and what the pin
costs). `train_scripts/ppo.py` parses and runs them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # importing trl.experimental warns otherwise
from trl.experimental import ppo as trl_ppo  # noqa: E402

from hf_llm.errors import UsageError

from .checkpointing import AtomicCheckpointMixin
from .output_dir import FineTuningOutputArguments

VALUE_MODEL_DIR_NAME = "value_model"


@dataclass
class PPOConfig(FineTuningOutputArguments, trl_ppo.PPOConfig):
    """
    TRL's `PPOConfig` (every flag works unchanged), [`FineTuningOutputArguments`] (`--overwrite_output_dir`,
    `--merge_adapter`), and:

    Args:
        reward_model_path (`str`):
            The reward model (a `reward.py` output: full, merged or LoRA adapter). Required.
        value_model_path (`str`, *optional*):
            Where the value model starts; defaults to `reward_model_path` (a trainable copy of the reward model).
        stop_token (`str`, defaults to `"eos"`):
            Responses end at the tokenizer's eos (TRL's default, `None`, scores everything up to `response_length`).
        prompt_format (`str`, defaults to `"instruction"`):
            Data format the prompts are read from: `"instruction"` (`instruction`/`input` or `messages`) or
            `"preference"` (the `prompt` column of preference pairs).
        kl_alarm (`float`, *optional*):
            Warn when `objective/kl` goes above it.
        reward_collapse_drop (`float`, *optional*, defaults to 1.0):
            Warn when the mean reward, averaged over the last 8 updates, falls this far below its best such average.
        win_rate_samples (`int`, defaults to 64):
            Held-out prompts (validation split) the win rate over the SFT model is measured on; 0 turns it off.
        win_rate_max_new_tokens (`int`, *optional*):
            Most tokens per greedy answer in that measurement; defaults to `response_length`.
        trust_remote_code (`bool`, defaults to `False`):
            Allow custom code from the Hub when loading the models (as the other stages' TRL configs do).
    """

    reward_model_path: str | None = field(default=None, metadata={"help": "The reward model (reward.py output)."})
    value_model_path: str | None = field(
        default=None, metadata={"help": "Where the value model starts; default: --reward_model_path."}
    )
    stop_token: str | None = field(default="eos", metadata={"help": "Responses end at eos ('eos') or never (None)."})
    prompt_format: str = field(
        default="instruction", metadata={"help": "Where prompts come from: 'instruction' or 'preference' data."}
    )
    kl_alarm: float | None = field(default=None, metadata={"help": "Warn when objective/kl goes above it."})
    reward_collapse_drop: float | None = field(
        default=1.0,
        metadata={"help": "Warn when the mean reward (averaged over 8 updates) falls this far below its best."},
    )
    win_rate_samples: int = field(default=64, metadata={"help": "Held-out prompts for the win rate (0: off)."})
    win_rate_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Most tokens per greedy held-out answer; default: --response_length."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom code from the Hub."})

    def __post_init__(self):
        if self.prompt_format not in ("instruction", "preference"):
            raise UsageError(f"--prompt_format must be 'instruction' or 'preference', got {self.prompt_format!r}")
        super().__post_init__()


class AtomicPPOTrainer(AtomicCheckpointMixin, trl_ppo.PPOTrainer):
    """TRL's `PPOTrainer` with atomic checkpoints (policy, optimizer and trainer state in `checkpoint-N`)."""
