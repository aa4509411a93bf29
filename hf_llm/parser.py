"""`RecipeParser`: TRL's `TrlParser` (`--config recipe.yaml` + CLI overrides) whose recipe errors name the file.

`TrlParser` reports an unknown recipe key as `Unknown arguments from config file: ['--lerning_rate', '3e-4']. Please
remove them, add them to the dataclass, or set fail_with_unknown_args=False` (no file name, and advice meant for the
script's author) and a missing recipe as a bare `FileNotFoundError`. [`RecipeParser`] checks the recipe first and
raises `UsageError`s that name the file, the key and the closest flag; everything else is `TrlParser`'s.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable

import yaml
from trl import TrlParser

from hf_llm.errors import UsageError, one_line


class RecipeParser(TrlParser):
    """
    A `TrlParser` whose `--config` errors name the recipe file: a missing file, YAML that is not a mapping, and keys
    that are no flag of the script (with the closest flag). Invalid YAML keeps PyYAML's error, which
    `hf_llm.errors.exit_on_user_error` prints with the file, line and column.

    ```python
    parser = RecipeParser((ModelArguments, DataArguments, PretrainConfig))
    with exit_on_user_error("pretrain.py"):
        main(*parser.parse_args_and_config())
    ```
    """

    def parse_args_and_config(self, args: Iterable[str] | None = None, **kwargs):
        import sys

        from hf_llm.environment import warn_if_untested_versions

        warn_if_untested_versions()
        argv = list(args) if args is not None else sys.argv[1:]
        if "--config" in argv:
            index = argv.index("--config")
            if index + 1 >= len(argv):
                raise UsageError(
                    "--config needs a recipe file, e.g. --config train_scripts/configs/pretrain/tiny.yaml"
                )
            self.check_recipe(argv[index + 1])
        try:
            return super().parse_args_and_config(argv, **kwargs)
        except UsageError:
            raise
        except ValueError as error:
            # Raised while the argument dataclasses are built from the flags (TrainingArguments' and TRL's own checks
            # of flag combinations): the user's flags, so one line.
            raise UsageError(one_line(error)) from error

    def check_recipe(self, path: str) -> None:
        """
        Refuse a recipe that is missing, not a YAML mapping, or holds a key that is no flag of this parser.

        Args:
            path (`str`): The `--config` file.

        Raises:
            `UsageError`: Naming the file (and the key, with the closest flag).
            `yaml.YAMLError`: If the file is not valid YAML (its message carries the file, line and column).
        """
        if not os.path.isfile(path):
            raise UsageError(
                f"--config {path}: no such file; pass a recipe YAML, e.g. one under train_scripts/configs/."
            )
        with open(path, encoding="utf-8") as f:
            recipe = yaml.safe_load(f)
        if recipe is None:
            return
        if not isinstance(recipe, dict):
            raise UsageError(
                f"--config {path} must be a YAML mapping of `flag: value` lines, not a {type(recipe).__name__}."
            )
        flags = {action.dest for action in self._actions} | {"env"}
        unknown = [str(key) for key in recipe if key not in flags]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(flags), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise UsageError(
                f"--config {path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; every recipe key "
                "must be a flag of the script (see --help). Fix or remove it."
            )
