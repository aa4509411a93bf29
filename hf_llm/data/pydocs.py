"""`pydocs`: the bundled offline corpus, built from the running Python's own documentation.

Sources, read from the interpreter that runs hf_llm (so nothing is downloaded):

- `pydoc_data.topics`: the language-reference topics behind `help("with")` (about 80 documents);
- the docstrings of about 200 standard-library modules, with their classes, functions and methods.

Each module belongs to one coarse *area* of the standard library (`STDLIB_AREAS`); the areas are the classes of the
classification format. Modules in `GENERAL_MODULES` feed the other formats only. Splits are made by *unit* (a module or
a topic), never by item, so nothing a model sees in `train` comes from a module or topic that is in `test`: within
each area the units, largest first, go to whichever split is furthest below its share (80/10/10 of characters).
Every text is also deduplicated across the whole corpus before splitting.

The four data-format datasets are built once per Python version and builder version, saved with `save_to_disk` under
`<cache>/pydocs/<key>/` (`HF_LLM_CACHE` overrides the cache root, which defaults to `$XDG_CACHE_HOME/hf_llm` or
`~/.cache/hf_llm`) and written atomically; `manifest.json` there records the content fingerprint and sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk
from datasets.utils import logging as datasets_logging
from transformers.utils import logging

from ..stages import DATA_FORMATS
from ._pydocs_extract import GENERAL_MODULES, STDLIB_AREAS, _summary
from .errors import DataError

logger = logging.get_logger(__name__)

# Bump whenever the records produced below change, so old caches are not reused.
BUILDER_VERSION = "6"

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}

MIN_SUMMARY_CHARS = 20
MAX_TOPIC_ANSWER_CHARS = 800


def hf_llm_cache_dir() -> Path:
    """
    Return the root of hf_llm's on-disk cache: `$HF_LLM_CACHE`, else `$XDG_CACHE_HOME/hf_llm`, else
    `~/.cache/hf_llm`.
    """
    if os.environ.get("HF_LLM_CACHE"):
        return Path(os.environ["HF_LLM_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hf_llm"


def _extract_units() -> tuple[list[dict], list[str]]:
    """Run `_pydocs_extract.py` in a fresh, isolated interpreter (see its docstring for why)."""
    script = Path(__file__).with_name("_pydocs_extract.py")
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(script)], capture_output=True, text=True, encoding="utf-8", check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"extracting the pydocs corpus failed ({script}):\n{result.stderr[-2000:]}")
    extracted = json.loads(result.stdout)
    for unit in extracted["units"]:
        if "items" in unit:
            unit["items"] = [tuple(item) for item in unit["items"]]
    return extracted["units"], extracted["missing"]


def _unit_chars(unit: dict) -> int:
    return len(unit["text"]) if "text" in unit else sum(len(doc) for _, doc in unit["items"])


def _assign_splits(units: list[dict]) -> dict[str, str]:
    """Unit name -> split: within each area, largest unit first, to the split furthest below its share."""
    assignment = {}
    for area in sorted({unit["area"] for unit in units}):
        members = sorted((u for u in units if u["area"] == area), key=lambda u: (-_unit_chars(u), u["name"]))
        filled = dict.fromkeys(SPLITS, 0)
        for unit in members:
            split = min(SPLITS, key=lambda s: (filled[s] / SPLIT_FRACTIONS[s], SPLITS.index(s)))
            assignment[unit["name"]] = split
            filled[split] += _unit_chars(unit)
    return assignment


# ----------------------------------------------------------------------------------------------------------------
# Task records
# ----------------------------------------------------------------------------------------------------------------


def _pretrain_records(unit: dict) -> list[dict]:
    if "text" in unit:
        return [{"text": unit["text"], "source": unit["name"]}]
    parts = [f"{qualname}\n\n{doc}" for qualname, doc in unit["items"]]
    return [{"text": "\n\n\n".join(parts), "source": unit["name"]}]


def _classification_records(unit: dict) -> list[dict]:
    if unit["area"] not in STDLIB_AREAS:
        return []
    # The text is the docstring alone: the qualified name would give the module (and so the class) away.
    return [{"text": doc, "label": unit["area"], "source": qualname} for qualname, doc in unit["items"]]


def _topic_opening(body: str) -> str:
    answer = ""
    for paragraph in body.split("\n\n"):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        if answer and len(answer) + len(paragraph) > MAX_TOPIC_ANSWER_CHARS:
            break
        answer = f"{answer}\n\n{paragraph}" if answer else paragraph
    return answer[: MAX_TOPIC_ANSWER_CHARS * 2]


def _instruction_records(unit: dict) -> list[dict]:
    if "text" in unit:
        title = unit["title"].replace('"', "`")
        answer = _topic_opening(unit["body"])
        if len(answer) < MIN_SUMMARY_CHARS:
            return []
        return [
            {
                "instruction": f"Explain {title[0].lower() + title[1:]}.",
                "input": "",
                "output": answer,
                "source": unit["name"],
            }
        ]
    records = []
    for qualname, doc in unit["items"]:
        summary = _summary(doc)
        if len(summary) < MIN_SUMMARY_CHARS:
            continue
        body = doc.split("\n\n", 1)[1].strip() if "\n\n" in doc else ""
        if qualname == unit["name"]:
            instruction, input_text = f"What is the `{qualname}` module for?", ""
        elif len(body) >= 80 and int(hashlib.sha256(qualname.encode()).hexdigest(), 16) % 2 == 0:
            # Half of the items with a body ask for the summary of that body, so `input` is used too.
            instruction = f"Write the one-line summary of this documentation of `{qualname}`."
            input_text = body
        else:
            instruction, input_text = f"What does `{qualname}` do?", ""
        records.append({"instruction": instruction, "input": input_text, "output": summary, "source": qualname})
    return records


#: What is wrong with each pair's rejected answer, in turn: the failures of a small language model's answers. The
#: `tiny` reward model learns cut-off copies, loops and shuffled copies (0.88, 0.82 and 0.66 test accuracy) but hardly
#: another item's answer (0.55; the SFT model itself gives a fluent answer to a different question the same
#: likelihood as the right one), so pydocs' pairwise accuracy is reported per kind (the `rejected_kind` column).
REJECTED_KINDS = ("other_answer", "shuffled", "repetitive", "truncated")


def _shuffled(answer: str, rng: random.Random) -> str:
    """The first half kept, then half of the rest in a random order: incoherent."""
    words = answer.split()
    if len(words) < 4:
        return answer[::-1]
    cut = max(2, len(words) // 2)
    rest = words[cut:]
    rng.shuffle(rest)
    return " ".join(words[:cut] + rest[: max(1, len(rest) // 2)])


def _repetitive(answer: str, rng: random.Random) -> str:
    """The opening, then a short phrase of it looped 4 to 10 times: the degenerate loop of greedy decoding."""
    words = answer.rstrip(".").split()
    if len(words) < 3:
        return " ".join([answer.rstrip(".")] * 4) + "."
    start = rng.randrange(1, len(words) - 1)
    phrase = words[start : start + rng.randint(2, 4)]
    return " ".join(words[:start] + phrase * rng.randint(4, 10)).rstrip(".") + "."


def _truncated(answer: str, rng: random.Random) -> str:
    """Cut off mid-sentence (a response that ran out of tokens)."""
    words = answer.split()
    if len(words) < 4:
        return " ".join(words[:-1]) or answer[: len(answer) // 2]
    return " ".join(words[: rng.randint(2, max(2, len(words) * 2 // 3))]).rstrip(".,;:")


def _preference_records(instruction_records: list[dict], seed: int) -> list[dict]:
    """Chosen = the item's answer; rejected = each of `REJECTED_KINDS` in turn (its kind in `rejected_kind`)."""
    rng = random.Random(seed)
    records = []
    n = len(instruction_records)
    for i, record in enumerate(instruction_records):
        prompt = record["instruction"] + (f"\n\n{record['input']}" if record["input"] else "")
        chosen = record["output"]
        kind = REJECTED_KINDS[i % len(REJECTED_KINDS)]
        rejected = None
        if kind == "other_answer" and n > 1:
            for _ in range(10):
                other = instruction_records[rng.randrange(n)]["output"]
                if other != chosen:
                    rejected = other
                    break
        elif kind == "repetitive":
            rejected = _repetitive(chosen, rng)
        elif kind == "truncated":
            rejected = _truncated(chosen, rng)
        if rejected is None:
            kind, rejected = "shuffled", _shuffled(chosen, rng)
        if rejected == chosen:
            continue
        pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        records.append({**pair, "rejected_kind": kind, "source": record["source"]})
    return records


