"""Atomic Trainer checkpoints and resume resolution.

`transformers.Trainer` writes `checkpoint-N/` in place: a job killed during a save leaves a directory that looks like
a checkpoint but lacks files, and `get_last_checkpoint` would pick it on resume. Here a checkpoint is written into a
staging directory (`_tmp-checkpoint-N/checkpoint-N`) and renamed to `checkpoint-N` once every process has finished
writing, so any `checkpoint-N` directory is complete. The leading underscore keeps staging directories out of Hub
uploads (Trainer ignores `_*`) and out of Trainer's `checkpoint-*` rotation.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import logging

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


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str | os.PathLike) -> str | None:
    """
    Turn the `--resume_from_checkpoint` flag into a checkpoint path for `Trainer.train`.

    Args:
        resume_from_checkpoint (`str`, *optional*):
            `None` or `""` to start fresh; `"latest"` for the newest complete checkpoint in `output_dir` (a fresh
            start, logged, when there is none, so the same command both starts and resumes a preemptible job); or the
            path of a checkpoint directory.
        output_dir (`str` or `os.PathLike`): The run's output directory (searched for `"latest"`).

    Returns:
        `str | None`: The checkpoint directory to resume from, or `None` to start from scratch.

    Raises:
        `FileNotFoundError`: If an explicit path does not exist or is not a complete checkpoint.
    """
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        latest = find_latest_checkpoint(output_dir)
        if latest is None:
            logger.warning(f"--resume_from_checkpoint latest: no complete checkpoint in {output_dir}; starting fresh.")
        else:
            logger.info(f"Resuming from the latest complete checkpoint: {latest}")
        return latest
    if not os.path.isdir(resume_from_checkpoint):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume_from_checkpoint}: no such directory. Pass a checkpoint-N directory "
            f"or 'latest' to pick the newest complete checkpoint in --output_dir."
        )
    if not is_complete_checkpoint(resume_from_checkpoint):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume_from_checkpoint} is not a complete checkpoint (no "
            f"{TRAINER_STATE_NAME}); it was probably interrupted while saving. Pass 'latest' to pick the newest "
            "complete one."
        )
    return str(resume_from_checkpoint)


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
