"""Checks run before training: token ids inside the vocabulary, and over-long examples counted, never hidden."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict
from transformers.utils import logging

from .arguments import OVERLONG_STRATEGIES
from .errors import DataError
from .formatting import preference_conversation

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


@dataclass(frozen=True)
class OverlongReport:
    """
    How a stage names its over-long examples, so that every stage counts and reports them in the same words.

    Args:
        what (`str`): What is counted, plural (`"examples"`, `"preference pairs"`, `"prompts"`).
        limit (`str`): The limit as the user sets it (`"--max_length 512 tokens"`).
        fix (`str`): What the user can change to keep them whole.
        split (`str`, *optional*): The split's name.
    """

    what: str
    limit: str
    fix: str
    split: str | None = None

    def describe(self, overlong: list[int], lengths: Sequence[int], total: int) -> str:
        """The count, share, longest length and first row of the over-long examples, in one clause."""
        where = f"split {self.split!r}" if self.split else "dataset"
        return (
            f"{where}: {len(overlong)} of {total} {self.what} ({100 * len(overlong) / total:.1f}%) are longer than "
            f"{self.limit} (longest: {max(lengths)} tokens; first: row {overlong[0]})"
        )


def handle_overlong(
    dataset: Dataset,
    lengths: Sequence[int],
    max_length: int,
    strategy: str,
    report: OverlongReport,
    *,
    truncate: Callable[[Dataset], Dataset] | None = None,
    kept: str = "",
) -> Dataset:
    """
    The one over-long policy (`--overlong_strategy`) of every stage: an example is over-long when its length is
    greater than `max_length`; the over-long ones are counted and reported in the same words at every stage, then
    truncated, dropped or refused. Never silent.

    Args:
        dataset (`Dataset`): One split.
        lengths (`Sequence[int]`): The length that must not exceed `max_length`, per example (e.g. a prompt plus the
            one answer token it must leave room for).
        max_length (`int`): The limit.
        strategy (`str`): `"truncate"`, `"drop"` or `"error"`.
        report ([`OverlongReport`]): What the examples, the limit and the fix are called in the messages.
        truncate (`Callable`, *optional*): Cuts every over-long example to fit; `None` when a cut example would teach
            nothing (a prompt that fills the context), so `"truncate"` drops them instead, and says so.
        kept (`str`, defaults to `""`): What truncation keeps, for the message (`"the last tokens (the answer and
            eos the reward head reads)"`).

    Returns:
        `Dataset`: No example over the limit.

    Raises:
        `DataError`: With `"error"` and any over-long example, or when every example is over-long and would go.
    """
    if strategy not in OVERLONG_STRATEGIES:
        raise DataError(f"--overlong_strategy must be one of {list(OVERLONG_STRATEGIES)}, got {strategy!r}")
    overlong = [index for index, length in enumerate(lengths) if length > max_length]
    if not overlong:
        return dataset
    message = report.describe(overlong, lengths, len(dataset))
    fix = report.fix
    if strategy == "error":
        raise DataError(f"{message}; {fix}, or pass --overlong_strategy truncate or drop")
    if strategy == "truncate" and truncate is not None:
        logger.warning(
            f"{message}: truncated them to {kept or 'fit'} (--overlong_strategy truncate); {fix} to keep them whole"
        )
        return truncate(dataset)
    if len(overlong) == len(dataset):
        raise DataError(f"{message}: every one of them; {fix}")
    why = " (cut to fit, they would leave nothing to learn)" if strategy == "truncate" else ""
    logger.warning(f"{message}: dropped them{why} (--overlong_strategy {strategy}); {fix} to keep them")
    dropped = set(overlong)
    return dataset.select([index for index in range(len(dataset)) if index not in dropped])


def apply_overlong_strategy(
    dataset: Dataset | DatasetDict,
    max_length: int,
    strategy: str,
    *,
    column: str = "input_ids",
    num_proc: int | None = None,
    limit: str | None = None,
    fix: str = "raise --max_seq_length",
) -> Dataset | DatasetDict:
    """
    [`handle_overlong`] for tokenized data: examples with more than `max_length` entries in `column` are counted and
    reported, then truncated to their first `max_length` tokens, dropped or refused.

    Args:
        dataset (`Dataset` or `DatasetDict`): Tokenized data.
        max_length (`int`): Most tokens per example (`--max_seq_length`).
        strategy (`str`): `"truncate"` (also cuts `attention_mask`, `labels` and `token_type_ids`), `"drop"` or
            `"error"` (`--overlong_strategy`).
        column (`str`, defaults to `"input_ids"`): Column whose length is checked.
        num_proc (`int`, *optional*): Processes for `Dataset.map`.
        limit (`str`, *optional*): The limit as the user sets it; defaults to `--max_seq_length {max_length}`.
        fix (`str`, defaults to `"raise --max_seq_length"`): What the user can change.

    Returns:
        The dataset with no example longer than `max_length`.
    """
    out = {}
    for split, ds in _splits(dataset).items():
        cut = [c for c in (column, "attention_mask", "labels", "token_type_ids") if c in ds.column_names]

        def keep_the_start(rows: Dataset, cut: list[str] = cut) -> Dataset:
            return rows.map(
                lambda b: {c: [x[:max_length] for x in b[c]] for c in cut},
                batched=True,
                num_proc=num_proc,
                desc="Truncating",
            )

        out[split] = handle_overlong(
            ds,
            _lengths(ds, column, split),
            max_length,
            strategy,
            OverlongReport("examples", limit or f"--max_seq_length {max_length}", fix, split),
            truncate=keep_the_start,
            kept="their first tokens",
        )
    return DatasetDict(out) if isinstance(dataset, DatasetDict) else out[None]


def handle_overlong_completions(
    dataset: Dataset,
    prompt_lengths: Sequence[int],
    lengths: Sequence[int],
    max_length: int,
    strategy: str,
    report: OverlongReport,
) -> Dataset:
    """
    [`handle_overlong`] for prompt + answer data that TRL truncates itself (SFT, DPO): with `"truncate"`, TRL keeps
    each sequence's first `max_length` tokens (the answer's end is cut, and its eos), which is counted and reported
    here, and the examples whose prompt leaves no room for one answer token are dropped (TRL would drop them with only
    a progress bar). `"drop"` and `"error"` apply to every over-long example.

    Args:
        dataset (`Dataset`): One split.
        prompt_lengths (`Sequence[int]`): Tokens in each prompt.
        lengths (`Sequence[int]`): Tokens in each prompt + answer (the longer answer of a pair).
        max_length (`int`): TRL's `--max_length`.
        strategy (`str`): `--overlong_strategy`.
        report ([`OverlongReport`]): As for [`handle_overlong`].

    Returns:
        `Dataset`: The examples the stage trains on.
    """
    if strategy != "truncate":
        return handle_overlong(dataset, lengths, max_length, strategy, report)
    cut = [index for index, (p, n) in enumerate(zip(prompt_lengths, lengths, strict=True)) if p < max_length < n]
    if cut:
        logger.warning(
            f"{report.describe(cut, lengths, len(dataset))}: TRL trains on their first {max_length} tokens, the "
            f"answer's end cut (--overlong_strategy truncate); {report.fix} to keep them whole"
        )
    return handle_overlong(
        dataset,
        [length + 1 for length in prompt_lengths],  # a prompt must leave room for one answer token
        max_length,
        "truncate",
        replace(report, what=f"{report.what} whose prompt leaves no room for an answer"),
    )


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value or all(_is_empty(message.get("content")) for message in value)
    return False


def check_preference_pairs(
    dataset: DatasetDict, source: str, *, locate: Callable[[str, int], str] | None = None
) -> None:
    """
    Refuse preference data a reward model or DPO cannot learn from (nor an evaluation score), with one message naming
    where the row is and the fix: an empty `prompt` (when the data has a prompt column), `chosen` identical to
    `rejected`, or conversations (or HH dialogues) whose turns differ before the answers, so there is no shared prompt.

    Args:
        dataset (`DatasetDict`): The `preference` splits, rows in the source's order (before any hold-out).
        source (`str`): Where the data came from (`--dataset_name`), for the message.
        locate (`Callable[[str, int], str]`, *optional*): Split and row index -> where that row is, e.g. a file and
            its line (`hf_llm.data.loading.source_row`); defaults to the source, split and row.

    Raises:
        `DataError`: On the first bad row.
    """

    def where(split: str, index: int) -> str:
        return locate(split, index) if locate is not None else f"{source} (split {split!r}, row {index})"

    for split, rows in dataset.items():
        has_prompt = "prompt" in rows.column_names
        for index, row in enumerate(rows):
            if any(row[column] is None or isinstance(row[column], str) for column in ("chosen", "rejected")) and (
                _is_empty(row["chosen"]) or _is_empty(row["rejected"])
            ):
                continue  # a blank text answer: the loader drops the pair and says how many it dropped
            if has_prompt and _is_empty(row["prompt"]):
                raise DataError(
                    f"{where(split, index)}: the prompt is empty; every pair needs the prompt both answers reply to. "
                    "Fill it in or remove the row (data without a prompt column is read as whole conversations)."
                )
            if row["chosen"] == row["rejected"]:
                raise DataError(
                    f"{where(split, index)}: chosen and rejected are identical, so the pair says nothing about which "
                    "answer is better; remove the row or fix the rejected answer."
                )
            try:
                preference_conversation(row)
            except ValueError as error:
                raise DataError(f"{where(split, index)}: {error}; fix or remove the row.") from None