def _dedupe(records: list[dict], keys: tuple[str, ...], seen: dict[str, set]) -> list[dict]:
    kept = []
    for record in records:
        if any(record[k] in seen[k] for k in keys):
            continue
        for k in keys:
            seen[k].add(record[k])
        kept.append(record)
    return kept


def _features(data_format: str) -> Features:
    if data_format == "text":
        return Features({"text": Value("string"), "source": Value("string")})
    if data_format == "classification":
        return Features(
            {"text": Value("string"), "label": ClassLabel(names=list(STDLIB_AREAS)), "source": Value("string")}
        )
    if data_format == "instruction":
        return Features({k: Value("string") for k in ("instruction", "input", "output", "source")})
    return Features({k: Value("string") for k in ("prompt", "chosen", "rejected", "rejected_kind", "source")})


def build_pydocs_records() -> tuple[dict[str, dict[str, list[dict]]], dict]:
    """
    Build every data format's records from the running interpreter's documentation.

    Returns:
        `tuple(dict, dict)`: `records[data_format][split]` (lists of dicts) and a manifest with the content
        fingerprint,
        the unit-to-split assignment and the sizes.
    """
    units, missing = _extract_units()
    assignment = _assign_splits(units)
    records = {
        data_format: {split: [] for split in SPLITS} for data_format in ("text", "classification", "instruction")
    }
    seen = {k: set() for k in ("instruction", "output")}
    for unit in units:
        split = assignment[unit["name"]]
        records["text"][split] += _pretrain_records(unit)
        records["classification"][split] += _classification_records(unit)
        records["instruction"][split] += _dedupe(_instruction_records(unit), ("instruction", "output"), seen)
    records["preference"] = {
        split: _preference_records(records["instruction"][split], seed=i) for i, split in enumerate(SPLITS)
    }
    # Units arrive module by module (so grouped by class); a fixed shuffle per split makes any prefix, such as
    # --max_train_samples or --max_eval_samples, a fair sample.
    for data_format, by_split in records.items():
        for split, rows in by_split.items():
            random.Random(f"{data_format}/{split}").shuffle(rows)
    label_ids = {name: i for i, name in enumerate(STDLIB_AREAS)}
    for split in SPLITS:
        for record in records["classification"][split]:
            record["label"] = label_ids[record["label"]]

    digest = hashlib.sha256(json.dumps(records, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    sizes = {
        data_format: {split: len(rows) for split, rows in by_split.items()}
        for data_format, by_split in records.items()
    }
    class_counts = {
        split: {name: sum(r["label"] == i for r in records["classification"][split]) for name, i in label_ids.items()}
        for split in SPLITS
    }
    manifest = {
        "name": "pydocs",
        "fingerprint": digest[:16],
        "builder_version": BUILDER_VERSION,
        "python_version": sys.version.split()[0],
        "pretrain_characters": sum(len(r["text"]) for rows in records["text"].values() for r in rows),
        "sizes": sizes,
        "class_names": list(STDLIB_AREAS),
        "class_counts": class_counts,
        "missing_modules": missing,
        "split_of_unit": dict(sorted(assignment.items())),
    }
    return records, manifest


def _cache_key() -> str:
    plan = {
        "builder_version": BUILDER_VERSION,
        "python": sys.version,
        "areas": STDLIB_AREAS,
        "general": GENERAL_MODULES,
    }
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def pydocs_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """
    Build the pydocs corpus if it is not cached yet, and return its directory.

    Args:
        cache_dir (`str` or `os.PathLike`, *optional*):
            Cache root; defaults to `hf_llm_cache_dir()`.

    Returns:
        `Path`: `<cache_dir>/pydocs/<key>`, holding `manifest.json` and one `save_to_disk` folder per data format.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else hf_llm_cache_dir()
    final = root / "pydocs" / _cache_key()
    if (final / "manifest.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    logger.info(f"Building the pydocs corpus in {final}")
    records, manifest = build_pydocs_records()
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    bars_were_enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        for data_format, by_split in records.items():
            splits = {}
            for split, rows in by_split.items():
                splits[split] = Dataset.from_list(rows, features=_features(data_format))
                # A content-derived fingerprint (instead of a random one) makes `dataset_fingerprint` and the
                # `map` cache agree across machines that build the same corpus.
                key = f"pydocs/{manifest['fingerprint']}/{data_format}/{split}"
                splits[split]._fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
            DatasetDict(splits).save_to_disk(str(tmp / data_format))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first: its copy is identical, keep it.
            if not (final / "manifest.json").is_file():
                raise
    finally:
        if bars_were_enabled:
            datasets_logging.enable_progress_bar()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def pydocs_manifest(cache_dir: str | os.PathLike | None = None) -> dict:
    """Return the manifest of the pydocs corpus (fingerprint, sizes, class counts, split of every unit)."""
    return json.loads((pydocs_dir(cache_dir) / "manifest.json").read_text())


def pydocs_fingerprint(cache_dir: str | os.PathLike | None = None) -> str:
    """Return the content fingerprint of the pydocs corpus (16 hex digits of a SHA-256 over every record)."""
    return pydocs_manifest(cache_dir)["fingerprint"]


def load_pydocs(data_format: str, cache_dir: str | os.PathLike | None = None) -> DatasetDict:
    """
    Load the bundled offline `pydocs` corpus in one data format.

    Args:
        data_format (`str`):
            `"text"` (`text`), `"classification"` (`text`, `label` as a `ClassLabel` over the areas of the
            standard library), `"instruction"` (`instruction`, `input`, `output`) or `"preference"` (`prompt`,
            `chosen`, `rejected`, `rejected_kind`: what is wrong with the rejected answer, one of
            `REJECTED_KINDS`). Every format also has a `source` column (module, qualified name or topic).
        cache_dir (`str` or `os.PathLike`, *optional*):
            Cache root; defaults to `$HF_LLM_CACHE` or `~/.cache/hf_llm`.

    Returns:
        `DatasetDict`: `train`, `validation` and `test` splits, split by module or topic (no leakage).

    Example:

    ```python
    >>> from hf_llm.data import load_pydocs
    >>> ds = load_pydocs("classification")
    >>> ds["train"].features["label"].names[:2]
    ['text_processing', 'files_and_os']
    ```
    """
    data_formats = DATA_FORMATS
    if data_format not in data_formats:
        raise DataError(f"unknown data format {data_format!r} for pydocs; choose one of {list(data_formats)}")
    return load_from_disk(str(pydocs_dir(cache_dir) / data_format))
