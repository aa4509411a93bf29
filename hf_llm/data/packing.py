"""Tokenize text and pack it for pretraining: fixed-length blocks (optionally overlapping) or padding-free, from an
in-memory dataset or, with [`PackedBlockStream`], on the fly from a streamed one."""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections import deque
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict
from torch.utils.data import IterableDataset as TorchIterableDataset
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


# ----------------------------------------------------------------------------------------------------------------
# Streaming: tokenize and pack on the fly, with a position that checkpoints can save and restore
# ----------------------------------------------------------------------------------------------------------------

_HOLD_OUT_BUCKETS = 10_000  # --validation_split_percentage has a resolution of 0.01%


def is_held_out(text: str, percentage: float) -> bool:
    """
    Whether a document belongs to the validation hold-out of a stream that has no validation split.

    The choice hashes the document's text, so it is the same on every rank, in every pass and after every resume, and
    needs no pass over the data; duplicated documents fall on the same side, so none leaks from training into
    validation.

    Args:
        text (`str`): The document.
        percentage (`float`): Share of documents held out, in percent (`--validation_split_percentage`).
    """
    digest = hashlib.blake2b(text.encode("utf-8", errors="surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _HOLD_OUT_BUCKETS < round(percentage * _HOLD_OUT_BUCKETS / 100)


class PackedBlockStream(TorchIterableDataset):
    """
    The documents of a streamed text dataset, tokenized and packed on the fly into blocks of `block_size` tokens.

    Documents are read in order from `documents` (a `datasets.IterableDataset`, e.g. `load_dataset(...,
    streaming=True)`, already split between ranks with `split_dataset_by_node`), tokenized in small batches, ended
    with eos and concatenated; every full block is yielded as `{"input_ids", "labels"}`. The tokens after the last
    full block wait for the next document, so nothing is dropped. When `repeat` is set and the documents run out, a
    new pass starts from the first document (logged: examples repeat from there on), so a run of `max_steps` never
    runs dry.

    The position is resumable: `state_dict()` is where the stream stands after the last block yielded, and
    `state_after(n)` where it stood after block `n` (a recent one: a dataloader reads ahead of the training loop).
    A stream given that state with `load_state_dict` yields exactly the blocks that would have followed: the
    documents' own position (`datasets.IterableDataset.state_dict`) plus the tokens waiting for the next block.

    Documents whose text is missing or blank are skipped and counted; with `hold_out_percentage`, the documents
    [`is_held_out`] picks are left out (the training side) or are the only ones kept (`keep_held_out=True`, the
    validation side).

    Args:
        documents (`datasets.IterableDataset`): The text documents, not yet iterated (the stream takes its first
            document from the dataset's position when given it).
        tokenizer (`PreTrainedTokenizerBase`): Its eos token is appended to every document.
        block_size (`int`): Tokens per block.
        text_column (`str`, defaults to `"text"`): Column holding the text.
        hold_out_percentage (`float`, defaults to 0): Percent of documents held out for validation (see above).
        keep_held_out (`bool`, defaults to `False`): Keep only the held-out documents instead of leaving them out.
        repeat (`bool`, defaults to `True`): Start a new pass when the documents run out; else stop.
        tokenize_batch_size (`int`, defaults to 64): Documents tokenized together.
        history (`int`, defaults to 4096): How many recent block positions `state_after` can return.
    """

    def __init__(
        self,
        documents,
        tokenizer: PreTrainedTokenizerBase,
        block_size: int,
        *,
        text_column: str = "text",
        hold_out_percentage: float = 0.0,
        keep_held_out: bool = False,
        repeat: bool = True,
        tokenize_batch_size: int = 64,
        history: int = 4096,
    ):
        if block_size < 1:
            raise DataError(f"--block_size must be positive, got {block_size}")
        if tokenizer.eos_token_id is None:
            raise DataError("the tokenizer has no eos token; set tokenizer.eos_token so packed documents stay apart")
        self.documents = documents
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.text_column = text_column
        self.hold_out_percentage = hold_out_percentage
        self.keep_held_out = keep_held_out
        self.repeat = repeat
        self.tokenize_batch_size = tokenize_batch_size
        # Where the documents start; a new pass reloads it (the source keeps a loaded state for every new iteration).
        self._first_document = documents.state_dict()
        self._position = self._start_position()
        self._history: deque[tuple[int, dict]] = deque(maxlen=history)

    def _start_position(self) -> dict:
        return {
            "blocks": 0,  # blocks yielded so far, over every pass
            "passes": 0,  # passes finished
            "documents": None,  # the source's state after the last document read; None: before the first one
            "buffer": [],  # tokens read but not yet in a block
            "documents_read": 0,  # documents consumed into blocks (this pass)
            "documents_skipped": 0,  # blank documents (this pass)
            "documents_held_out": 0,  # documents on the other side of the hold-out (this pass)
            "tokens": 0,  # tokens read (this pass)
        }

    # ---- position ----

    def state_dict(self) -> dict:
        """Where the stream stands after the last block it yielded (JSON-serializable)."""
        return copy.deepcopy(self._position)

    def state_after(self, blocks: int) -> dict:
        """
        Where the stream stood right after yielding its `blocks`-th block (counted over every pass).

        Raises:
            `ValueError`: If that block is not among the recent ones kept (`history`), or not yielded yet.
        """
        if blocks == self._position["blocks"]:
            return self.state_dict()
        for count, position in reversed(self._history):
            if count == blocks:
                return copy.deepcopy(position)
        raise ValueError(
            f"the stream's position after block {blocks} is not known: it has yielded {self._position['blocks']} "
            f"blocks and keeps the positions of the last {self._history.maxlen}"
        )

    def load_state_dict(self, state: dict) -> None:
        """Resume from a position returned by `state_dict()` or `state_after()`."""
        missing = set(self._start_position()) - set(state)
        if missing:
            raise ValueError(f"not a PackedBlockStream position: keys {sorted(missing)} are missing")
        self._position = copy.deepcopy(state)
        self._history.clear()

    # ---- iteration ----

    def _keep(self, text) -> bool | None:
        """True to pack the document, False if it is on the other side of the hold-out, None if it is blank."""
        if not isinstance(text, str) or not text.strip():
            return None
        if self.hold_out_percentage <= 0:
            return not self.keep_held_out
        return is_held_out(text, self.hold_out_percentage) == self.keep_held_out

    def _read_documents(self) -> Iterator[tuple[list[int] | None, dict, bool | None]]:
        """`(token_ids, source_state_after_it, keep)` for every document of the current pass, from the position."""
        self.documents.load_state_dict(self._position["documents"] or self._first_document)
        iterator = iter(self.documents)
        while True:
            batch = []
            for example in iterator:
                if self.text_column not in example:
                    raise DataError(
                        f"column {self.text_column!r} not found in the streamed dataset; columns are "
                        f"{sorted(example)}; pass --text_column <name>"
                    )
                text = example[self.text_column]
                batch.append((text, self.documents.state_dict(), self._keep(text)))
                if len(batch) == self.tokenize_batch_size:
                    break
            if not batch:
                return
            kept = [text for text, _, keep in batch if keep]
            ids = iter(
                self.tokenizer(kept, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
                if kept
                else []
            )
            eos = [self.tokenizer.eos_token_id]
            for _, state, keep in batch:
                yield (next(ids) + eos if keep else None), state, keep

    def __iter__(self) -> Iterator[dict[str, list[int]]]:
        position = self._position
        # Tokens as int32 arrays: the recent positions kept for `state_after` share them instead of copying lists.
        buffer, start = np.asarray(copy.deepcopy(position["buffer"]), dtype=np.int32), 0
        while True:
            for token_ids, source_state, keep in self._read_documents():
                position["documents"] = source_state
                if keep is None:
                    position["documents_skipped"] += 1
                elif not keep:
                    position["documents_held_out"] += 1
                else:
                    position["documents_read"] += 1
                    position["tokens"] += len(token_ids)
                    buffer, start = np.concatenate([buffer[start:], np.asarray(token_ids, dtype=np.int32)]), 0
                while len(buffer) - start >= self.block_size:
                    block = buffer[start : start + self.block_size].tolist()
                    start += self.block_size
                    position["blocks"] += 1
                    position["buffer"] = _Tail(buffer, start)
                    self._history.append((position["blocks"], {**position}))
                    yield {"input_ids": block, "labels": list(block)}
                position["buffer"] = _Tail(buffer, start)
            self._end_pass()
            if not self.repeat:
                return
            position.update(
                passes=position["passes"] + 1,
                documents=None,
                documents_read=0,
                documents_skipped=0,
                documents_held_out=0,
                tokens=0,
            )

    def _end_pass(self) -> None:
        position = self._position
        if not position["documents_read"]:
            side = "held-out " if self.keep_held_out else ""
            raise DataError(
                f"the streamed dataset has no {side}documents with text in column {self.text_column!r} "
                f"({position['documents_skipped']} blank, {position['documents_held_out']} on the other side of the "
                "validation hold-out); check --dataset_name, --text_column and --validation_split_percentage"
            )
        if self.repeat:
            logger.warning(
                f"Finished pass {position['passes'] + 1} over the streamed documents: {position['documents_read']} "
                f"documents ({position['tokens']} tokens) packed, {position['documents_skipped']} blank ones skipped, "
                f"{position['documents_held_out']} held out for validation; {position['blocks']} blocks of "
                f"{self.block_size} so far. The next pass starts again from the first document: examples repeat from "
                "here on."
            )


class _Tail:
    """The tokens of a buffer from `start` on, turned into a list only when a position is saved."""

    __slots__ = ("buffer", "start")

    def __init__(self, buffer: np.ndarray, start: int):
        self.buffer, self.start = buffer, start

    def __deepcopy__(self, memo) -> list[int]:
        return self.buffer[self.start :].tolist()


def take_blocks(stream: PackedBlockStream, count: int) -> Dataset:
    """
    The first `count` blocks of a stream as an in-memory `Dataset` (`input_ids`, `labels`): a fixed evaluation set.

    Args:
        stream ([`PackedBlockStream`]): Built with `repeat=False`, so a short source ends the set instead of
            repeating blocks.
        count (`int`): Blocks to take (`--streaming_eval_blocks`).

    Returns:
        `Dataset`: Up to `count` blocks; fewer (with a warning) when the source runs out first.
    """
    blocks = list(itertools.islice(iter(stream), count))
    if not blocks:
        raise DataError(f"the validation stream holds fewer tokens than one block of {stream.block_size}")
    if len(blocks) < count:
        logger.warning(
            f"The validation stream ran out after {len(blocks)} of --streaming_eval_blocks {count} blocks: "
            f"evaluating on {len(blocks)} blocks of {stream.block_size} tokens."
        )
    return Dataset.from_dict({name: [block[name] for block in blocks] for name in ("input_ids", "labels")})
