"""Tokenize text and pack it for pretraining: fixed-length blocks (optionally overlapping) or padding-free."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict
from transformers import DataCollatorWithFlattening, PreTrainedTokenizerBase
from transformers.utils import logging

from .errors import DataError

logger = logging.get_logger(__name__)

_COVERED = "_hf_llm_new_tokens"


def _per_split(dataset: Dataset | DatasetDict, fn, **kwargs):
    if isinstance(dataset, DatasetDict):
        return DatasetDict({split: fn(ds, split=split, **kwargs) for split, ds in dataset.items()})
    return fn(dataset, split=None, **kwargs)


def _name(split: str | None) -> str:
    return f"split {split!r}" if split else "dataset"


def tokenize_texts(
    dataset: Dataset | DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    *,
    text_column: str = "text",
    add_eos: bool = True,
    num_proc: int | None = None,
    batch_size: int = 1000,
) -> Dataset | DatasetDict:
    """
    Tokenize every text into one `input_ids` list (no truncation), ending each with the eos token.

    Args:
        dataset (`Dataset` or `DatasetDict`): Holds `text_column`; every other column is removed.
        tokenizer (`PreTrainedTokenizerBase`): The tokenizer; no special tokens are added besides eos.
        text_column (`str`, defaults to `"text"`): Column with the text.
        add_eos (`bool`, defaults to `True`): Append `tokenizer.eos_token_id` so packed documents stay separated.
        num_proc (`int`, *optional*): Processes for `Dataset.map`.
        batch_size (`int`, defaults to 1000): Texts per `map` batch.

    Returns:
        `Dataset` or `DatasetDict` with a single `input_ids` column.
    """
    if add_eos and tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no eos token; set tokenizer.eos_token or pass add_eos=False")
    eos = [tokenizer.eos_token_id] if add_eos else []

    def tokenize(batch):
        ids = tokenizer(batch[text_column], add_special_tokens=False, return_attention_mask=False, verbose=False)
        return {"input_ids": [x + eos for x in ids["input_ids"]]}

    def run(ds: Dataset, split: str | None) -> Dataset:
        if text_column not in ds.column_names:
            raise DataError(
                f"column {text_column!r} not found in the {_name(split)}; columns are {ds.column_names}; "
                "pass --text_column <name>"
            )
        return ds.map(
            tokenize,
            batched=True,
            batch_size=batch_size,
            num_proc=num_proc,
            remove_columns=ds.column_names,
            desc="Tokenizing",
        )

    return _per_split(dataset, run)


def group_texts(
    dataset: Dataset | DatasetDict,
    block_size: int,
    *,
    stride: int | None = None,
    mask_overlap: bool = False,
    num_proc: int | None = None,
    batch_size: int = 1000,
) -> Dataset | DatasetDict:
    """
    Concatenate tokenized documents and cut them into blocks of exactly `block_size` tokens.

    Blocks start every `stride` tokens (default `block_size`: no overlap), the book's sliding window over a token
    stream. Concatenation happens within each `map` batch of `batch_size` documents; the tokens left after the last
    full block of a batch are dropped, and their number is logged.

    Args:
        dataset (`Dataset` or `DatasetDict`): Holds `input_ids` (e.g. from `tokenize_texts`).
        block_size (`int`): Tokens per block.
        stride (`int`, *optional*): Step between block starts, `1 <= stride <= block_size`.
        mask_overlap (`bool`, defaults to `False`): Set the labels of the tokens a block shares with the previous
            one to -100, so each token is scored once (sliding-window evaluation).
        num_proc (`int`, *optional*): Processes for `Dataset.map`.
        batch_size (`int`, defaults to 1000): Documents concatenated together.

    Returns:
        `Dataset` or `DatasetDict` with `input_ids` and `labels` (same length, `block_size`); the model shifts labels.
    """
    stride = block_size if stride is None else stride
    if block_size < 1:
        raise DataError(f"--block_size must be positive, got {block_size}")
    if not 1 <= stride <= block_size:
        raise DataError(f"--stride must be between 1 and --block_size ({block_size}), got {stride}")
    overlap = block_size - stride

    def group(batch: pa.Table) -> dict[str, np.ndarray]:
        # Arrow in, numpy out: no Python loop over tokens.
        stream = pc.list_flatten(batch.column("input_ids")).to_numpy()
        if len(stream) < block_size:
            blocks = np.zeros((0, block_size), dtype=np.int64)
        else:
            blocks = np.lib.stride_tricks.sliding_window_view(stream, block_size)[::stride]
        count = len(blocks)
        labels = blocks.copy()
        if mask_overlap and overlap:
            labels[1:, :overlap] = -100
        new_tokens = np.full(count, stride, dtype=np.int64)
        new_tokens[:1] = block_size
        return {"input_ids": np.ascontiguousarray(blocks), "labels": labels, _COVERED: new_tokens}

    def run(ds: Dataset, split: str | None) -> Dataset:
        if "input_ids" not in ds.column_names:
            raise DataError(
                f"group_texts needs an 'input_ids' column (run tokenize_texts first); got {ds.column_names}"
            )
        total = _total_tokens(ds)
        packed = ds.with_format("arrow").map(
            group,
            batched=True,
            batch_size=batch_size,
            num_proc=num_proc,
            remove_columns=ds.column_names,
            desc=f"Packing into blocks of {block_size}",
        )
        if len(packed) == 0:
            raise DataError(
                f"{_name(split)} has {total} tokens, fewer than one block of {block_size}: lower --block_size "
                "or add data"
            )
        covered = int(pc.sum(packed[_COVERED]).as_py())
        packed = packed.remove_columns(_COVERED).with_format(None)
        dropped = total - covered
        # A few tokens per batch is the usual price of packing; more than 1% deserves attention.
        log = logger.warning if dropped > 0.01 * total else logger.info
        log(
            f"{_name(split)}: packed {total} tokens into {len(packed)} blocks of {block_size} (stride {stride}); "
            f"{dropped} tokens ({100 * dropped / max(total, 1):.2f}%) after the last full block of each batch dropped"
        )
        return packed

    return _per_split(dataset, run)


def split_documents(
    dataset: Dataset | DatasetDict,
    max_length: int,
    *,
    num_proc: int | None = None,
    batch_size: int = 1000,
) -> Dataset | DatasetDict:
    """
    Cut tokenized documents into consecutive pieces of at most `max_length` tokens, for padding-free packing.

    Nothing is dropped: a document of 2.5 x `max_length` tokens becomes three pieces. Pair the result with
    `padding_free_collator()`.

    Args:
        dataset (`Dataset` or `DatasetDict`): Holds `input_ids`.
        max_length (`int`): Most tokens per piece (the model's position table bounds it).
        num_proc (`int`, *optional*): Processes for `Dataset.map`.
        batch_size (`int`, defaults to 1000): Documents per `map` batch.

    Returns:
        `Dataset` or `DatasetDict` with a single `input_ids` column.
    """
    if max_length < 2:
        raise DataError(f"--max_seq_length must be at least 2 for padding-free packing, got {max_length}")

    def cut(batch):
        pieces = [ids[i : i + max_length] for ids in batch["input_ids"] for i in range(0, len(ids), max_length)]
        return {"input_ids": pieces}

    def run(ds: Dataset, split: str | None) -> Dataset:
        out = ds.map(
            cut,
            batched=True,
            batch_size=batch_size,
            num_proc=num_proc,
            remove_columns=ds.column_names,
            desc=f"Splitting documents longer than {max_length}",
        )
        if len(out) != len(ds):
            logger.info(f"{_name(split)}: {len(ds)} documents became {len(out)} pieces of at most {max_length} tokens")
        return out

    return _per_split(dataset, run)


def padding_free_collator() -> DataCollatorWithFlattening:
    """
    Return a collator that concatenates a batch into one row with `position_ids` restarting at every document.

    The first label of every document is -100, so no token is predicted across a document boundary. The model
    must build per-document attention from `position_ids` (hf_llm's GPT does when no attention mask or cache is
    passed), so batches hold `input_ids`, `labels` and `position_ids` of shape `(1, total_tokens)` and no padding.
    """
    return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)


def _total_tokens(ds: Dataset, column: str = "input_ids") -> int:
    lengths = pc.list_value_length(ds.with_format("arrow")[column])
    return int(pc.sum(lengths).as_py() or 0)
