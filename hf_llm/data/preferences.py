"""From rankings to preferences: all ordered pairs as `prompt`/`chosen`/`rejected`, splits by prompt, agreement
between labelers, and a dataset directory (Hub layout, with a card) that can be pushed as a dataset repo."""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from itertools import combinations
from pathlib import Path

from datasets import Dataset, DatasetDict
from transformers.utils import logging

from hf_llm.errors import UsageError

from .rankings import latest_by_labeler, read_records

logger = logging.get_logger(__name__)


def _pairs_of(record: dict) -> list[tuple[int, int]]:
    """(better, worse) answer indices of one record: every ordered pair with a strictly better rank."""
    ranks = record["ranks"]
    if record["verdict"] in ("skipped", "tie", "all_bad") or not ranks:
        return []
    return [(i, j) for i in range(len(ranks)) for j in range(len(ranks)) if ranks[i] < ranks[j]]


def _usable(records: list[dict]) -> list[dict]:
    """Each labeler's latest record per prompt (a re-ranking replaces the earlier one), in file order."""
    return list(latest_by_labeler(records).values())


def rankings_to_preferences(records: list[dict]) -> list[dict]:
    """Expand rankings into preference pairs: for each labeler's ranking of a prompt, every ordered pair of answers
    with a strictly better rank (a full ranking of n answers gives n(n-1)/2 pairs); ties, "tie", "all bad" and
    skipped prompts give none, nor do two answers with the same text.

    Prompts that went through a chat template become TRL's conversational format (`prompt` a list with the user
    message, `chosen`/`rejected` a list with the assistant message), which `RewardTrainer`/`DPOTrainer` render
    with the tokenizer's chat template; otherwise `prompt` is the text the model was given and the answers are
    plain continuations.

    Returns:
        `list[dict]`: rows with `prompt`, `chosen`, `rejected`, `prompt_id` and `labeler`.
    """
    usable = _usable(records)
    formats = {bool(r.get("chat_template")) for r in usable}
    if len(formats) > 1:
        raise UsageError(
            "the rankings mix prompts given through a chat template with plain-text prompts; export them separately "
            "(one rankings file per model/template)"
        )
    rows = []
    for record in usable:
        answers = record["answers"]
        for better, worse in _pairs_of(record):
            if answers[better] == answers[worse]:
                continue
            if record.get("chat_template"):
                row = {
                    "prompt": [{"role": "user", "content": record["prompt"]}],
                    "chosen": [{"role": "assistant", "content": answers[better]}],
                    "rejected": [{"role": "assistant", "content": answers[worse]}],
                }
            else:
                row = {
                    "prompt": record.get("formatted_prompt", record["prompt"]),
                    "chosen": answers[better],
                    "rejected": answers[worse],
                }
            rows.append({**row, "prompt_id": record["prompt_id"], "labeler": record["labeler"]})
    return rows


def labeler_agreement(records: list[dict]) -> dict:
    """How often two labelers who ranked the same answers to the same prompt put each pair of answers in the same
    order (better, worse or tied); skipped prompts are left out.

    Returns:
        `dict`: `prompts` (prompts ranked by two or more labelers), `pair_judgments` (answer pairs compared,
        summed over labeler pairs), `agreement` (fraction in the same order, `None` when nothing was compared), and
        `by_labelers` with the same numbers per `"alice|bob"` pair.
    """
    by_prompt: dict[str, dict[str, dict]] = defaultdict(dict)
    for record in _usable(records):
        if record["verdict"] != "skipped" and record["ranks"]:
            by_prompt[record["prompt_id"]][record["labeler"]] = record
    totals = {"prompts": 0, "pair_judgments": 0, "agreed": 0}
    by_labelers: dict[str, dict] = defaultdict(lambda: {"prompts": 0, "pair_judgments": 0, "agreed": 0})
    for labelers in by_prompt.values():
        if len(labelers) < 2:
            continue
        totals["prompts"] += 1
        for a, b in combinations(sorted(labelers), 2):
            rank_a = dict(zip(labelers[a]["answers"], labelers[a]["ranks"], strict=True))
            rank_b = dict(zip(labelers[b]["answers"], labelers[b]["ranks"], strict=True))
            shared = sorted(set(rank_a) & set(rank_b))
            if len(shared) < 2:
                continue
            stats = by_labelers[f"{a}|{b}"]
            stats["prompts"] += 1
            for x, y in combinations(shared, 2):
                order_a = (rank_a[x] > rank_a[y]) - (rank_a[x] < rank_a[y])
                order_b = (rank_b[x] > rank_b[y]) - (rank_b[x] < rank_b[y])
                for counter in (stats, totals):
                    counter["pair_judgments"] += 1
                    counter["agreed"] += order_a == order_b

    def summary(counts: dict) -> dict:
        judged = counts["pair_judgments"]
        return {
            "prompts": counts["prompts"],
            "pair_judgments": judged,
            "agreement": round(counts["agreed"] / judged, 4) if judged else None,
        }

    return {**summary(totals), "by_labelers": {pair: summary(stats) for pair, stats in sorted(by_labelers.items())}}


