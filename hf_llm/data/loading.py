"""Load a dataset in one data format from a Hub id, local files or the bundled `pydocs`, with canonical columns."""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset, Value, load_dataset, load_dataset_builder
from transformers.utils import logging

from ..errors import UsageError
from ..stages import DATA_FORMATS
from .arguments import COLUMN_FLAGS, DataArguments
from .errors import DataError
from .preferences import rankings_dataset
from .pydocs import load_pydocs, pydocs_fingerprint
from .rankings import is_rankings_file
from .validation import check_preference_pairs

logger = logging.get_logger(__name__)

# File extension -> (datasets packaged builder, extra builder kwargs).
FILE_BUILDERS: dict[str, tuple[str, dict]] = {
    ".txt": ("text", {}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".parquet": ("parquet", {}),
}
_TEXT_EXTENSIONS = {".txt", ".json", ".jsonl", ".csv", ".tsv"}
_SPLIT_ALIASES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "dev", "val", "eval"),
    "test": ("test", "testing"),
}

# Canonical columns each data format needs; `None` marks an optional one.
FORMAT_COLUMNS: dict[str, dict[str, bool]] = {
    "text": {"text": True},
    "classification": {"text": True, "label": True},
    "instruction": {"instruction": True, "input": False, "output": True},
    "preference": {"prompt": False, "chosen": True, "rejected": True},
}


# ----------------------------------------------------------------------------------------------------------------
# Local files
# ----------------------------------------------------------------------------------------------------------------


