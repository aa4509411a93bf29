"""`hf-llm pipeline`: run the stages one after another from the checkout, then write `report.md`.

Each stage is its own script (`train_scripts/<stage>.py`, `eval/evaluate_model.py`) started as a subprocess, as a
user would start it; the pipeline stops at the first failure and reports what ran, how long, and the numbers each
stage wrote.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .evaluation.report import plot_curve

PIPELINE_STAGES = ("pretrain", "eval_pretrain")


@dataclass
class PipelineStage:
    """One step of `hf-llm pipeline`: a command run from the checkout, and the directory it fills."""

    name: str
    command: list[str]
    output_dir: Path


def find_checkout(repo_dir: str | None = None) -> Path:
    """The hf_llm checkout whose `train_scripts/` and `eval/` the pipeline runs (DESIGN §2).

    Raises:
        FileNotFoundError: when no checkout is found, saying how to fix it.
    """
    candidates = [Path(repo_dir)] if repo_dir else [Path(__file__).resolve().parents[1], Path.cwd()]
    for candidate in candidates:
        if (candidate / "train_scripts").is_dir() and (candidate / "eval").is_dir():
            return candidate.resolve()
    raise FileNotFoundError(
        "hf-llm pipeline runs the stage scripts in train_scripts/ and eval/ of an hf_llm checkout, and found none "
        f"in {', '.join(str(c) for c in candidates)}. Clone the repository and run `pip install -e .` there (or "
        "`make pipeline`), or pass --repo_dir /path/to/hf_llm."
    )


def resolve_in_checkout(path: str, checkout: Path) -> Path:
    """A user's path as given (relative to the current directory) when it exists, else relative to the checkout."""
    return Path(path).resolve() if Path(path).exists() else checkout / path


def build_pipeline(args: argparse.Namespace, checkout: Path) -> list[PipelineStage]:
    """The stage commands, in order, for the stages named by `--stages`."""
    output_dir = Path(args.output_dir).resolve()
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(resolve_in_checkout(args.accelerate_config, checkout)),
    ]
    pretrain_dir = output_dir / "pretrain"
    pretrain = [
        *launch,
        str(checkout / "train_scripts" / "pretrain.py"),
        "--config",
        str(resolve_in_checkout(args.pretrain_config, checkout)),
        "--output_dir",
        str(pretrain_dir),
        "--dataset_name",
        args.dataset_name,
    ]
    if args.max_steps is not None:
        pretrain += ["--max_steps", str(args.max_steps)]
    eval_dir = output_dir / "eval-pretrain"
    evaluate = [
        sys.executable,
        str(checkout / "eval" / "evaluate_model.py"),
        "--model_name_or_path",
        str(pretrain_dir),
        "--task",
        "pretrain",
        "--dataset_name",
        args.dataset_name,
        "--split",
        "test",
        "--output_dir",
        str(eval_dir),
    ]
    stages = [
        PipelineStage("pretrain", pretrain, pretrain_dir),
        PipelineStage("eval_pretrain", evaluate, eval_dir),
    ]
    return [stage for stage in stages if stage.name in args.stages]


def pretrain_curve(trainer_state: Path, plot_path: Path) -> list[tuple[int, float]]:
    """Read `eval_perplexity` per step from `trainer_state.json` and plot it."""
    history = json.loads(trainer_state.read_text())["log_history"]
    points = [(entry["step"], entry["eval_perplexity"]) for entry in history if "eval_perplexity" in entry]
    if points:
        plot_curve(points, plot_path, ylabel="validation perplexity", title="Pretraining", log_scale=True)
    return points


def write_report(output_dir: Path, stages: list[PipelineStage], seconds: dict[str, float]) -> Path:
    """`report.md`: what ran, how long, and the numbers each stage wrote."""
    lines = ["# hf_llm pipeline report", "", "| stage | output | seconds |", "|---|---|---|"]
    lines += [f"| {s.name} | `{s.output_dir}` | {seconds.get(s.name, 0):.0f} |" for s in stages]
    trainer_state = output_dir / "pretrain" / "trainer_state.json"
    if trainer_state.exists():
        points = pretrain_curve(trainer_state, output_dir / "pretrain_perplexity.png")
        if points:
            lines += ["", "## Pretraining", "", "| step | validation perplexity |", "|---|---|"]
            lines += [f"| {step} | {value:.2f} |" for step, value in points]
            lines += ["", "![validation perplexity](pretrain_perplexity.png)"]
    for stage in stages:
        metrics_md = stage.output_dir / "metrics.md"
        if metrics_md.exists():
            # Nest the stage's own headings one level under this report's section.
            stage_lines = [
                f"#{line}" if line.startswith("#") else line for line in metrics_md.read_text().splitlines()
            ]
            lines += ["", f"## {stage.name}", "", *stage_lines]
    report = output_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def run_pipeline(args: argparse.Namespace) -> int:
    """`hf-llm pipeline`: run each stage as a subprocess from the checkout, stop at the first failure, write the
    report."""
    checkout = find_checkout(args.repo_dir)
    output_dir = Path(args.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    stages = build_pipeline(args, checkout)
    seconds: dict[str, float] = {}
    for index, stage in enumerate(stages, start=1):
        print(f"\n[{index}/{len(stages)}] {stage.name}: {shlex.join(stage.command)}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(stage.command, cwd=checkout)
        seconds[stage.name] = time.perf_counter() - start
        if result.returncode != 0:
            print(f"hf-llm pipeline: stage {stage.name!r} failed (exit {result.returncode}); see its output above.")
            return result.returncode
    report = write_report(output_dir, stages, seconds)
    print(f"\nhf-llm pipeline: done. Report: {report}")
    return 0


def add_pipeline_command(commands: argparse._SubParsersAction) -> None:
    """`hf-llm pipeline` and its flags."""
    pipeline = commands.add_parser("pipeline", help="run every stage on the bundled data and write report.md")
    pipeline.add_argument("--output_dir", default="outputs/pipeline")
    pipeline.add_argument("--dataset_name", default="pydocs")
    pipeline.add_argument("--accelerate_config", default="accelerate_configs/cpu.yaml")
    pipeline.add_argument("--pretrain_config", default="train_scripts/configs/pretrain/tiny.yaml")
    pipeline.add_argument("--max_steps", type=int, default=None, help="override the pretraining recipe's max_steps")
    pipeline.add_argument("--stages", nargs="+", default=list(PIPELINE_STAGES), choices=PIPELINE_STAGES)
    pipeline.add_argument("--repo_dir", default=None, help="the hf_llm checkout (default: the installed one)")
    pipeline.set_defaults(run=run_pipeline)