def split_by_prompt(rows: list[dict], validation_fraction: float, seed: int) -> dict[str, list[dict]]:
    """`{"train": ..., "validation": ...}` with every pair of one prompt in the same split (pairs of one prompt
    share text, so splitting them would leak). At least one prompt goes to each split when there are two."""
    prompt_ids = sorted({row["prompt_id"] for row in rows})
    random.Random(seed).shuffle(prompt_ids)
    num_validation = round(len(prompt_ids) * validation_fraction)
    if validation_fraction > 0 and len(prompt_ids) >= 2:
        num_validation = min(max(num_validation, 1), len(prompt_ids) - 1)
    validation_ids = set(prompt_ids[:num_validation])
    splits = {
        "train": [row for row in rows if row["prompt_id"] not in validation_ids],
        "validation": [row for row in rows if row["prompt_id"] in validation_ids],
    }
    return {name: split for name, split in splits.items() if split}


def _dataset_card(summary: dict) -> str:
    lines = [
        "---",
        "tags:",
        "- hf_llm",
        "- human-feedback",
        "- preference",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for split in summary["splits"]:
        lines += [f"  - split: {split}", f"    path: data/{split}-*.parquet"]
    lines += ["---", "", "# Human preference pairs", ""]
    lines += [
        f"Made by `hf-llm rank` from {summary['rankings']} rankings ({summary['skipped']} skipped) of "
        f"{summary['prompts']} prompts by {len(summary['labelers'])} labeler(s): every ordered pair of answers a "
        "person ranked, ties left out. Pairs of one prompt stay in one split.",
        "",
        "| split | pairs |",
        "|---|---|",
        *[f"| {split} | {count} |" for split, count in summary["splits"].items()],
        "",
        f"- models: {', '.join(f'`{m}`' for m in summary['models'])}",
        f"- labelers: {', '.join(summary['labelers'])}",
        f"- decoding: `{json.dumps(summary['generation'])}`",
    ]
    agreement = summary["agreement"]
    if agreement["agreement"] is not None:
        lines.append(
            f"- inter-labeler agreement: {agreement['agreement']:.1%} of {agreement['pair_judgments']} answer pairs "
            f"on {agreement['prompts']} prompts ranked by two or more labelers"
        )
    lines += [
        "",
        "Columns: `prompt`, `chosen`, `rejected` (TRL's preference format; conversational when the model was given a "
        "chat template), `prompt_id`, `labeler`. Train a reward model on it with `train_scripts/reward.py "
        "--dataset_name <this dataset>`.",
    ]
    return "\n".join(lines) + "\n"


def export_rankings(
    rankings_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    validation_fraction: float = 0.1,
    seed: int = 42,
    push_to_hub: bool = False,
    hub_dataset_id: str | None = None,
    hub_private_repo: bool = False,
    hub_token: str | None = None,
) -> dict:
    """Write the preference pairs of a rankings file as a dataset directory, and optionally push it to the Hub.

    `output_dir` gets `data/train-00000-of-00001.parquet`, `data/validation-00000-of-00001.parquet` and a dataset
    card `README.md` (counts, labelers, models, decoding, agreement): the layout `datasets.load_dataset` reads from a
    folder or a Hub dataset repo, and that `hf_llm.data` loads with `--dataset_name output_dir`.

    Args:
        rankings_file (`str` or `os.PathLike`): written by `hf-llm rank`.
        output_dir (`str` or `os.PathLike`): the dataset directory to write.
        validation_fraction (`float`, defaults to 0.1): share of prompts (not pairs) held out for validation.
        seed (`int`, defaults to 42): seed of the prompt shuffle before the split.
        push_to_hub (`bool`, defaults to `False`): push `output_dir` as the dataset repo `hub_dataset_id`.
        hub_dataset_id (`str`, *optional*): `namespace/name` of the dataset repo.
        hub_private_repo (`bool`, defaults to `False`): create the repo private.
        hub_token (`str`, *optional*): defaults to `HF_TOKEN` or the saved login.

    Returns:
        `dict`: counts, splits, agreement (see `labeler_agreement`), and `hub_url` when pushed.
    """
    if not 0 <= validation_fraction < 1:
        raise UsageError(f"--validation_fraction must be in [0, 1), got {validation_fraction}")
    if push_to_hub and not hub_dataset_id:
        raise UsageError("--push_to_hub needs --hub_dataset_id: the dataset repo to push to, e.g. you/my-preferences")
    if not Path(rankings_file).is_file():
        raise FileNotFoundError(f"rankings file {rankings_file} not found; write it with `hf-llm rank` first")
    records = read_records(rankings_file)
    rows = rankings_to_preferences(records)
    if not rows:
        raise UsageError(
            f"{rankings_file} holds {len(records)} records and no preference pair (only ties, all-bad or skipped "
            "prompts?); rank some answers first"
        )
    splits = split_by_prompt(rows, validation_fraction, seed)
    usable = _usable(records)
    summary = {
        "rankings_file": str(rankings_file),
        "rankings": sum(r["verdict"] != "skipped" for r in usable),
        "skipped": sum(r["verdict"] == "skipped" for r in usable),
        "prompts": len({r["prompt_id"] for r in usable}),
        "labelers": sorted({r["labeler"] for r in usable}),
        "models": sorted({str(r.get("model_name_or_path")) for r in usable}),
        "generation": next((r.get("generation") for r in usable if r.get("generation")), None),
        "pairs": len(rows),
        "splits": {name: len(split) for name, split in splits.items()},
        "agreement": labeler_agreement(records),
    }
    output_dir = Path(output_dir)
    data_dir = output_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.glob("*.parquet"):
        stale.unlink()
    dataset = DatasetDict({name: Dataset.from_list(split) for name, split in splits.items()})
    for name, split in dataset.items():
        split.to_parquet(str(data_dir / f"{name}-00000-of-00001.parquet"))
    (output_dir / "README.md").write_text(_dataset_card(summary), encoding="utf-8")
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi(token=hub_token)
        repo_url = api.create_repo(hub_dataset_id, repo_type="dataset", private=hub_private_repo, exist_ok=True)
        summary["hub_url"] = str(repo_url)
        api.upload_folder(
            repo_id=repo_url.repo_id,
            repo_type="dataset",
            folder_path=str(output_dir),
            commit_message=f"Upload {len(rows)} preference pairs from hf-llm rank",
        )
        logger.info(f"Pushed {output_dir} to {repo_url}")
    return summary


def rankings_dataset(
    rankings_file: str | os.PathLike, validation_fraction: float = 0.1, seed: int = 42
) -> DatasetDict:
    """The preference pairs of a rankings file as `train`/`validation` splits (split by prompt), for loaders that
    take a rankings file directly in place of a preference dataset (`hf_llm.data` does for `.jsonl` rankings)."""
    rows = rankings_to_preferences(read_records(rankings_file))
    if not rows:
        raise UsageError(f"{rankings_file} holds no preference pair (only ties, all-bad or skipped prompts?)")
    splits = split_by_prompt(rows, validation_fraction, seed)
    columns = ("prompt", "chosen", "rejected")  # what `hf_llm.data` keeps of the exported dataset, too
    return DatasetDict(
        {name: Dataset.from_list([{c: row[c] for c in columns} for row in split]) for name, split in splits.items()}
    )