def check_utf8(path: str | os.PathLike, chunk_size: int = 1 << 20) -> None:
    """
    Raise a `ValueError` naming the file and byte offset if `path` is not valid UTF-8.

    Args:
        path (`str` or `os.PathLike`): The file to check; read in chunks, so large files are fine.
        chunk_size (`int`, defaults to 1 MiB): Bytes read at a time.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            # The decoder holds back up to 3 bytes of a character cut by the previous chunk; errors count from them.
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                start = offset - pending + e.start
                raise DataError(
                    f"{path} is not valid UTF-8: byte 0x{e.object[e.start]:02x} at byte offset {start} "
                    f"({e.reason}); re-encode the file as UTF-8, or pass --encoding_errors replace to substitute "
                    "U+FFFD for bad bytes"
                ) from None
            if not chunk:
                return
            offset += len(chunk)


def _split_of_file(relative: Path) -> str:
    tokens = [t for part in relative.with_suffix("").parts for t in re.split(r"[^a-z0-9]+", part.lower()) if t]
    for split, aliases in _SPLIT_ALIASES.items():
        if any(token in aliases for token in tokens):
            return split
    return "train"


def _data_files(path: Path) -> tuple[str, dict[str, list[str]]]:
    """The builder and `{split: files}` for a local file or folder."""
    if path.is_file():
        files = [path]
        split_of = {path: "train"}
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in FILE_BUILDERS
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise DataError(
                f"no data files in folder {path}; supported extensions are {sorted(FILE_BUILDERS)} (hidden files "
                "are ignored)"
            )
        split_of = {p: _split_of_file(p.relative_to(path)) for p in files}
    extension = {p.suffix.lower() for p in files}
    unknown = extension - set(FILE_BUILDERS)
    if unknown:
        raise DataError(
            f"unsupported file type {sorted(unknown)} for {path}; supported extensions are {sorted(FILE_BUILDERS)}"
        )
    if len({"json" if e in (".json", ".jsonl") else e for e in extension}) > 1:
        raise DataError(f"folder {path} mixes file types {sorted(extension)}; keep one format per dataset folder")
    for p in files:
        if p.stat().st_size == 0:
            raise DataError(f"data file {p} is empty; remove it or point --dataset_name elsewhere")
    by_split: dict[str, list[str]] = {}
    for p in files:
        by_split.setdefault(split_of[p], []).append(str(p))
    return next(iter(extension)), by_split


def _load_local(path: Path, data_args: DataArguments) -> DatasetDict:
    extension, data_files = _data_files(path)
    builder, builder_kwargs = FILE_BUILDERS[extension]
    builder_kwargs = dict(builder_kwargs)
    if extension in _TEXT_EXTENSIONS:
        if data_args.encoding_errors == "strict":
            for files in data_files.values():
                for file in files:
                    check_utf8(file)
        else:
            if builder == "json":
                # The JSON builder hands raw bytes to pyarrow, which has no error handler: decode here instead.
                return _load_json_replacing(data_files)
            builder_kwargs["encoding_errors"] = data_args.encoding_errors
            if builder == "csv":
                builder_kwargs["encoding"] = "utf-8"
    if builder == "text":
        builder_kwargs["sample_by"] = data_args.text_sample_by
    # datasets logs an ERROR naming pyarrow's row within a chunk (not the file's line) before raising; the error
    # raised below replaces it.
    json_logger = logging.get_logger("datasets.packaged_modules.json.json")
    json_level = json_logger.level
    json_logger.setLevel(logging.CRITICAL)
    try:
        loaded = load_dataset(builder, data_files=data_files, **builder_kwargs)
    except Exception as e:  # datasets wraps parser errors in many types; name the files and the cause
        if builder == "json":
            # pyarrow counts rows of a chunk, not lines of the file: find the bad line ourselves and name it.
            for files in data_files.values():
                for file in files:
                    _read_json_rows(Path(file).read_text(encoding="utf-8"), file)
        cause = e.__cause__ or e
        raise DataError(
            f"could not read {path} as {extension[1:]}: {type(cause).__name__}: {cause}. Check the file's format "
            f"(JSON Lines needs one object per line; CSV needs a header row)"
        ) from e
    finally:
        json_logger.setLevel(json_level)
    if builder == "text" and data_args.text_sample_by == "paragraph":
        # Paragraphs keep the newlines around them; documents should not start or end with blank space.
        loaded = loaded.map(lambda b: {"text": [t.strip() for t in b["text"]]}, batched=True)
    return loaded


def _load_json_replacing(data_files: dict[str, list[str]]) -> DatasetDict:
    splits = {}
    for split, files in data_files.items():
        rows = []
        for file in files:
            text = Path(file).read_bytes().decode("utf-8", errors="replace")
            rows.extend(_read_json_rows(text, file))
        splits[split] = Dataset.from_list(rows)
    return DatasetDict(splits)


def _read_json_rows(text: str, file: str) -> list[dict]:
    """The objects of a JSON array or JSON Lines file; a bad line raises a `DataError` naming its line in the file."""
    import json

    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{file}, line {e.lineno}, column {e.colno}: invalid JSON ({e.msg}); fix the file"
            ) from None
        numbered = [(None, row) for row in rows] if isinstance(rows, list) else [(None, rows)]
    else:
        numbered = []
        # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{file}, line {number}, column {e.colno}: invalid JSON ({e.msg}); JSON Lines needs one complete "
                    "object per line: fix or remove that line"
                ) from None
    for number, row in numbered:
        if not isinstance(row, dict):
            where = f"line {number}" if number is not None else "the array"
            raise DataError(f'{file}, {where}: expected a JSON object ({{"column": value, ...}}), got {row!r:.40}')
    return [row for _, row in numbered]


def source_row(source: str, split: str, index: int) -> str:
    """
    Where row `index` of the source's split `split` is, for a message that names a bad row: the file and its line
    for local JSON Lines and CSV files (blank lines skipped, as the loader skips them), else the split and row.

    Args:
        source (`str`): `--dataset_name`: a local file or folder, or a Hub id.
        split (`str`): The split's name in the source.
        index (`int`): The row's index in that split, before any hold-out or filtering.

    Returns:
        `str`: e.g. `"data/pairs.jsonl, line 18"`, or `"org/name (split 'train', row 17)"`.
    """
    import csv

    fallback = f"{source} (split {split!r}, row {index})"
    path = Path(source).expanduser()
    if not path.exists():
        return fallback
    remaining = index
    for file in _data_files(path)[1].get(split, []):
        suffix = Path(file).suffix.lower()
        with open(file, encoding="utf-8", errors="replace", newline="") as f:
            if suffix in (".jsonl", ".json"):
                text = f.read()
                if text.lstrip().startswith("["):
                    return fallback  # a JSON array: its objects have no lines of their own
                lines = [number for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
            elif suffix == ".csv":
                reader = csv.reader(f)
                next(reader, None)  # the header
                lines, start = [], reader.line_num + 1
                for record in reader:  # a quoted field may span lines: a record starts after the previous one ends
                    if record:  # blank lines are skipped, as the loader skips them
                        lines.append(start)
                    start = reader.line_num + 1
            else:
                return fallback
        if remaining < len(lines):
            return f"{file}, line {lines[remaining]}"
        remaining -= len(lines)
    return fallback


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~"))
        or os.sep in name
        and not re.fullmatch(r"[\w.-]+/[\w.-]+", name)
        or Path(name).suffix.lower() in FILE_BUILDERS
    )


@contextmanager
def _hub_dataset_errors(data_args: DataArguments, doing: str, more_choices: str = "") -> Iterator[None]:
    """Any failure to reach a Hub dataset (offline, unknown id, missing config, ...) as one `DataError` that says what
    was tried and what `--dataset_name` takes; `doing` holds `{}` where the dataset's name goes."""
    try:
        yield
    except Exception as e:
        name = f"{data_args.dataset_name!r} (config {data_args.dataset_config_name!r})"
        choices = f"a Hub dataset id, a local file or folder ({', '.join(sorted(FILE_BUILDERS))})"
        raise DataError(
            f"could not {doing.format(name)}: {type(e).__name__}: {e}. --dataset_name takes {choices}"
            + (f", {more_choices}" if more_choices else "")
        ) from e


