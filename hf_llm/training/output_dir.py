"""The first step of every training script: make sure `--output_dir` can be written without losing anything.

transformers 5 dropped `--overwrite_output_dir` and writes into whatever directory it is given: a second run in the
same directory silently replaces a finished model, mixes its checkpoints with an earlier run's (and `latest` then
resumes the wrong one), or overwrites a user's `README.md`. [`check_output_dir`] runs before any work (no data loaded,
no tokenizer trained) and refuses all of that with one line naming what is there and the ways on:

```python
resume_checkpoint = check_output_dir(training_args)  # None: a fresh start
```

- an empty or missing directory: a fresh start;
- `--resume_from_checkpoint latest` (or a path): continue this run ([`resolve_resume_checkpoint`] checks the
  checkpoint belongs to it; a finished run exits 0 doing nothing);
- `--overwrite_output_dir`: delete what is there and start over.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.utils import logging

from hf_llm.command_output import list_entries, name_some
from hf_llm.errors import UsageError

from .checkpointing import (
    _CHECKPOINT_RE,
    STAGING_PREFIX,
    TRAINER_STATE_NAME,
    list_checkpoints,
    read_trainer_state,
    resolve_resume_checkpoint,
)

logger = logging.get_logger(__name__)

# What a run killed before its first checkpoint leaves behind: the tokenizer it trained (saved by
# `prepare_tokenizer` so other ranks can load it), TensorBoard logs, staging and half-written checkpoints.
_RUN_LEFTOVERS = {
    "runs",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
}


@dataclass
class OutputDirArguments:
    """
    Flags every stage's training arguments share; put it first in the bases of a `TrainingArguments` (or TRL config)
    subclass: `class PretrainConfig(OutputDirArguments, TrainingArguments)`.

    Args:
        overwrite_output_dir (`bool`, defaults to `False`):
            Delete what `--output_dir` holds (a finished run, checkpoints, other files) and start over. Without it a
            non-empty `--output_dir` is refused unless `--resume_from_checkpoint` continues the run in it.
    """

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Delete what --output_dir holds and start over (otherwise a non-empty one is refused)."},
    )

    def __post_init__(self):
        # Recipes set eval_on_start for their evaluation; `--eval_strategy no` on the command line turns evaluation
        # off, so the one at step 0 goes too (else Trainer stops: "evaluation requires an eval_dataset").
        eval_strategy = getattr(self, "eval_strategy", None)
        if getattr(self, "eval_on_start", False) and str(getattr(eval_strategy, "value", eval_strategy)) == "no":
            self.eval_on_start = False
        if self.overwrite_output_dir and getattr(self, "resume_from_checkpoint", None):
            raise UsageError(
                "--overwrite_output_dir deletes the run that --resume_from_checkpoint would continue; pass only one."
            )
        parent_post_init = getattr(super(), "__post_init__", None)
        if parent_post_init is not None:
            parent_post_init()


@dataclass
class FineTuningOutputArguments(OutputDirArguments):
    """
    [`OutputDirArguments`] plus the output flag every fine-tuning stage (classifier, sft, reward, ppo, dpo) shares.

    Args:
        overwrite_output_dir (`bool`, defaults to `False`):
            See [`OutputDirArguments`].
        merge_adapter (`bool`, defaults to `False`):
            After LoRA/QLoRA training, also write a standalone merged model (loads without PEFT) to
            `OUTPUT_DIR/merged`. [`~hf_llm.training.save_and_push`] merges last, on the main process; a run trained
            in full has nothing to merge and says so.
    """

    merge_adapter: bool = field(
        default=False, metadata={"help": "After LoRA training, also save a merged model in OUTPUT_DIR/merged."}
    )


def _is_run_leftover(name: str) -> bool:
    return name in _RUN_LEFTOVERS or name.startswith(STAGING_PREFIX) or _CHECKPOINT_RE.match(name) is not None


def _describe(output_dir: str, entries: list[str]) -> str:
    state = read_trainer_state(output_dir)
    if TRAINER_STATE_NAME in entries and state.get("global_step") is not None:
        return (
            f"a finished run (step {state['global_step']} of {state.get('max_steps', '?')}: "
            f"{name_some([n for n in entries if not _CHECKPOINT_RE.match(n)])})"
        )
    checkpoints = [os.path.basename(path) for path in list_checkpoints(output_dir)]
    if checkpoints:
        return f"checkpoints of an earlier run ({name_some(checkpoints)})"
    foreign = [name for name in entries if not _is_run_leftover(name)]
    if foreign:
        return f"files this run did not write ({name_some(foreign)})"
    return f"what an earlier run left before its first checkpoint ({name_some(entries)})"


def check_output_dir(training_args: TrainingArguments) -> str | None:
    """
    Refuse an `--output_dir` whose contents a run would overwrite or mix with its own, before any work; resolve
    `--resume_from_checkpoint`; with `--overwrite_output_dir`, empty the directory (main process of each node).

    Refused (one line naming what is there and the ways on: `--resume_from_checkpoint latest`,
    `--overwrite_output_dir`, another `--output_dir`): a path that is a file; a directory holding a finished run,
    checkpoints or any other file, unless `--resume_from_checkpoint` continues the run in it. Resuming with no
    checkpoint yet is a fresh start only when the directory holds nothing but what a run leaves before its first
    checkpoint (its tokenizer, TensorBoard logs); a user's `README.md` or `config.json` is still refused.

    Args:
        training_args (`TrainingArguments`): `output_dir`, `resume_from_checkpoint`, `overwrite_output_dir` (from
            [`OutputDirArguments`]; `False` when the arguments class lacks it), `max_steps`.

    Returns:
        `str | None`: The checkpoint to pass to `trainer.train(resume_from_checkpoint=...)`, or `None` for a fresh
        start.

    Raises:
        `UsageError`: If the output directory cannot be used as asked.
        [`RunAlreadyFinished`]: With `--resume_from_checkpoint latest` on a finished run (exit status 0).
    """
    output_dir = str(training_args.output_dir)
    resume = training_args.resume_from_checkpoint
    overwrite = getattr(training_args, "overwrite_output_dir", False)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"--output_dir {output_dir} is a file, not a directory; pass a new or empty directory.")
    entries = list_entries(output_dir)
    ways_on = (
        "pass --resume_from_checkpoint latest to continue it, --overwrite_output_dir to delete it and start over, "
        "or another --output_dir."
    )
    if overwrite:
        if entries and training_args.local_process_index == 0:
            logger.warning(f"--overwrite_output_dir: deleting {_describe(output_dir, entries)} in {output_dir}.")
            for name in entries:
                path = os.path.join(output_dir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        return None
    if not resume:
        if entries:
            what = _describe(output_dir, entries)
            if what.startswith("a finished run"):
                ways_on = "pass --overwrite_output_dir to delete it and train again, or another --output_dir."
            raise UsageError(f"--output_dir {output_dir} already holds {what}; {ways_on}")
        return None
    checkpoint = resolve_resume_checkpoint(resume, output_dir, training_args=training_args)
    inside = checkpoint is not None and os.path.abspath(os.path.dirname(checkpoint)) == os.path.abspath(output_dir)
    if not inside:
        # A fresh start, or a run continued from a checkpoint elsewhere: output_dir may only hold what a start of this
        # run killed before its first checkpoint left there.
        unexpected = [os.path.basename(path) for path in list_checkpoints(output_dir)]
        unexpected += [name for name in entries if not _is_run_leftover(name)]
        if unexpected:
            raise UsageError(
                f"--output_dir {output_dir} holds no checkpoint of the run being resumed but "
                f"{_describe(output_dir, entries)}; pass --overwrite_output_dir to delete them and start over, or "
                "another --output_dir."
            )
    return checkpoint
