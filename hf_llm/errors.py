"""The one way an hf_llm entry point fails on a user's mistake: one line `<prog>: error: <message>`, exit code 2.

Every entry point (`train_scripts/*.py`, `eval/evaluate_model.py`, `hf-llm`) wraps its work in [`exit_on_user_error`]:

```python
if __name__ == "__main__":
    parser = TrlParser((ModelArguments, DataArguments, PretrainConfig))
    with exit_on_user_error("pretrain.py"):
        main(*parser.parse_args_and_config())
```

A user's mistake is one of hf_llm's own error types, whose message already names the file, column or flag and the fix:
[`UsageError`] (a flag or command), `hf_llm.data.DataError` (the data; a `UsageError`), [`LoadError`] (a checkpoint
that cannot be loaded, translated at the loading boundary), `hf_llm.training.NonFiniteError` (the run diverged); or a
boundary error that can only be the user's: a path they gave that does not exist or cannot be read
(`FileNotFoundError`, `IsADirectoryError`, `NotADirectoryError`, `PermissionError`) and invalid YAML in a recipe.
Anything else (a `ValueError` inside a library, a bug of ours) keeps its traceback; so does everything when
`HF_LLM_TRACEBACK=1` is set (for debugging a message that points at the wrong place).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import yaml

# argparse's exit code for a usage error; the pipeline reads it as "the user's input, not a bug".
USER_ERROR_EXIT_CODE = 2


class UsageError(ValueError):
    """A user's mistake: the message names the flag, file or column and the fix. Subclasses `ValueError`, so library
    callers can keep catching `ValueError`."""


class LoadError(OSError):
    """A checkpoint, tokenizer or Hub repo the user named cannot be loaded; the message names the path, the flag and
    the fix (raised by `hf_llm.loading`, which translates the libraries' many shapes of this error)."""


# OSErrors about a path the user gave: the message names the path, and nothing but the user can fix it.
_USER_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages from libraries are joined with `; `)."""
    if isinstance(error, yaml.YAMLError):
        return _yaml_message(error)
    if isinstance(error, OSError) and error.filename is not None and not error.args[1:]:
        message = str(error)
    elif isinstance(error, OSError) and error.strerror and error.filename is not None:
        message = f"{error.strerror}: {error.filename}"
    else:
        message = str(error) or type(error).__name__
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return "; ".join(lines)


def _yaml_message(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    name = getattr(mark, "name", None) or "the recipe"
    where = f"{name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else name
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"invalid YAML in {where}: {problem}; fix the file (YAML needs `key: value` lines, spaces not tabs)."


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is a user's mistake to print as one line (see the module docstring)."""
    if isinstance(error, (UsageError, LoadError, yaml.YAMLError, *_USER_PATH_ERRORS)):
        return True
    # hf_llm.training.NonFiniteError: the run diverged; the message says where and what to change.
    return type(error).__name__ == "NonFiniteError"


def report_user_error(prog: str, error: BaseException) -> None:
    """Print `<prog>: error: <one line>` to stderr."""
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def exit_on_user_error(prog: str | None = None) -> Iterator[None]:
    """
    Run the body; on a user's mistake print one line `<prog>: error: <message>` and exit with code 2.

    Args:
        prog (`str`, *optional*): The program name to print; defaults to the running script's file name.
    """
    try:
        yield
    except BaseException as error:  # noqa: B036 (re-raised unless it is a user's mistake)
        if isinstance(error, (SystemExit, KeyboardInterrupt)) or not is_user_error(error):
            raise
        if os.environ.get("HF_LLM_TRACEBACK") == "1":
            raise
        report_user_error(prog or os.path.basename(sys.argv[0]), error)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