def load_raw_dataset(data_args: DataArguments) -> DatasetDict:
    """
    Load `data_args.dataset_name` (a Hub id or local file/folder) as it is, without renaming columns.

    Args:
        data_args (`DataArguments`): `dataset_name`, `dataset_config_name`, `encoding_errors`, `text_sample_by`.

    Returns:
        `DatasetDict`: the source's own splits (`train` for a single local file).
    """
    name = data_args.dataset_name
    if not name:
        raise DataError("no dataset given: pass --dataset_name (a Hub dataset id, a local file or folder, or pydocs)")
    path = Path(name).expanduser()
    if path.exists():
        return _load_local(path, data_args)
    if _looks_like_path(name):
        raise DataError(f"--dataset_name {name}: no such file or folder")
    with _hub_dataset_errors(
        data_args, "load dataset {} from the Hugging Face Hub", "or 'pydocs' for the bundled offline corpus"
    ):
        loaded = load_dataset(name, data_args.dataset_config_name)
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({data_args.dataset_train_split: loaded})
    return loaded


# ----------------------------------------------------------------------------------------------------------------
# Splits and columns
# ----------------------------------------------------------------------------------------------------------------


def _pick_splits(raw: DatasetDict, data_args: DataArguments, source: str) -> tuple[DatasetDict, dict[str, str]]:
    """`train` (and `validation`, `test` when the source has them) and each one's name in the source."""
    available = list(raw)
    train_name = data_args.dataset_train_split
    if train_name not in raw:
        raise DataError(
            f"split {train_name!r} not found in {source}; splits are {available}; pass --dataset_train_split <name>"
        )

    def find(requested: str | None, aliases: tuple[str, ...], flag: str) -> str | None:
        if requested is not None:
            if requested not in raw:
                raise DataError(f"split {requested!r} not found in {source}; splits are {available}; fix {flag}")
            return requested
        return next((a for a in aliases if a in raw and a != train_name), None)

    validation_name = find(
        data_args.dataset_validation_split, _SPLIT_ALIASES["validation"], "--dataset_validation_split"
    )
    test_name = find(data_args.dataset_test_split, _SPLIT_ALIASES["test"], "--dataset_test_split")
    names = {"train": train_name, "validation": validation_name, "test": test_name}
    names = {split: name for split, name in names.items() if name is not None}
    for split, name in names.items():
        if len(raw[name]) == 0:
            raise DataError(f"split {split!r} of {source} is empty")
    return DatasetDict({split: raw[name] for split, name in names.items()}), names


