"""The first step of every fine-tuning stage, before any data or model is loaded: refuse what would fail later.

```python
resume_checkpoint = start_stage("dpo", model_args, data_args, training_args, {"--reward_model_path": reward_path})
```
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from transformers import set_seed

from hf_llm.errors import UsageError
from hf_llm.loading import check_attn_implementation, check_model_source

from .output_dir import check_output_dir

if TYPE_CHECKING:
    from transformers import TrainingArguments
    from trl import ModelConfig

    from hf_llm.data import DataArguments


def check_stage_inputs(
    model_args: ModelConfig, training_args: TrainingArguments, other_models: dict[str, str | None] | None = None
) -> str | None:
    """
    Check a stage's inputs in seconds, before minutes of loading: `--output_dir` (an earlier run, a user's files; see
    `check_output_dir`), the attention kernel, and every model the flags name (a local directory must be a complete
    safetensors checkpoint). TRL's `ModelConfig` checks none of this when parsed.

    Args:
        model_args (`trl.ModelConfig`): `model_name_or_path` and `attn_implementation`.
        training_args (`TrainingArguments`): The stage's config (`output_dir`, `resume_from_checkpoint`, ...).
        other_models (`dict[str, str | None]`, *optional*): More models by flag, e.g.
            `{"--reward_model_path": training_args.reward_model_path}`; `None` values are skipped.

    Returns:
        `str | None`: The checkpoint to resume from, or `None` for a fresh start.
    """
    resume_checkpoint = check_output_dir(training_args)
    check_attn_implementation(model_args.attn_implementation)
    if model_args.model_name_or_path is not None:
        check_model_source(model_args.model_name_or_path)
    for flag, path in (other_models or {}).items():
        if path:
            check_model_source(path, flag)
    return resume_checkpoint


def start_stage(
    stage: str,
    model_args: ModelConfig,
    data_args: DataArguments,
    training_args: TrainingArguments,
    other_models: dict[str, str | None] | None = None,
) -> str | None:
    """
    The first lines of every fine-tuning stage script: refuse a missing `--dataset_name`, seed everything
    (`--seed`), let hf_llm's loggers follow `--log_level` / `--log_level_replica` as transformers' do (info on the
    main process only), then [`check_stage_inputs`].

    Args:
        stage (`str`): The stage's name (`"classifier"`, `"sft"`, `"reward"`, `"ppo"`, `"dpo"`), for the message.
        model_args (`trl.ModelConfig`): `model_name_or_path` and `attn_implementation`.
        data_args (`hf_llm.data.DataArguments`): `dataset_name`.
        training_args (`TrainingArguments`): The stage's config.
        other_models (`dict[str, str | None]`, *optional*): More models by flag (see [`check_stage_inputs`]).

    Returns:
        `str | None`: The checkpoint to resume from, or `None` for a fresh start.
    """
    if data_args.dataset_name is None:
        raise UsageError(
            f"no data for the {stage} stage: pass --dataset_name (a Hub id, a local file or folder, or 'pydocs')."
        )
    set_seed(training_args.seed)
    logging.getLogger("hf_llm").setLevel(training_args.get_process_log_level())
    return check_stage_inputs(model_args, training_args, other_models)
