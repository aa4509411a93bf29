"""The rankings file: one JSON object per line, appended, flushed and fsynced as each ranking is submitted.

A record keeps everything needed to rebuild preference pairs and to trust them later: the prompt (as the person
read it and as the model saw it), the answers in the order shown, the ranks given, the labeler, the model and the
decoding settings, and the time. Ranks are 1 for the best answer; equal ranks are ties.

```json
{"schema": "hf_llm.rankings/v1", "prompt_id": "3f2a...", "prompt": "Explain the with statement.",
 "formatted_prompt": "Below is an instruction ...### Response:\\n", "chat_template": true,
 "answers": ["It manages a context.", "..."], "ranks": [1, 2], "verdict": "ranked", "labeler": "alice",
 "model_name_or_path": "outputs/sft", "generation": {"temperature": 0.8, ...}, "time": "2026-11-23T10:00:00+00:00"}
```

`verdict` is one of `VERDICTS`: `ranked` (every answer ordered), `best_worst` (only the best and the worst picked;
the others share the middle rank), `tie` (all equally good), `all_bad` (all equally bad) or `skipped` (no ranks).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from transformers.utils import logging

from hf_llm.errors import UsageError

logger = logging.get_logger(__name__)

SCHEMA = "hf_llm.rankings/v1"
VERDICTS = ("ranked", "best_worst", "tie", "all_bad", "skipped")
REQUIRED_FIELDS = ("prompt_id", "prompt", "answers", "ranks", "verdict", "labeler")


def prompt_id(prompt: str) -> str:
    """A stable id for a prompt (its text's SHA-256, shortened): resume and agreement match prompts by it."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def normalize_ranks(ranks: list[int | None]) -> tuple[list[int], str]:
    """Check a labeler's ranks and return them dense (1, 2, ...) with the verdict they amount to.

    Every answer ranked gives `ranked` (equal ranks are ties). Only a best (rank 1) and a worst (the largest rank)
    picked, the rest left blank, gives `best_worst`: the blank answers sit between the two, sharing one rank.

    Raises:
        ValueError: when ranks are missing in any other pattern, or are not positive integers.
    """
    given = [r for r in ranks if r is not None]
    if any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in given):
        raise UsageError(f"ranks must be positive integers (1 = best), got {ranks}")
    if len(ranks) < 2:
        raise UsageError(f"ranking needs at least two answers, got {len(ranks)}")
    if len(given) == len(ranks):
        order = sorted(set(given))
        return [order.index(r) + 1 for r in ranks], "ranked"
    if len(given) == 2 and given[0] != given[1]:
        best, worst = min(given), max(given)
        dense = [1 if r == best else 3 if r == worst else 2 for r in ranks]
        return dense, "best_worst"
    raise UsageError(
        f"ranks {['-' if r is None else r for r in ranks]}: give every answer a rank (1 = best; equal ranks are "
        "ties), or pick only the best and the worst, or use 'Tie', 'All bad' or 'Skip'."
    )


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append one record as a JSON line, then flush and fsync: once this returns, a crash cannot lose it.

    One `os.write` of the whole line on an `O_APPEND` descriptor, so two labelers appending to the same local file
    never interleave within a line. A torn last line (a crash mid-write; that record was never acknowledged) is cut
    off first, so the file stays valid JSON Lines.
    """
    record = {"schema": SCHEMA, **record}
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            content = os.pread(fd, size, 0)
            keep = content.rfind(b"\n") + 1
            logger.warning(f"{path}: cutting off a torn last line (a crash mid-write?): {content[keep:][:80]!r}")
            os.ftruncate(fd, keep)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: str | os.PathLike) -> list[dict]:
    """Every record of a rankings file, in order. A missing file has none.

    A last line that is not valid JSON is what a crash mid-write leaves: it is reported and left out. A bad line
    anywhere else is an error naming the file and line.

    Raises:
        ValueError: on a malformed line before the last, or a record without the rankings fields.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                logger.warning(f"{path}:{number}: incomplete last line (a crash mid-write?) left out: {error}")
                continue
            raise UsageError(f"{path}:{number} is not valid JSON ({error}); fix or delete that line") from None
        missing = [field for field in REQUIRED_FIELDS if field not in record] if isinstance(record, dict) else None
        if missing is None or missing:
            raise UsageError(
                f"{path}:{number} is not a ranking record (missing {missing or list(REQUIRED_FIELDS)}); a rankings "
                "file is written by `hf-llm rank`"
            )
        if record["verdict"] not in VERDICTS:
            raise UsageError(f"{path}:{number}: unknown verdict {record['verdict']!r}; expected one of {VERDICTS}")
        records.append(record)
    return records


def is_rankings_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a `.jsonl` file whose first record is a ranking record (so it can be expanded to pairs)."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(first, dict) and first.get("schema") == SCHEMA
    return False


def latest_by_labeler(records: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """`{(prompt_id, labeler): record}` keeping each labeler's last word on each prompt."""
    latest = {}
    for record in records:
        latest[(record["prompt_id"], record["labeler"])] = record
    return latest