def _hold_out_validation(ds: DatasetDict, data_args: DataArguments, seed: int, source: str) -> DatasetDict:
    """Carve `validation_split_percentage` of train into `validation` when the source has none."""
    if "validation" in ds or data_args.validation_split_percentage == 0:
        return ds
    train = ds["train"]
    if len(train) < 2:
        raise DataError(
            f"{source} has {len(train)} training example(s), too few to hold out a validation split; add data or "
            "pass --validation_split_percentage 0"
        )
    test_size = data_args.validation_split_percentage / 100
    stratify = "label" if "label" in train.column_names else None
    try:
        held_out = train.train_test_split(test_size=test_size, seed=seed, stratify_by_column=stratify)
    except ValueError:  # too few examples of some class to stratify
        held_out = train.train_test_split(test_size=test_size, seed=seed)
    logger.info(
        f"{source} has no validation split: held out {len(held_out['test'])} of {len(train)} training examples "
        f"({data_args.validation_split_percentage}%)"
    )
    out = {"train": held_out["train"], "validation": held_out["test"]}
    if "test" in ds:
        out["test"] = ds["test"]
    return DatasetDict(out)


def _rename_columns(ds: DatasetDict, data_format: str, mapping: dict[str, str], source: str) -> DatasetDict:
    wanted = FORMAT_COLUMNS[data_format]
    if data_format == "instruction" and (
        "messages" in mapping
        or ("messages" in ds["train"].column_names and not {"instruction", "output"} & mapping.keys())
    ):
        wanted = {"messages": True}
    for canonical in mapping:
        if canonical not in wanted:
            logger.warning(f"--{COLUMN_FLAGS[canonical]} is ignored for the {data_format!r} data format")
    renamed = {}
    for split, split_ds in ds.items():
        columns = split_ds.column_names
        rename = {}
        for canonical, required in wanted.items():
            source_column = mapping.get(canonical, canonical)
            if source_column in columns:
                rename[source_column] = canonical
            elif canonical in mapping:
                raise DataError(
                    f"--{COLUMN_FLAGS[canonical]} {source_column}: column {source_column!r} not found in {source} "
                    f"(split {split!r}); columns are {columns}"
                )
            elif required:
                raise DataError(
                    f"column {canonical!r} not found in {source} (split {split!r}); columns are {columns}; pass "
                    f"--{COLUMN_FLAGS[canonical]} <name> to use one of them"
                    + ("; or give a 'messages' column (chat format)" if data_format == "instruction" else "")
                )
        # Drop the canonical names that are about to be overwritten by a mapped column, then keep only ours.
        clashing = [c for c in rename.values() if c in columns and c not in rename]
        split_ds = split_ds.remove_columns(clashing)
        split_ds = split_ds.rename_columns({k: v for k, v in rename.items() if k != v})
        extra = [c for c in split_ds.column_names if c not in wanted]
        if extra:
            logger.info(
                f"{source} (split {split!r}): dropping columns {extra} not used by the {data_format!r} data format"
            )
            split_ds = split_ds.remove_columns(extra)
        renamed[split] = split_ds
    return DatasetDict(renamed)


def _check_strings(ds: DatasetDict, columns: list[str], source: str) -> None:
    for split, split_ds in ds.items():
        for column in columns:
            if column not in split_ds.column_names:
                continue
            feature = split_ds.features[column]
            if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
                raise DataError(
                    f"column {column!r} of {source} (split {split!r}) holds {feature}, not text; map a text column "
                    f"with --{COLUMN_FLAGS[column]}"
                )


def _drop_empty(ds: DatasetDict, columns: list[str], source: str, num_proc: int | None) -> DatasetDict:
    """Drop rows whose required text is missing or blank, and say how many."""

    def keep(batch):
        return [
            all(isinstance(batch[c][i], str) and batch[c][i].strip() for c in columns)
            for i in range(len(batch[columns[0]]))
        ]

    out = {}
    for split, split_ds in ds.items():
        kept = split_ds.filter(keep, batched=True, num_proc=num_proc, desc=f"Checking {split} for empty text")
        dropped = len(split_ds) - len(kept)
        if dropped:
            logger.warning(
                f"{source} (split {split!r}): dropped {dropped} of {len(split_ds)} examples with empty {columns}"
            )
        if len(kept) == 0:
            raise DataError(f"split {split!r} of {source} has no non-empty {columns}")
        out[split] = kept
    return DatasetDict(out)


