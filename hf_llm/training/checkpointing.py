"""Atomic Trainer checkpoints and resume resolution.

`transformers.Trainer` writes `checkpoint-N/` in place: a job killed during a save leaves a directory that looks like
a checkpoint but lacks files, and `get_last_checkpoint` would pick it on resume. Here a checkpoint is written into a
staging directory (`_tmp-checkpoint-N/checkpoint-N`) and renamed to `checkpoint-N` once every process has finished
writing, so any `checkpoint-N` directory is complete. The leading underscore keeps staging directories out of Hub
uploads (Trainer ignores `_*`) and out of Trainer's `checkpoint-*` rotation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

from transformers import PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import logging

from hf_llm.errors import UsageError

from .distributed import check_sharding

logger = logging.get_logger(__name__)

STAGING_PREFIX = "_tmp-"
TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """
    Whether `path` is a finished Trainer checkpoint.

    A checkpoint is complete when it holds `trainer_state.json`, the file Trainer writes last. With
    [`AtomicCheckpointMixin`] every `checkpoint-N` directory is complete; the check also rejects half-written
    checkpoints left by a plain `Trainer` killed mid-save.

    Args:
        path (`str` or `os.PathLike`): A `checkpoint-N` directory.

    Returns:
        `bool`: `True` if the checkpoint can be resumed from.
    """
    return os.path.isfile(os.path.join(path, TRAINER_STATE_NAME))


def list_checkpoints(output_dir: str | os.PathLike) -> list[str]:
    """
    Complete checkpoints in `output_dir`, oldest step first.

    Args:
        output_dir (`str` or `os.PathLike`): A Trainer output directory.

    Returns:
        `list[str]`: Paths of the complete `checkpoint-N` directories, sorted by step.
    """
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isdir(path):
            if is_complete_checkpoint(path):
                found.append((int(match.group(1)), path))
            else:
                logger.warning(f"Skipping incomplete checkpoint {path} (no {TRAINER_STATE_NAME}).")
    return [path for _, path in sorted(found)]


def find_latest_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """
    The newest complete checkpoint in `output_dir`, or `None` if there is none.

    Staging directories (`_tmp-checkpoint-N`, left by a run killed during a save) and incomplete checkpoints are
    never returned.

    Args:
        output_dir (`str` or `os.PathLike`): A Trainer output directory.

    Returns:
        `str | None`: Path of the newest complete `checkpoint-N` directory.
    """
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


class RunAlreadyFinished(SystemExit):
    """
    Raised by [`resolve_resume_checkpoint`] when `--resume_from_checkpoint latest` finds the run already finished.

    A `SystemExit` with status 0: re-running a preemptible job's command after it finished does nothing and succeeds
    (the reason is logged as a warning first), so a scheduler that retries the command never trains past
    `max_steps` or replaces the final model.
    """

    def __init__(self, message: str):
        super().__init__(0)
        self.message = message

    def __str__(self) -> str:
        return self.message


def read_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """The `trainer_state.json` of a checkpoint or a finished run's directory; `{}` when missing or unreadable."""
    try:
        with open(os.path.join(path, TRAINER_STATE_NAME), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _run_length(training_args: TrainingArguments) -> tuple[str, Any]:
    # The flag that fixes the length of a run (and so its learning-rate schedule), and its value.
    if training_args.max_steps > 0:
        return "max_steps", training_args.max_steps
    return "num_train_epochs", training_args.num_train_epochs


def _check_same_run(checkpoint: str, state: dict[str, Any], training_args: TrainingArguments) -> None:
    # A checkpoint saved with another run length resumes with the wrong schedule (e.g. "step 13 of 8"): refuse it.
    flag, wanted = _run_length(training_args)
    saved = state.get(flag)
    if saved is not None and (float(saved) != float(wanted)):
        raise UsageError(
            f"--resume_from_checkpoint: {checkpoint} was saved by a run with --{flag} {saved}, this command has "
            f"--{flag} {wanted}; the learning-rate schedule and data order depend on it. Resume with --{flag} "
            f"{saved}, or start a new run from its weights: --model_name_or_path {checkpoint} --output_dir <new dir>."
        )


def resolve_resume_checkpoint(
    resume_from_checkpoint: str | None,
    output_dir: str | os.PathLike,
    *,
    training_args: TrainingArguments | None = None,
) -> str | None:
    """
    Turn the `--resume_from_checkpoint` flag into a checkpoint path for `Trainer.train`.

    Given `training_args`, the checkpoint must belong to this run (same `--max_steps`, or `--num_train_epochs` when no
    `max_steps` is set), a finished run is not trained again, and the checkpoint and step resumed from are logged as
    a warning, so they show at the default log level.

    Args:
        resume_from_checkpoint (`str`, *optional*):
            `None` or `""` to start fresh; `"latest"` for the newest complete checkpoint in `output_dir` (a fresh
            start, logged, when there is none, so the same command both starts and resumes a preemptible job); or the
            path of a checkpoint directory.
        output_dir (`str` or `os.PathLike`): The run's output directory (searched for `"latest"`).
        training_args (`TrainingArguments`, *optional*): The run's arguments, for the checks above.

    Returns:
        `str | None`: The checkpoint directory to resume from, or `None` to start from scratch.

    Raises:
        `FileNotFoundError`: If an explicit path does not exist or is not a complete checkpoint.
        `ValueError`: If the checkpoint (or the finished run in `output_dir`) was saved with another run length, or
            the checkpoint is already the last step of a run whose final save is missing.
        [`RunAlreadyFinished`]: With `"latest"`, when `output_dir` holds this run finished (exit status 0).
    """
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        if training_args is not None:
            _check_not_finished(output_dir, training_args)
        checkpoint = find_latest_checkpoint(output_dir)
        remove_stale_staging(output_dir)
        if checkpoint is None:
            logger.warning(f"--resume_from_checkpoint latest: no complete checkpoint in {output_dir}; starting fresh.")
            return None
    elif not os.path.isdir(resume_from_checkpoint):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume_from_checkpoint}: no such directory. Pass a checkpoint-N directory "
            f"or 'latest' to pick the newest complete checkpoint in --output_dir."
        )
    elif not is_complete_checkpoint(resume_from_checkpoint):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume_from_checkpoint} is not a complete checkpoint (no "
            f"{TRAINER_STATE_NAME}); it was probably interrupted while saving. Pass 'latest' to pick the newest "
            "complete one."
        )
    else:
        checkpoint = str(resume_from_checkpoint)
    if training_args is None:
        logger.info(f"Resuming from checkpoint {checkpoint}")
        return checkpoint
    state = read_trainer_state(checkpoint)
    _check_same_run(checkpoint, state, training_args)
    step, max_steps = state.get("global_step", 0), state.get("max_steps", 0)
    if max_steps and step >= max_steps:
        # Trainer would run one more step past max_steps from here (docs/upstream-facts.md): refuse instead.
        raise UsageError(
            f"--resume_from_checkpoint: {checkpoint} is already the last step ({step} of max_steps {max_steps}), but "
            f"the run's final save in {output_dir} did not finish; nothing is left to train. Its weights are the "
            f"trained model: load {checkpoint} with from_pretrained, or continue from them in a new run with "
            f"--model_name_or_path {checkpoint} --output_dir <new dir>."
        )
    logger.warning(f"Resuming from {checkpoint} at step {step} of {max_steps or '?'}.")
    return checkpoint


