"""`DataArguments`: the dataset flags every hf_llm script shares.

Field names avoid those of `transformers.TrainingArguments` and TRL's configs (`max_length`, `label_names`,
`seed`, `dataset_num_proc`, ...) so a script can parse `DataArguments` next to any of them with `TrlParser` or
`HfArgumentParser` without an argparse conflict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import DataError

OVERLONG_STRATEGIES = ("truncate", "drop", "error")
ENCODING_ERRORS = ("strict", "replace")
TEXT_SAMPLE_BY = ("line", "paragraph", "document")

# Canonical column name -> the DataArguments field that maps a source column onto it.
COLUMN_FLAGS = {
    "text": "text_column",
    "label": "label_column",
    "instruction": "instruction_column",
    "input": "input_column",
    "output": "output_column",
    "messages": "messages_column",
    "prompt": "prompt_column",
    "chosen": "chosen_column",
    "rejected": "rejected_column",
}


@dataclass
class DataArguments:
    """
    Where the data comes from, how its columns map onto a data format's canonical columns, and how examples are cut.

    Args:
        dataset_name (`str`, *optional*):
            A Hub dataset id (`"imdb"`), a local file (`.txt`, `.json`, `.jsonl`, `.csv`, `.tsv`, `.parquet`), a
            folder of such files, or `"pydocs"` for the bundled offline corpus.
        dataset_config_name (`str`, *optional*):
            The Hub dataset configuration (the second argument of `datasets.load_dataset`).
        dataset_train_split (`str`, defaults to `"train"`):
            Name of the training split in the source.
        dataset_validation_split (`str`, *optional*):
            Name of the validation split in the source; when unset, `validation`, `valid`, `dev` or `val` is used if
            present, otherwise `validation_split_percentage` of the training split is held out.
        dataset_test_split (`str`, *optional*):
            Name of the test split in the source; when unset, `test` is used if present.
        validation_split_percentage (`float`, defaults to 5.0):
            Percentage of the training split held out as validation when the source has no validation split.
        text_column, label_column, instruction_column, input_column, output_column, messages_column, prompt_column,
        chosen_column, rejected_column (`str`, *optional*):
            Source column to use as the canonical column of the same name (e.g. `--text_column review`).
        class_names (`list[str]`, *optional*):
            The class set for classification, in label-id order. Defaults to the source's `ClassLabel` names, or the
            sorted labels of the training split.
        text_sample_by (`str`, defaults to `"paragraph"`):
            How `.txt` files are cut into examples: `"line"`, `"paragraph"` (blank-line separated) or `"document"`.
        encoding_errors (`str`, defaults to `"strict"`):
            `"strict"` stops on a local file that is not valid UTF-8 (naming the file and byte offset);
            `"replace"` substitutes U+FFFD for the bad bytes.
        block_size (`int`, *optional*):
            Length of the fixed blocks that pretraining packs token streams into.
        stride (`int`, *optional*):
            Step between the starts of consecutive blocks; smaller than `block_size` gives overlapping windows.
            Defaults to `block_size` (no overlap).
        max_seq_length (`int`, *optional*):
            Maximum tokens in one example (classification, padding-free pretraining); longer ones are handled
            according to `overlong_strategy`, and always counted and reported.
        overlong_strategy (`str`, defaults to `"truncate"`):
            What to do with an example longer than `max_seq_length`: `"truncate"`, `"drop"` or `"error"`.
        preprocessing_num_workers (`int`, *optional*):
            Processes for `Dataset.map` (`num_proc`).
        max_train_samples (`int`, *optional*):
            Keep only the first N training examples (for quick runs).
        max_eval_samples (`int`, *optional*):
            Keep only the first N examples of the validation and test splits.
        streaming (`bool`, defaults to `False`):
            Read the dataset as a stream (`datasets.load_dataset(..., streaming=True)`): nothing is downloaded or
            prepared ahead; documents are tokenized and packed into `block_size` blocks as training needs them, and
            each process reads its own share. Pretraining only; needs `--max_steps`.
        streaming_eval_blocks (`int`, defaults to 100):
            With `streaming`, the validation set: the first N blocks of the validation split (or of the documents
            held out from the training split), read once before training and evaluated on every time.
    """

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id, local file or folder (.txt/.json/.jsonl/.csv/.tsv/.parquet), or 'pydocs'."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Name of the training split in the source."})
    dataset_validation_split: str | None = field(
        default=None,
        metadata={
            "help": "Name of the validation split; default: validation/valid/dev/val if present, else held out."
        },
    )
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "Name of the test split; default: 'test' if present."}
    )
    validation_split_percentage: float = field(
        default=5.0,
        metadata={"help": "Percent of train held out as validation when the source has no validation split."},
    )
    text_column: str | None = field(default=None, metadata={"help": "Source column to use as 'text'."})
    label_column: str | None = field(default=None, metadata={"help": "Source column to use as 'label'."})
    instruction_column: str | None = field(default=None, metadata={"help": "Source column to use as 'instruction'."})
    input_column: str | None = field(default=None, metadata={"help": "Source column to use as 'input'."})
    output_column: str | None = field(default=None, metadata={"help": "Source column to use as 'output'."})
    messages_column: str | None = field(default=None, metadata={"help": "Source column to use as 'messages'."})
    prompt_column: str | None = field(default=None, metadata={"help": "Source column to use as 'prompt'."})
    chosen_column: str | None = field(default=None, metadata={"help": "Source column to use as 'chosen'."})
    rejected_column: str | None = field(default=None, metadata={"help": "Source column to use as 'rejected'."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Class set for classification, in label-id order (e.g. neg pos)."}
    )
    text_sample_by: str = field(
        default="paragraph", metadata={"help": "How .txt files become examples: line, paragraph or document."}
    )
    encoding_errors: str = field(
        default="strict", metadata={"help": "On non-UTF-8 local files: 'strict' (stop) or 'replace' (U+FFFD)."}
    )
    block_size: int | None = field(default=None, metadata={"help": "Pretraining: length of packed blocks."})
    stride: int | None = field(
        default=None, metadata={"help": "Pretraining: step between block starts (< block_size overlaps)."}
    )
    max_seq_length: int | None = field(default=None, metadata={"help": "Maximum tokens in one example."})
    overlong_strategy: str = field(
        default="truncate",
        metadata={"help": "Examples longer than --max_seq_length: truncate, drop or error (always reported)."},
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc for Dataset.map."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N train examples."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N validation/test examples."}
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Read the dataset as a stream, packed on the fly (pretraining; needs --max_steps)."},
    )
    streaming_eval_blocks: int = field(
        default=100,
        metadata={"help": "With --streaming: evaluate on the first N blocks of the validation stream."},
    )

    def __post_init__(self):
        if self.encoding_errors not in ENCODING_ERRORS:
            raise DataError(f"--encoding_errors must be one of {list(ENCODING_ERRORS)}, got {self.encoding_errors!r}")
        if self.overlong_strategy not in OVERLONG_STRATEGIES:
            raise DataError(
                f"--overlong_strategy must be one of {list(OVERLONG_STRATEGIES)}, got {self.overlong_strategy!r}"
            )
        if self.text_sample_by not in TEXT_SAMPLE_BY:
            raise DataError(f"--text_sample_by must be one of {list(TEXT_SAMPLE_BY)}, got {self.text_sample_by!r}")
        if not 0 <= self.validation_split_percentage < 100:
            raise DataError(
                f"--validation_split_percentage must be in [0, 100), got {self.validation_split_percentage}"
            )
        for name in (
            "block_size",
            "stride",
            "max_seq_length",
            "max_train_samples",
            "max_eval_samples",
            "streaming_eval_blocks",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise DataError(f"--{name} must be a positive integer, got {value}")
        if self.preprocessing_num_workers is not None and self.preprocessing_num_workers < 1:
            raise DataError(f"--preprocessing_num_workers must be >= 1, got {self.preprocessing_num_workers}")
        if self.stride is not None and self.block_size is not None and self.stride > self.block_size:
            raise DataError(
                f"--stride {self.stride} is larger than --block_size {self.block_size}: tokens between blocks would "
                "be skipped; pass a stride <= block_size"
            )
        if self.streaming:
            self._check_streaming()

    def _check_streaming(self) -> None:
        # Flags that shape an in-memory dataset and have no meaning for a stream, each with what to use instead.
        refused = {
            "max_train_samples": "a stream is as long as --max_steps makes it",
            "max_eval_samples": "--streaming_eval_blocks sets the size of the validation set",
            "preprocessing_num_workers": "a stream is tokenized as it is read, in the training process",
            "stride": "streamed blocks do not overlap",
            "max_seq_length": "a stream is packed into --block_size blocks",
        }
        for name, reason in refused.items():
            value = getattr(self, name)
            if value is not None and not (name == "stride" and value == self.block_size):
                raise DataError(f"--{name} does not apply with --streaming ({reason}); remove --{name}")

    def column_mapping(self) -> dict[str, str]:
        """Return `{canonical_column: source_column}` for every `--*_column` flag that was set."""
        return {
            canonical: getattr(self, flag)
            for canonical, flag in COLUMN_FLAGS.items()
            if getattr(self, flag) is not None
        }