def _encode_labels(ds: DatasetDict, class_names: list[str] | None, source: str, num_proc: int | None) -> DatasetDict:
    feature = ds["train"].features["label"]
    if isinstance(feature, ClassLabel) and class_names is None:
        names = list(feature.names)
    elif class_names is not None:
        names = list(class_names)
    else:
        values = set(ds["train"].unique("label"))
        if None in values:
            raise DataError(f"column 'label' of {source} (split 'train') has missing values")
        if all(isinstance(v, str) for v in values):
            names = sorted(values)
        elif all(isinstance(v, (int, bool)) for v in values):
            if min(values) < 0:
                raise DataError(
                    f"label {min(values)} in {source} (split 'train') is negative; labels must be 0..N-1, class "
                    "names, or pass --class_names"
                )
            names = [str(i) for i in range(int(max(values)) + 1)]
        else:
            raise DataError(
                f"column 'label' of {source} holds {sorted(map(repr, values))[:5]}...; classification needs integer "
                "ids or class-name strings"
            )
    if class_names is not None and (len(names) < 2 or len(set(names)) != len(names)):
        problem = "names a single class" if len(names) < 2 else "repeats a class name"
        raise UsageError(
            f"--class_names {' '.join(names)} {problem}; pass every class once, at least two, in label-id order "
            "(e.g. --class_names ham spam)."
        )
    if len(names) < 2:
        raise DataError(f"{source} has a single class {names}; classification needs at least two (see --class_names)")
    index = {name: i for i, name in enumerate(names)}
    out = {}
    for split, split_ds in ds.items():
        split_feature = split_ds.features["label"]
        if isinstance(split_feature, ClassLabel):
            split_ds = (
                split_ds.cast_column("label", Value("int64")) if list(split_feature.names) != names else split_ds
            )
            if list(split_feature.names) != names:
                # Remap ids through their names onto our class order.
                old = list(split_feature.names)
                split_ds = split_ds.map(
                    lambda b, old=old: {"label": [index.get(old[v], -2) if v >= 0 else v for v in b["label"]]},
                    batched=True,
                    num_proc=num_proc,
                )
        values = split_ds.unique("label")
        bad = [
            v
            for v in values
            if not (
                (isinstance(v, str) and v in index)
                or (isinstance(v, (int, bool)) and not isinstance(v, str) and 0 <= v < len(names))
            )
        ]
        if bad:
            if split == "test" and all(v == -1 for v in bad) and len(values) == 1:
                logger.warning(f"split 'test' of {source} is unlabeled (every label is -1): leaving it out")
                continue
            raise DataError(
                f"labels {sorted(bad, key=repr)[:10]} in {source} (split {split!r}) are outside the class set "
                f"{names}; fix the data or pass --class_names with every class"
            )
        if any(isinstance(v, str) for v in values):
            split_ds = split_ds.map(
                lambda b: {"label": [index[v] for v in b["label"]]}, batched=True, num_proc=num_proc
            )
        split_ds = split_ds.cast_column("label", ClassLabel(names=names))
        out[split] = split_ds
    return DatasetDict(out)


def _normalize(
    ds: DatasetDict, data_format: str, data_args: DataArguments, source: str, source_splits: dict[str, str]
) -> DatasetDict:
    num_proc = data_args.preprocessing_num_workers
    ds = _rename_columns(ds, data_format, data_args.column_mapping(), source)
    columns = ds["train"].column_names
    if data_format == "text":
        _check_strings(ds, ["text"], source)
        ds = _drop_empty(ds, ["text"], source, num_proc)
    elif data_format == "classification":
        _check_strings(ds, ["text"], source)
        ds = _drop_empty(ds, ["text"], source, num_proc)
        ds = _encode_labels(ds, data_args.class_names, source, num_proc)
    elif data_format == "instruction" and "messages" not in columns:
        _check_strings(ds, ["instruction", "output"], source)
        if "input" not in columns:
            ds = DatasetDict({s: d.add_column("input", [""] * len(d)) for s, d in ds.items()})
        else:
            ds = ds.map(lambda b: {"input": [x or "" for x in b["input"]]}, batched=True, num_proc=num_proc)
        ds = _drop_empty(ds, ["instruction", "output"], source, num_proc)
        ds = ds.select_columns(["instruction", "input", "output"])
    elif data_format == "preference":
        # Rows are still in the source's order, so a bad pair is named by its file and line.
        check_preference_pairs(ds, source, locate=lambda split, index: source_row(source, source_splits[split], index))
        if "chosen" in columns and isinstance(ds["train"].features["chosen"], Value):
            _check_strings(ds, [c for c in ("prompt", "chosen", "rejected") if c in columns], source)
            ds = _drop_empty(ds, ["chosen", "rejected"], source, num_proc)
    return ds


