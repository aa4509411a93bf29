"""Where the commands that write outside training put their output: `hf-llm merge`, `export`, `eval`, `rank --export`.

The training scripts' own rule, with resumable runs, is `hf_llm.training.output_dir`; this simpler one sits under every
layer (evaluation cannot import training): an output directory must be new, empty, the command's own earlier report,
or replaced with `--overwrite_output_dir`, and never the input or inside it.
"""

from __future__ import annotations

import logging
import os
import shutil

from hf_llm.errors import UsageError

logger = logging.getLogger(__name__)


def list_entries(output_dir: str) -> list[str]:
    """The names in `output_dir` a run could overwrite (hidden files excluded); `[]` when it does not exist."""
    # Hidden files (.gitkeep, .DS_Store) are never written by a run, so they cannot be overwritten: ignore them.
    if not os.path.isdir(output_dir):
        return []
    return sorted(name for name in os.listdir(output_dir) if not name.startswith("."))


def name_some(names: list[str], limit: int = 5) -> str:
    """The first `limit` names, comma-separated, and how many more."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_command_output_dir(
    output_dir: str,
    *,
    inputs: dict[str, str],
    overwrite_output_dir: bool = False,
    example_suffix: str = "-out",
    flag: str = "--output_dir",
    own_outputs: frozenset[str] = frozenset(),
) -> None:
    """
    The output-directory rule of the commands that write outside training (`hf-llm merge`, `export`, `eval`,
    `rank --export`): refuse a directory that holds anything unless `--overwrite_output_dir` (then its contents are
    deleted), and one equal to or inside an input directory whatever the flag says. A directory holding only the
    command's own earlier output (`own_outputs`: an earlier evaluation's report) is that output to replace: those
    files are deleted, so nothing of the earlier run is left beside the new one. Runs before anything is loaded.

    Args:
        output_dir (`str`): The output directory given.
        inputs (`dict[str, str]`): Each input's flag (or argument name) and path; Hub repo ids are skipped.
        overwrite_output_dir (`bool`, defaults to `False`): Whether `--overwrite_output_dir` was given.
        example_suffix (`str`, defaults to `"-out"`): Appended to the input's path in the suggested fix.
        flag (`str`, defaults to `"--output_dir"`): The flag that named `output_dir`, for the messages.
        own_outputs (`frozenset[str]`, *optional*): File names the command writes, replaced without the flag.

    Raises:
        `UsageError`: Naming the directory and the fix.
    """
    target = os.path.realpath(os.path.expanduser(output_dir))
    for name, path in inputs.items():
        if not os.path.exists(os.path.expanduser(path)):
            continue  # a Hub repo id
        source = os.path.realpath(os.path.expanduser(path))
        if target == source or target.startswith(source + os.sep):
            where = "is" if target == source else "is inside"
            raise UsageError(
                f"{flag} {output_dir} {where} the input {name} {path}; write into a directory of its own, e.g. "
                f"{flag} {path.rstrip('/')}{example_suffix}."
            )
    if os.path.isfile(target):
        raise UsageError(f"{flag} {output_dir} is a file; pass a directory.")
    entries = list_entries(target) if os.path.isdir(target) else []
    if entries and not overwrite_output_dir and set(entries) <= own_outputs:
        logger.warning(
            f"{flag} {output_dir} holds only this command's earlier output ({name_some(entries)}): replacing it."
        )
        for name in entries:
            os.remove(os.path.join(target, name))
        return
    if entries and not overwrite_output_dir:
        raise UsageError(
            f"{flag} {output_dir} already holds {name_some(entries)}; pass a new or empty directory, or "
            "--overwrite_output_dir to delete its contents first."
        )
    if entries:
        shutil.rmtree(target)
