"""Save the resolved recipe of a run (YAML defaults + CLI overrides) next to its model."""

from __future__ import annotations

import dataclasses
import os
import sys
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import yaml
from transformers import TrainingArguments
from transformers.utils import logging

logger = logging.get_logger(__name__)

RECIPE_NAME = "recipe.yaml"


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _defaults(cls: type) -> dict[str, Any]:
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return values


def recipe_dict(*args: Any) -> dict[str, dict[str, Any]]:
    """
    The resolved settings of a run, grouped by dataclass: every field whose value differs from its default.

    `TrainingArguments` values are taken after `__post_init__` (so `bf16: null` resolved to the hardware's choice is
    recorded as `true`/`false`). Fields named `*_token` are never written.

    Args:
        *args: Parsed argument dataclasses (`ModelArguments`, `DataArguments`, a `TrainingArguments` subclass, ...).

    Returns:
        `dict[str, dict[str, Any]]`: `{dataclass name: {field: value}}`, plain YAML-safe values.
    """
    groups: dict[str, dict[str, Any]] = {}
    for arg in args:
        if isinstance(arg, TrainingArguments):
            values = arg.to_dict()
        else:
            values = {f.name: getattr(arg, f.name) for f in dataclasses.fields(arg) if f.init}
        defaults = _defaults(type(arg))
        group = {}
        for name, value in values.items():
            if name.endswith("_token"):
                continue
            plain = _plain(value)
            if name in defaults and _plain(defaults[name]) == plain:
                continue
            group[name] = plain
        groups[type(arg).__name__] = group
    return groups


def save_recipe(output_dir: str | os.PathLike, *args: Any, filename: str = RECIPE_NAME) -> str:
    """
    Write the resolved recipe of a run as YAML in `output_dir`, one commented section per dataclass.

    The keys map one to one onto the scripts' flags, so the file is a valid `--config` for the same script: the run
    can be repeated with `--config <output_dir>/recipe.yaml`. The header records the command line and time.

    Args:
        output_dir (`str` or `os.PathLike`): Where to write (created if missing).
        *args: The run's parsed argument dataclasses.
        filename (`str`, defaults to `"recipe.yaml"`): File name inside `output_dir`.

    Returns:
        `str`: Path of the written file.
    """
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, filename)
    lines = [
        "# Resolved recipe (recipe file + command-line overrides); re-run with --config <this file>.",
        f"# Written {datetime.now(timezone.utc).isoformat(timespec='seconds')} by: {' '.join(sys.argv)}",
    ]
    seen: set[str] = set()
    for name, group in recipe_dict(*args).items():
        # A field defined in two dataclasses (argparse would refuse it anyway) is written once.
        group = {k: v for k, v in group.items() if k not in seen}
        seen.update(group)
        lines.append(f"\n# {name}")
        if group:
            lines.append(yaml.safe_dump(group, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip())
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    logger.info(f"Saved the resolved recipe to {path}")
    return path
