"""Data for every hf_llm stage: loaders, the bundled `pydocs` corpus, packing and validation.

Public API (stable; other modules and scripts build on these names):

Arguments
    `DataArguments`: dataclass of dataset flags (`--dataset_name`, `--*_column`, `--block_size`, `--stride`,
    `--max_seq_length`, `--overlong_strategy`, `--encoding_errors`, `--preprocessing_num_workers`, ...), safe to
    parse next to `TrainingArguments` and TRL configs.

Errors
    `DataError(ValueError)`: bad data or data flag; the message names the file/split/column/flag and the fix.
    Scripts catch it and exit with the message alone.

Loading (every data format's output has canonical columns and `train`/`validation`, plus `test` when available)
    `load_formatted_dataset(dataset_name, data_format, *, seed=42, **data_args_fields) -> DatasetDict`
    `load_dataset_from_args(data_args, data_format, *, seed=42) -> DatasetDict`
    `load_raw_dataset(data_args) -> DatasetDict` (no renaming) and `check_utf8(path)`.
    `dataset_fingerprint(dataset) -> str`: short fingerprint to record next to an artifact, and
    `save_data_fingerprint(output_dir, data_args, dataset)`, which writes it as `data_fingerprint.json`.
    Tasks and columns: `"text"` -> `text`; `"classification"` -> `text`, `label` (`ClassLabel`);
    `"instruction"` -> `instruction`, `input`, `output` (or `messages`); `"preference"` -> `prompt`, `chosen`,
    `rejected`. `dataset_name` is a Hub id, a local `.txt/.json/.jsonl/.csv/.tsv/.parquet` file or folder, or
    `"pydocs"`.

Bundled corpus
    `load_pydocs(data_format, cache_dir=None) -> DatasetDict` (extra `source` column), `pydocs_fingerprint()`,
    `pydocs_manifest()`, `pydocs_dir()`, `hf_llm_cache_dir()` (`$HF_LLM_CACHE` overrides `~/.cache/hf_llm`).

Tokenizing and packing (pretraining)
    `tokenize_texts(dataset, tokenizer, *, text_column="text", add_eos=True, num_proc=None) -> Dataset(Dict)`
    `group_texts(dataset, block_size, *, stride=None, mask_overlap=False, num_proc=None)`: fixed-length blocks
    (`input_ids`, `labels`), overlapping windows when `stride < block_size`.
    `split_documents(dataset, max_length, *, num_proc=None)`: cut documents into pieces of at most `max_length`
    tokens for the padding-free path, and `padding_free_collator()`: a `DataCollatorWithFlattening` that packs a
    batch into one row with `position_ids` restarting per document.

Formatting (shared by training and evaluation, `hf_llm.data.formatting`)
    `ALPACA_CHAT_TEMPLATE`, `format_alpaca_prompt(instruction, input_text="", response=None)`,
    `alpaca_messages(instruction, input_text="", output=None)`, `instruction_messages(example)`,
    `instruction_prompt_and_reference(example, tokenizer)`, `preference_texts(example, tokenizer)`.

Validation
    `check_token_ids(dataset, vocab_size, *, column="input_ids")`: raises if an id is >= vocab_size.
    `count_overlong(dataset, max_length, *, column="input_ids") -> int`
    `apply_overlong_strategy(dataset, max_length, strategy, *, column="input_ids", num_proc=None)`: counts and
    reports examples over `max_length`, then truncates, drops or raises (`--overlong_strategy`).

Tests: `tests/conftest.py` provides a session-scoped `tiny_tokenizer` fixture (byte-level BPE, vocab 300, Alpaca
chat template) built with `hf_llm.tokenizer.train_tokenizer`.
"""

from ..stages import DATA_FORMATS
from .arguments import COLUMN_FLAGS, DataArguments
from .errors import DataError
from .formatting import (
    ALPACA_CHAT_TEMPLATE,
    alpaca_messages,
    format_alpaca_prompt,
    instruction_messages,
    instruction_prompt_and_reference,
    preference_texts,
)
from .loading import (
    check_utf8,
    dataset_fingerprint,
    load_dataset_from_args,
    load_formatted_dataset,
    load_raw_dataset,
    save_data_fingerprint,
)
from .packing import group_texts, padding_free_collator, split_documents, tokenize_texts
from .pydocs import hf_llm_cache_dir, load_pydocs, pydocs_dir, pydocs_fingerprint, pydocs_manifest
from .validation import apply_overlong_strategy, check_preference_pairs, check_token_ids, count_overlong

__all__ = [
    "ALPACA_CHAT_TEMPLATE",
    "COLUMN_FLAGS",
    "DATA_FORMATS",
    "DataArguments",
    "DataError",
    "alpaca_messages",
    "apply_overlong_strategy",
    "check_preference_pairs",
    "check_token_ids",
    "check_utf8",
    "count_overlong",
    "dataset_fingerprint",
    "format_alpaca_prompt",
    "group_texts",
    "hf_llm_cache_dir",
    "instruction_messages",
    "instruction_prompt_and_reference",
    "load_dataset_from_args",
    "load_pydocs",
    "load_raw_dataset",
    "load_formatted_dataset",
    "padding_free_collator",
    "pydocs_dir",
    "pydocs_fingerprint",
    "preference_texts",
    "pydocs_manifest",
    "save_data_fingerprint",
    "split_documents",
    "tokenize_texts",
]