def _limit(ds: DatasetDict, data_args: DataArguments) -> DatasetDict:
    out = {}
    for split, split_ds in ds.items():
        limit = data_args.max_train_samples if split == "train" else data_args.max_eval_samples
        out[split] = split_ds.select(range(min(limit, len(split_ds)))) if limit is not None else split_ds
    return DatasetDict(out)


def load_dataset_from_args(data_args: DataArguments, data_format: str, *, seed: int = 42) -> DatasetDict:
    """
    Load `data_args.dataset_name` in `data_format`, with the format's canonical columns and
    `train`/`validation`(/`test`).

    Args:
        data_args (`DataArguments`): Source, split names, column flags and limits.
        data_format (`str`): `"text"`, `"classification"`, `"instruction"` or `"preference"` (the data formats).
        seed (`int`, defaults to 42): Seed of the validation hold-out when the source has no validation split.

    Returns:
        `DatasetDict`: `train` and `validation` (unless `--validation_split_percentage 0` and the source has none),
        plus `test` when the source has one. Columns: text `text`; classification `text`, `label`
        (`ClassLabel`); instruction `instruction`, `input`, `output` (or `messages`); preference `chosen`,
        `rejected` and `prompt` if present. Bad input raises a `ValueError` naming the file/column/flag to fix.
    """
    if data_format not in DATA_FORMATS:
        raise DataError(f"unknown data format {data_format!r}; choose one of {list(DATA_FORMATS)}")
    if data_args.dataset_name == "pydocs":
        if data_args.column_mapping():
            logger.warning("--*_column flags are ignored for pydocs, whose columns are already canonical")
        ds = load_pydocs(data_format).remove_columns("source")
        return _limit(ds, data_args)
    source = data_args.dataset_name
    if data_format == "preference":
        if is_rankings_file(source):
            # `hf-llm rank` output: each ranking expanded to its preference pairs, split by prompt.

            pairs = rankings_dataset(source, data_args.validation_split_percentage / 100, seed)
            check_preference_pairs(pairs, source)
            return _limit(pairs, data_args)
    raw = load_raw_dataset(data_args)
    ds, source_splits = _pick_splits(raw, data_args, source)
    ds = _normalize(ds, data_format, data_args, source, source_splits)
    ds = _hold_out_validation(ds, data_args, seed, source)
    return _limit(ds, data_args)


