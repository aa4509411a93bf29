"""Reports: the manifest, library versions, markdown tables and plots shared by evaluation, model cards and the
pipeline.

An evaluation writes, into its `output_dir`:
- `metrics.json`: `{"metrics": {...}, "manifest": {...}}`, the manifest holding what a reader needs to reproduce the
  numbers (model, data and its fingerprint, settings, library versions);
- `metrics.md`: the same for people, with the confusion matrix and sample generations when the task has them;
- `confusion_matrix.png` (classifier) and `generations.jsonl` (tasks that generate).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

#: Libraries whose version can move a metric or change an artifact.
VERSIONED_LIBRARIES = (
    "hf_llm",
    "torch",
    "transformers",
    "datasets",
    "evaluate",
    "sacrebleu",
    "peft",
    "trl",
    "accelerate",
    "tokenizers",
    "huggingface_hub",
    "numpy",
)


def library_versions(names: Sequence[str] = VERSIONED_LIBRARIES) -> dict[str, str | None]:
    """Installed versions of `names` (`None` when not installed), plus Python's."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def format_value(value: Any) -> str:
    """A value as a markdown table cell: floats to 4 decimals (or 4 significant digits when tiny or huge)."""
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e6 else f"{value:.4g}"
    # Pipes would split the cell (sacrebleu signatures are pipe-separated).
    return str(value).replace("|", "\\|")


def build_manifest(
    args, data_args, dataset, model, *, is_adapter: bool, max_length: int, settings: dict | None = None
) -> dict:
    """What a reader needs to reproduce the numbers: model, data (with fingerprint), settings and versions.

    Args:
        args (`EvaluationArguments`): the evaluation's arguments.
        data_args (`hf_llm.data.DataArguments`): the dataset's arguments.
        dataset (`datasets.Dataset`): the evaluated split.
        model (`PreTrainedModel`): the evaluated model.
        is_adapter (`bool`): whether `args.model_name_or_path` is a LoRA adapter.
        max_length (`int`): the longest sequence fed to the model.
        settings (`dict`, *optional*): the task's own settings ([`TaskResult.settings`]).
    """
    manifest = {
        "model_name_or_path": args.model_name_or_path,
        "is_adapter": is_adapter,
        "model_class": type(model).__name__,
        "task": args.task,
        "dataset_name": data_args.dataset_name,
        "dataset_config_name": getattr(data_args, "dataset_config_name", None),
        "split": args.split,
        "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
        "num_rows": len(dataset),
        "max_eval_samples": getattr(data_args, "max_eval_samples", None),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "max_length": max_length,
        "device": str(next(model.parameters()).device),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "versions": library_versions(),
    }
    manifest.update(settings or {})
    return manifest


def markdown_table(rows: dict, header: tuple[str, str] = ("metric", "value")) -> list[str]:
    """A two-column markdown table of the scalar entries of `rows` (lists and dicts are left out)."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [
        f"| {format_value(key)} | {format_value(value)} |"
        for key, value in rows.items()
        if isinstance(value, (int, float, str))
    ]
    return lines


def render_markdown(metrics: dict, manifest: dict, samples: list[dict] | None = None) -> str:
    """`metrics.md`: headline numbers, the confusion matrix (classifier), sample generations and the manifest."""
    lines = [
        f"# Evaluation: `{manifest['model_name_or_path']}` on `{manifest['dataset_name']}` ({manifest['split']})",
        "",
        f"Task: **{manifest['task']}**. Written {manifest['created_at']}.",
        "",
        *markdown_table(metrics),
    ]
    if "confusion_matrix" in metrics:
        names = metrics["label_names"]
        lines += ["", "## Confusion matrix (rows: true label, columns: predicted)", ""]
        lines += ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for name, row in zip(names, metrics["confusion_matrix"], strict=True):
            lines.append(f"| **{name}** | " + " | ".join(str(count) for count in row) + " |")
        lines += ["", "![confusion matrix](confusion_matrix.png)", ""]
        lines += markdown_table(metrics["f1_per_class"], header=("class", "F1"))
    if samples:
        lines += ["", "## Sample generations", ""]
        for sample in samples[:5]:
            lines += [
                "```text",
                sample["prompt"].strip(),
                "```",
                f"- reference: {sample['reference']!r}",
                f"- generation: {sample['generation']!r}",
                "",
            ]
    lines += ["", "## Manifest", "", "```json", json.dumps(manifest, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(confusion: list[list[int]], label_names: list[str], path: str | os.PathLike) -> None:
    """Save the confusion matrix as a PNG heat map with counts in the cells."""
    plt = _pyplot()
    matrix = np.asarray(confusion)
    size = max(3.0, 0.6 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(label_names)), labels=label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), labels=label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    ax.set_title(f"Confusion matrix (n={int(matrix.sum())})")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curve(
    points: list[tuple[int, float]], path: str | os.PathLike, *, ylabel: str, title: str, log_scale: bool = False
) -> None:
    """Save `(step, value)` points as a line plot (e.g. validation perplexity over training)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([step for step, _ in points], [value for _, value in points], marker="o")
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    if log_scale:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# What `write_evaluation_report` writes: a directory holding only these is an earlier report, replaced on a re-run.
REPORT_FILES = frozenset({"metrics.json", "metrics.md", "confusion_matrix.png", "generations.jsonl"})


def write_evaluation_report(
    output_dir: str | os.PathLike, metrics: dict, manifest: dict, samples: list[dict] | None = None
) -> dict:
    """Write `metrics.json`, `metrics.md` and the extras (`confusion_matrix.png`, `generations.jsonl`).

    Returns:
        `dict`: the content of `metrics.json`: `{"metrics": {...}, "manifest": {...}}`.
    """
    report = {"metrics": metrics, "manifest": manifest}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (output_dir / "metrics.md").write_text(render_markdown(metrics, manifest, samples), encoding="utf-8")
    if "confusion_matrix" in metrics:
        plot_confusion_matrix(metrics["confusion_matrix"], metrics["label_names"], output_dir / "confusion_matrix.png")
    if samples is not None:
        with open(output_dir / "generations.jsonl", "w", encoding="utf-8") as f:
            for sample in samples:
                f.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return report
