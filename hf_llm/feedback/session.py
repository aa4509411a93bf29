"""One labeler's ranking session: which prompt is next, its answers, and each submission written to the file."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hf_llm.errors import UsageError

from ..data.rankings import append_record, normalize_ranks, prompt_id, read_records, utc_now

#: `sample(prompt, prompt_id) -> (formatted_prompt, answers)`: the text the model saw and its answers.
Sampler = Callable[[str, str], tuple[str, list[str]]]


@dataclass
class RankingItem:
    """A prompt on the page, with the answers shown for it (in display order)."""

    prompt_id: str
    prompt: str
    formatted_prompt: str
    answers: list[str]
    shown_at: float


class RankingSession:
    """Walks one labeler through the prompts, resuming after the last prompt they answered in `output_file`.

    Answers are sampled when a prompt comes up. When another labeler already ranked answers to the same prompt,
    from the same model and decoding settings, in the same file, those answers are shown again instead, so that two
    people rank the same answers and their agreement can be measured.

    Args:
        prompts (`list[str]`): the prompts, in order.
        output_file (`str` or `os.PathLike`): the rankings file (JSON Lines), created on the first submission.
        labeler (`str`): who is ranking; resume and agreement are per labeler.
        sample (`Sampler`): returns the formatted prompt and the answers for a prompt.
        metadata (`dict`): recorded with every ranking: `model_name_or_path`, `generation` (the decoding
            settings) and `chat_template` (whether prompts went through the chat template).
    """

    def __init__(
        self,
        prompts: list[str],
        output_file: str | os.PathLike,
        labeler: str,
        sample: Sampler,
        metadata: dict,
    ):
        if not labeler or not labeler.strip():
            raise UsageError("--labeler is empty; pass a name (e.g. --labeler alice) so rankings can be attributed")
        self.prompts = prompts
        self.prompt_ids = [prompt_id(p) for p in prompts]
        self.output_file = Path(output_file)
        self.labeler = labeler.strip()
        self.sample = sample
        self.metadata = metadata
        self._lock = threading.Lock()
        self._item: RankingItem | None = None
        self._answered: dict[str, str] = {}  # prompt_id -> verdict, this labeler's, from the file
        wanted = set(self.prompt_ids)
        for record in read_records(self.output_file):
            if record["labeler"] == self.labeler and record["prompt_id"] in wanted:
                self._answered[record["prompt_id"]] = record["verdict"]

    # ---- what the page shows ----

    def progress(self) -> dict[str, int]:
        """`{"ranked": ..., "skipped": ..., "total": ...}` for this labeler over this session's prompts."""
        skipped = sum(verdict == "skipped" for verdict in self._answered.values())
        return {"ranked": len(self._answered) - skipped, "skipped": skipped, "total": len(self.prompts)}

    def current(self) -> RankingItem | None:
        """The first prompt this labeler has not answered, with its answers; `None` when all are answered."""
        with self._lock:
            return self._current()

    def _current(self) -> RankingItem | None:
        next_id = next((pid for pid in self.prompt_ids if pid not in self._answered), None)
        if next_id is None:
            return None
        if self._item is None or self._item.prompt_id != next_id:
            prompt = self.prompts[self.prompt_ids.index(next_id)]
            shared = self._answers_from_other_labelers(next_id)
            formatted_prompt, answers = shared if shared else self.sample(prompt, next_id)
            self._item = RankingItem(next_id, prompt, formatted_prompt, list(answers), time.time())
        return self._item

    def _answers_from_other_labelers(self, pid: str) -> tuple[str, list[str]] | None:
        for record in read_records(self.output_file):
            if (
                record["prompt_id"] == pid
                and record["labeler"] != self.labeler
                and record.get("model_name_or_path") == self.metadata.get("model_name_or_path")
                and record.get("generation") == self.metadata.get("generation")
            ):
                return record.get("formatted_prompt", record["prompt"]), record["answers"]
        return None

    # ---- what the labeler does ----

    def submit(self, shown_prompt_id: str, ranks: list[int | None]) -> dict:
        """Record a ranking of the current answers (1 = best; equal ranks tie; or only best and worst)."""
        dense, verdict = normalize_ranks(list(ranks))
        return self._record(shown_prompt_id, verdict, dense)

    def tie(self, shown_prompt_id: str) -> dict:
        """Record that all answers are equally good (no preference pairs come from it)."""
        return self._record(shown_prompt_id, "tie", None)

    def all_bad(self, shown_prompt_id: str) -> dict:
        """Record that all answers are bad (no preference pairs come from it)."""
        return self._record(shown_prompt_id, "all_bad", None)

    def skip(self, shown_prompt_id: str) -> dict:
        """Record that this labeler skipped the prompt; it is not offered to them again."""
        return self._record(shown_prompt_id, "skipped", None)

    def _record(self, shown_prompt_id: str, verdict: str, ranks: list[int] | None) -> dict:
        with self._lock:
            item = self._current()
            if item is None or item.prompt_id != shown_prompt_id:
                raise UsageError(
                    "this page is out of date (the prompt was already answered, maybe from another tab); reload it"
                )
            if ranks is not None and len(ranks) != len(item.answers):
                raise UsageError(f"got {len(ranks)} ranks for {len(item.answers)} answers")
            if verdict in ("tie", "all_bad"):
                ranks = [1] * len(item.answers)
            record = {
                "prompt_id": item.prompt_id,
                "prompt": item.prompt,
                "formatted_prompt": item.formatted_prompt,
                "answers": item.answers,
                "ranks": ranks,
                "verdict": verdict,
                "labeler": self.labeler,
                **self.metadata,
                "time": utc_now(),
                "seconds": round(time.time() - item.shown_at, 1),
            }
            append_record(self.output_file, record)
            self._answered[item.prompt_id] = verdict
            return record