# ----------------------------------------------------------------------------------------------------------------
# Streaming (--streaming): documents read as they are needed, never downloaded or prepared in full
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TextStream:
    """
    A text dataset opened for streaming, as [`load_text_stream`] returns it: which splits to read and how to open them.

    Attributes:
        source (`str`): `--dataset_name`.
        splits (`dict[str, str]`): `"train"` (and `"validation"` when the source has one) -> the source's split name.
        hold_out_percentage (`float`): Without a validation split, the percent of training documents held out for
            validation ([`hf_llm.data.packing.is_held_out`]); 0 with one.
        text_column (`str`): The source column holding the text (`--text_column`, default `text`).
        data_files (`dict[str, list[str]]`): The files behind each split; Hub files are pinned to the commit read.
    """

    source: str
    splits: dict[str, str]
    hold_out_percentage: float
    text_column: str
    data_files: dict[str, list[str]]
    open_split: Callable[[str], IterableDataset] = dataclasses.field(repr=False)

    def documents(self, split: str) -> IterableDataset:
        """
        A new `datasets.IterableDataset` over the `"train"` or `"validation"` split, in source order. Every call
        returns an independent one: a stream keeps its position, so two readers must never share one.
        """
        if split not in self.splits:
            raise KeyError(f"{self.source} has no {split!r} split to stream; it has {list(self.splits)}")
        return self.open_split(self.splits[split])

    def fingerprint(self, split: str | None = None) -> str:
        """A short fingerprint of the files behind one split (or all): names, and size and mtime for local files."""
        files = self.data_files if split is None else {split: self.data_files[split]}
        parts = []
        for name, paths in sorted(files.items()):
            for path in paths:
                stat = os.stat(path) if os.path.isfile(path) else None
                parts.append(f"{name}:{path}:{stat.st_size}:{stat.st_mtime_ns}" if stat else f"{name}:{path}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_text_stream(data_args: DataArguments) -> TextStream:
    """
    Open `data_args.dataset_name` (a Hub id or a local file or folder) for streaming, as `datasets.load_dataset(...,
    streaming=True)` does: nothing is downloaded or prepared ahead, documents are read as they are needed. The bundled
    `pydocs` corpus, small and in memory, is streamed from memory (`Dataset.to_iterable_dataset`).

    Splits are picked as for an in-memory load (`--dataset_train_split`, `--dataset_validation_split` or a split named
    validation/valid/dev/val); without a validation split, `--validation_split_percentage` of the training documents
    are held out by content hash (see [`TextStream`]).

    Args:
        data_args ([`DataArguments`]): `dataset_name`, `dataset_config_name`, the split flags, `text_column`,
            `text_sample_by`, `encoding_errors`.

    Returns:
        [`TextStream`]
    """
    name = data_args.dataset_name
    if not name:
        raise DataError("no dataset given: pass --dataset_name (a Hub dataset id, a local file or folder, or pydocs)")
    if name == "pydocs":
        return _pydocs_stream(data_args)
    path = Path(name).expanduser()
    if path.exists():
        extension, data_files = _data_files(path)
        builder_name, builder_kwargs = FILE_BUILDERS[extension]
        builder_kwargs = dict(builder_kwargs)
        if builder_name == "text":
            builder_kwargs["sample_by"] = data_args.text_sample_by
        if builder_name in ("text", "csv") and data_args.encoding_errors != "strict":
            builder_kwargs["encoding_errors"] = data_args.encoding_errors
        builder = load_dataset_builder(builder_name, data_files=data_files, **builder_kwargs)
    elif _looks_like_path(name):
        raise DataError(f"--dataset_name {name}: no such file or folder")
    else:
        with _hub_dataset_errors(data_args, "open dataset {} on the Hugging Face Hub for streaming"):
            builder = load_dataset_builder(name, data_args.dataset_config_name)
    available = {split: [str(f) for f in files] for split, files in (builder.config.data_files or {}).items()}
    train_split = data_args.dataset_train_split
    if train_split not in available:
        raise DataError(
            f"split {train_split!r} not found in {name}; splits are {list(available)}; pass --dataset_train_split "
            "<name>"
        )
    validation_split = data_args.dataset_validation_split
    if validation_split is not None and validation_split not in available:
        raise DataError(
            f"split {validation_split!r} not found in {name}; splits are {list(available)}; fix "
            "--dataset_validation_split"
        )
    if validation_split is None:
        aliases = _SPLIT_ALIASES["validation"]
        validation_split = next((a for a in aliases if a in available and a != train_split), None)
    splits = {"train": train_split, **({"validation": validation_split} if validation_split else {})}
    strip_paragraphs = builder.name == "text" and data_args.text_sample_by == "paragraph"

    def open_split(split: str) -> IterableDataset:
        documents = builder.as_streaming_dataset(split=split)
        if strip_paragraphs:
            # As for an in-memory load: paragraphs keep the newlines around them, documents should not.
            documents = documents.map(lambda example: {"text": example["text"].strip()})
        return documents

    text_column = data_args.text_column or "text"
    columns = builder.info.features and list(builder.info.features)
    if columns and text_column not in columns:
        flag = f"--text_column {text_column}: column" if data_args.text_column else "column"
        raise DataError(
            f"{flag} {text_column!r} not found in {name} (split {train_split!r}); columns are {columns}; pass "
            "--text_column <name>"
        )
    if validation_split is None:
        logger.info(
            f"{name} has no validation split: {data_args.validation_split_percentage}% of the training documents "
            "(chosen by content hash) are held out for validation"
        )
    return TextStream(
        source=name,
        splits=splits,
        hold_out_percentage=0.0 if validation_split else data_args.validation_split_percentage,
        text_column=text_column,
        data_files={canonical: available[split] for canonical, split in splits.items()},
        open_split=open_split,
    )


def _pydocs_stream(data_args: DataArguments) -> TextStream:
    # The bundled corpus is small and loaded in memory; streaming it keeps every other path (pipelines, recipes that
    # stream) working on the offline default dataset.
    corpus = load_pydocs("text").remove_columns("source")
    splits = {split: split for split in ("train", "validation") if split in corpus}
    tag = f"pydocs@{pydocs_fingerprint()}"
    return TextStream(
        source="pydocs",
        splits=splits,
        hold_out_percentage=0.0 if "validation" in splits else data_args.validation_split_percentage,
        text_column="text",
        data_files={split: [tag] for split in splits},
        open_split=lambda split: corpus[split].to_iterable_dataset(num_shards=min(8, len(corpus[split]))),
    )


def dataset_fingerprint(dataset: Dataset | DatasetDict) -> str:
    """
    Return a short fingerprint of a dataset's content and processing history, to record next to an artifact.

    Built from `datasets`' own fingerprints (which track the data files and every `map`/`filter`), split by split;
    the `pydocs` splits carry fingerprints derived from the corpus content, so they agree across machines.
    """
    import hashlib

    parts = dataset.items() if isinstance(dataset, DatasetDict) else [("", dataset)]
    key = ";".join(f"{split}={ds._fingerprint}" for split, ds in sorted(parts))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def save_data_fingerprint(
    output_dir: str | os.PathLike, data_args: DataArguments, dataset: DatasetDict | TextStream
) -> str:
    """
    Write `data_fingerprint.json` next to an artifact: the dataset flags and each split's size and fingerprint.

    Args:
        output_dir (`str` or `os.PathLike`): The artifact's directory (created if missing).
        data_args ([`DataArguments`]): The flags the data was loaded with.
        dataset (`DatasetDict` or [`TextStream`]): The splits the artifact was made from; for a stream, the files
            behind each split (a stream has no row count).

    Returns:
        `str`: Path of the written file.
    """
    import json

    record = {"dataset_name": data_args.dataset_name, "dataset_config_name": data_args.dataset_config_name}
    if isinstance(dataset, TextStream):
        record["streaming"] = True
        record["fingerprint"] = dataset.fingerprint()
        record["splits"] = {
            split: {"num_rows": None, "data_files": files, "fingerprint": dataset.fingerprint(split)}
            for split, files in dataset.data_files.items()
        }
    else:
        record["fingerprint"] = dataset_fingerprint(dataset)
        record["splits"] = {
            split: {"num_rows": len(ds), "fingerprint": dataset_fingerprint(ds)} for split, ds in dataset.items()
        }
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "data_fingerprint.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return path


def load_formatted_dataset(dataset_name: str, data_format: str, *, seed: int = 42, **data_args_fields) -> DatasetDict:
    """
    Load a dataset for one data_format: `load_dataset_from_args(DataArguments(dataset_name=..., **data_args_fields))`.

    Args:
        dataset_name (`str`): A Hub dataset id, a local file or folder, or `"pydocs"`.
        data_format (`str`): `"text"`, `"classification"`, `"instruction"` or `"preference"` (the data formats).
        seed (`int`, defaults to 42): Seed of the validation hold-out.
        **data_args_fields: Any `DataArguments` field, e.g. `text_column="review"`, `dataset_config_name="plain_text"`.

    Returns:
        `DatasetDict`: see `load_dataset_from_args`.

    Example:

    ```python
    >>> from hf_llm.data import load_formatted_dataset
    >>> ds = load_formatted_dataset("reviews.csv", "classification", text_column="review", label_column="stars")
    ```
    """
    valid = {f.name for f in dataclasses.fields(DataArguments)} - {"dataset_name"}
    unknown = sorted(set(data_args_fields) - valid)
    if unknown:
        raise TypeError(
            f"load_formatted_dataset got unknown options {unknown}; valid ones are the DataArguments fields "
            f"{sorted(valid)}"
        )
    data_args = DataArguments(dataset_name=dataset_name, **data_args_fields)
    return load_dataset_from_args(data_args, data_format, seed=seed)
