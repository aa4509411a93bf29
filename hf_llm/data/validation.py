"""Checks run before training: token ids inside the vocabulary, and over-long examples counted, never hidden."""

from __future__ import annotations

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict
from transformers.utils import logging

from .arguments import OVERLONG_STRATEGIES
from .errors import DataError

logger = logging.get_logger(__name__)


def _column(ds: Dataset, column: str, split: str | None):
    if column not in ds.column_names:
        where = f"split {split!r}" if split else "the dataset"
        raise DataError(f"column {column!r} not found in {where}; columns are {ds.column_names}")
    return ds.with_format("arrow")[column]


def _lengths(ds: Dataset, column: str, split: str | None) -> list[int]:
    return pc.list_value_length(_column(ds, column, split)).to_pylist()


def _splits(dataset: Dataset | DatasetDict) -> dict[str | None, Dataset]:
    return dict(dataset.items()) if isinstance(dataset, DatasetDict) else {None: dataset}


def check_token_ids(dataset: Dataset | DatasetDict, vocab_size: int, *, column: str = "input_ids") -> int:
    """
    Raise a `ValueError` if any token id is negative or `>= vocab_size`; return the largest id seen.

    An embedding lookup past the table fails deep inside torch (or silently reads garbage on some GPUs), so this
    runs before training and names the example, the id and the fix.

    Args:
        dataset (`Dataset` or `DatasetDict`): Tokenized data.
        vocab_size (`int`): The model's `config.vocab_size`.
        column (`str`, defaults to `"input_ids"`): Column of token-id lists.
    """
    largest = -1
    for split, ds in _splits(dataset).items():
        if len(ds) == 0:
            continue
        flat = pc.list_flatten(_column(ds, column, split))
        if len(flat) == 0:
            continue
        low, high = pc.min_max(flat).values()
        low, high = low.as_py(), high.as_py()
        largest = max(largest, high)
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            row = next(i for i, ids in enumerate(ds[column]) if bad in ids)
            where = f"split {split!r}, " if split else ""
            raise DataError(
                f"token id {bad} in {where}example {row} (column {column!r}) is outside the model's vocabulary "
                f"[0, {vocab_size}): the tokenizer and model disagree; use the model's own tokenizer or resize the "
                "model's embeddings (model.resize_token_embeddings(len(tokenizer)))"
            )
    return largest


def count_overlong(dataset: Dataset | DatasetDict, max_length: int, *, column: str = "input_ids") -> int:
    """Return how many examples have more than `max_length` entries in `column` (summed over splits)."""
    return sum(sum(n > max_length for n in _lengths(ds, column, split)) for split, ds in _splits(dataset).items())


def apply_overlong_strategy(
    dataset: Dataset | DatasetDict,
    max_length: int,
    strategy: str,
    *,
    column: str = "input_ids",
    num_proc: int | None = None,
) -> Dataset | DatasetDict:
    """
    Count the examples longer than `max_length`, report them, then truncate, drop or refuse them.

    Args:
        dataset (`Dataset` or `DatasetDict`): Tokenized data.
        max_length (`int`): Most tokens per example (`--max_seq_length`).
        strategy (`str`): `"truncate"` (also cuts `attention_mask`, `labels` and `token_type_ids`), `"drop"` or
            `"error"` (`--overlong_strategy`).
        column (`str`, defaults to `"input_ids"`): Column whose length is checked.
        num_proc (`int`, *optional*): Processes for `Dataset.map`/`filter`.

    Returns:
        The dataset with no example longer than `max_length`.
    """
    if strategy not in OVERLONG_STRATEGIES:
        raise DataError(f"--overlong_strategy must be one of {list(OVERLONG_STRATEGIES)}, got {strategy!r}")
    out = {}
    for split, ds in _splits(dataset).items():
        lengths = _lengths(ds, column, split)
        overlong = sum(n > max_length for n in lengths)
        where = f"split {split!r}" if split else "dataset"
        if overlong == 0:
            out[split] = ds
            continue
        message = (
            f"{where}: {overlong} of {len(ds)} examples ({100 * overlong / len(ds):.1f}%) are longer than "
            f"--max_seq_length {max_length} (longest: {max(lengths)} tokens)"
        )
        if strategy == "error":
            raise DataError(f"{message}; raise --max_seq_length or pass --overlong_strategy truncate or drop")
        if strategy == "drop":
            ds = ds.filter(
                lambda b: [len(x) <= max_length for x in b[column]], batched=True, num_proc=num_proc, desc="Dropping"
            )
            logger.warning(f"{message}: dropped them (--overlong_strategy drop)")
        else:
            cut = [c for c in (column, "attention_mask", "labels", "token_type_ids") if c in ds.column_names]
            ds = ds.map(
                lambda b, cut=cut: {c: [x[:max_length] for x in b[c]] for c in cut},
                batched=True,
                num_proc=num_proc,
                desc="Truncating",
            )
            logger.warning(f"{message}: truncated them (--overlong_strategy truncate)")
        out[split] = ds
    return DatasetDict(out) if isinstance(dataset, DatasetDict) else out[None]