def remove_stale_staging(output_dir: str | os.PathLike) -> None:
    """
    Delete the `_tmp-checkpoint-N` directories a run killed while saving left in `output_dir`: once a resume has
    picked the newest complete checkpoint they hold nothing anyone will read (the resumed run saves step N anew).
    Only the main process deletes (`RANK` unset or 0), so ranks never race over the same directory.
    """
    if int(os.environ.get("RANK", "0")) != 0 or not os.path.isdir(output_dir):
        return
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if name.startswith(f"{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            logger.info(f"Removed {path}, a checkpoint whose save was interrupted.")


def _check_not_finished(output_dir: str | os.PathLike, training_args: TrainingArguments) -> None:
    # `save_and_push` writes trainer_state.json next to the final model: its presence marks a finished run.
    state = read_trainer_state(output_dir)
    step, max_steps = state.get("global_step"), state.get("max_steps")
    if step is None or not max_steps or step < max_steps:
        return
    _check_same_run(str(output_dir), state, training_args)
    message = (
        f"{output_dir} already holds this run, finished at step {step} of {max_steps}: nothing to do. To train it "
        "again pass --overwrite_output_dir (deletes it), or another --output_dir."
    )
    logger.warning(message)
    raise RunAlreadyFinished(message)


def check_checkpoint_matches_model(checkpoint: str | None, model: PreTrainedModel) -> None:
    """
    Refuse to resume `model` from a checkpoint of another shape, naming the difference (instead of pages of
    size-mismatch errors from `load_state_dict` deep inside `Trainer.train`).

    Compares the checkpoint's `config.json` with `model.config` on the fields that fix parameter shapes. A checkpoint
    without `config.json` (a PEFT adapter) is not checked.

    Args:
        checkpoint (`str`, *optional*): The checkpoint to resume from ([`resolve_resume_checkpoint`]); `None` does
            nothing.
        model (`PreTrainedModel`): The model the run built, before `Trainer.train`.

    Raises:
        `ValueError`: If a shape field differs.
    """
    if checkpoint is None:
        return
    try:
        with open(os.path.join(checkpoint, "config.json"), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return
    config = model.config.to_dict()
    differences = [
        f"{key} {saved[key]} there, {config[key]} here"
        for key in _SHAPE_FIELDS
        if key in saved and key in config and saved[key] != config[key]
    ]
    if differences:
        raise UsageError(
            f"--resume_from_checkpoint: {checkpoint} holds a model of another shape ({'; '.join(differences)}); "
            "resume with the flags of the run that saved it (its recipe.yaml), or start fresh in another --output_dir."
        )


# Config fields that fix the shapes of the parameters a checkpoint holds.
_SHAPE_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
    "position_embedding_type",
    "tie_word_embeddings",
)


class AtomicCheckpointMixin:
    """
    Makes a `Trainer` (or any TRL trainer built on it) write checkpoints atomically.

    Put it first in the bases: `class MyTrainer(AtomicCheckpointMixin, SFTTrainer)`. The whole of the parent's
    `_save_checkpoint` (model, optimizer, scheduler, RNG states, trainer state, callbacks' state, TRL model cards)
    runs unchanged but writes into `<output_dir>/_tmp-checkpoint-N/checkpoint-N`; after all processes are done the
    main process renames it to `<output_dir>/checkpoint-N` with `os.replace`, which is atomic on POSIX filesystems.
    A job killed at any moment therefore leaves either no `checkpoint-N` or a complete one.

    Three methods are overridden, all for this one purpose: `_save_checkpoint` (stage, then rename and rotate),
    `_get_output_dir` (points the parent at the staging directory while it saves) and `_push_from_checkpoint`
    (defers checkpoint uploads until the rename so they never read a moving directory).

    Being the one base every stage's trainer has, it also makes sure a run that asks for FSDP or DeepSpeed really is
    sharded: `_prepare_for_training` calls [`~hf_llm.training.distributed.check_sharding`] before and after the model
    is wrapped, so a silent fallback to DDP (or to independent ranks) stops before the first step with one line.
    """

    _staging_run_dir: str | None = None
    _deferred_push: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        if self._staging_run_dir is not None:
            return self._staging_run_dir
        return super()._get_output_dir(trial)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self._staging_run_dir is not None:
            self._deferred_push = checkpoint_folder
            return
        super()._push_from_checkpoint(checkpoint_folder)

    def _prepare_for_training(self, max_steps: int, train_dataloader: Any, resume_from_checkpoint: str | None):
        check_sharding(self.accelerator)  # the mode, before DeepSpeed's set-up can fail on a miscounted world size
        model, train_dataloader = super()._prepare_for_training(max_steps, train_dataloader, resume_from_checkpoint)
        check_sharding(self.accelerator, model)  # the wrapper the model really got
        return model, train_dataloader

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_run_dir = os.path.join(run_dir, f"{STAGING_PREFIX}{name}")
        staged = os.path.join(staging_run_dir, name)
        final = os.path.join(run_dir, name)

        if self.args.should_save and os.path.exists(staging_run_dir):
            shutil.rmtree(staging_run_dir)  # left by a run killed while saving this step
        self.accelerator.wait_for_everyone()

        self._staging_run_dir = staging_run_dir
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_run_dir = None
        self.accelerator.wait_for_everyone()  # every rank has written its shards and RNG state

        if self.args.should_save:
            self._fix_best_model_checkpoint(staged, final)
            if os.path.exists(final):
                # Saving the same step twice (e.g. a re-run): swap the old one out, never leave a gap.
                old = os.path.join(run_dir, f"{STAGING_PREFIX}old-{name}")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(staged, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staged, final)
            _fsync_dir(run_dir)
            shutil.rmtree(staging_run_dir, ignore_errors=True)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()

        if self._deferred_push is not None:
            self._deferred_push = None
            super()._push_from_checkpoint(final)

    def _fix_best_model_checkpoint(self, staged: str, final: str) -> None:
        # When this step is the best so far the parent recorded the staging path; point it at the final one, in
        # memory and in the staged trainer_state.json (an older best already points at its final directory).
        if self.state.best_model_checkpoint == staged:
            self.state.best_model_checkpoint = final
            self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))


def _fsync_dir(path: str) -> None:
    # Make the rename durable across a power loss, not only a process kill (best effort: not every OS allows it).
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointTrainer(AtomicCheckpointMixin, Trainer):
    """`transformers.Trainer` with atomic checkpoint saves (see [`AtomicCheckpointMixin`]). Nothing else changes."""
