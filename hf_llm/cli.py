"""The `hf-llm` command: `pipeline`, `generate`, `chat` and `eval`.

hf-llm pipeline --output_dir outputs/pipeline        # every stage on the bundled pydocs data, then a report
hf-llm generate --model_name_or_path outputs/pipeline/pretrain --prompt "The json module"
hf-llm chat --model_name_or_path outputs/pipeline/instruct
hf-llm eval --model_name_or_path outputs/pipeline/pretrain --task pretrain --dataset_name pydocs --output_dir DIR
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(5, 3.2))
        axis.plot([step for step, _ in points], [value for _, value in points], marker="o")
        axis.set(xlabel="step", ylabel="validation perplexity", yscale="log", title="Pretraining")
        axis.grid(True, alpha=0.3)
        figure.tight_layout()
        figure.savefig(plot_path, dpi=120)
        plt.close(figure)
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


def load_for_generation(
    model_name_or_path: str, trust_remote_code: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM (full model or LoRA adapter) and its tokenizer, in eval mode."""
    from hf_llm.evaluation import load_model_for_evaluation

    return load_model_for_evaluation(model_name_or_path, task="pretrain", trust_remote_code=trust_remote_code)


def generation_kwargs(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> dict:
    """`generate()` settings from the flags: greedy at `--temperature 0`, nucleus sampling otherwise."""
    return {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": args.temperature > 0,
        "temperature": args.temperature if args.temperature > 0 else None,
        "top_p": args.top_p if args.temperature > 0 else None,
        "pad_token_id": tokenizer.pad_token_id,
    }


def run_generate(args: argparse.Namespace) -> int:
    """`hf-llm generate`: stream the continuation of `--prompt`."""
    import torch
    from transformers import TextStreamer, set_seed

    set_seed(args.seed)
    model, tokenizer = load_for_generation(args.model_name_or_path, args.trust_remote_code)
    inputs = tokenizer(args.prompt, return_tensors="pt").to(model.device)
    streamer = TextStreamer(tokenizer, skip_special_tokens=True)
    with torch.inference_mode():
        model.generate(**inputs, streamer=streamer, **generation_kwargs(args, tokenizer))
    return 0


def run_chat(args: argparse.Namespace) -> int:
    """`hf-llm chat`: read instructions from stdin and stream answers through the tokenizer's chat template."""
    import torch
    from transformers import TextStreamer, set_seed

    set_seed(args.seed)
    model, tokenizer = load_for_generation(args.model_name_or_path, args.trust_remote_code)
    if tokenizer.chat_template is None:
        raise SystemExit(
            f"hf-llm chat: the tokenizer of {args.model_name_or_path} has no chat template; use a tokenizer trained "
            "by hf_llm (train_scripts/train_tokenizer.py) or `hf-llm generate` for plain text."
        )
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    print("Type an instruction; an empty line or Ctrl-D quits.")
    while True:
        try:
            instruction = input("\n>>> ").strip()
        except EOFError:
            break
        if not instruction:
            break
        input_ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], add_generation_prompt=True, return_tensors="pt"
        )
        if not isinstance(input_ids, torch.Tensor):
            input_ids = input_ids["input_ids"]
        with torch.inference_mode():
            model.generate(input_ids.to(model.device), streamer=streamer, **generation_kwargs(args, tokenizer))
    return 0


def run_eval(argv: list[str]) -> int:
    """`hf-llm eval` (and `python eval/evaluate_model.py`): evaluate, print the metrics, exit 2 with one clear line on
    bad input."""
    from hf_llm.evaluation import main as evaluation_main

    try:
        report = evaluation_main(argv)
    except (ValueError, OSError) as error:
        print(f"hf-llm eval: error: {error}", file=sys.stderr)
        return 2
    numbers = {name: value for name, value in report["metrics"].items() if isinstance(value, (int, float))}
    print(json.dumps(numbers, indent=2))
    print(f"Report: {Path(report['output_dir']) / 'metrics.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `hf-llm` argument parser (`eval` parses its own flags, those of `hf_llm.evaluation`)."""
    parser = argparse.ArgumentParser(prog="hf-llm", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    pipeline = commands.add_parser("pipeline", help="run every stage on the bundled data and write report.md")
    pipeline.add_argument("--output_dir", default="outputs/pipeline")
    pipeline.add_argument("--dataset_name", default="pydocs")
    pipeline.add_argument("--accelerate_config", default="accelerate_configs/cpu.yaml")
    pipeline.add_argument("--pretrain_config", default="train_scripts/configs/pretrain/tiny.yaml")
    pipeline.add_argument("--max_steps", type=int, default=None, help="override the pretraining recipe's max_steps")
    pipeline.add_argument("--stages", nargs="+", default=list(PIPELINE_STAGES), choices=PIPELINE_STAGES)
    pipeline.add_argument("--repo_dir", default=None, help="the hf_llm checkout (default: the installed one)")

    for name, help_text in (("generate", "continue a prompt"), ("chat", "talk to an instruction-tuned model")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--model_name_or_path", required=True, help="directory, Hub repo id or LoRA adapter")
        if name == "generate":
            command.add_argument("--prompt", required=True)
        command.add_argument("--max_new_tokens", type=int, default=128)
        command.add_argument("--temperature", type=float, default=0.0, help="0 means greedy decoding")
        command.add_argument("--top_p", type=float, default=0.95)
        command.add_argument("--seed", type=int, default=42)
        command.add_argument("--trust_remote_code", action="store_true")

    commands.add_parser("eval", help="evaluate a checkpoint (see `hf-llm eval --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-llm` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"]:
        return run_eval(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pipeline":
            return run_pipeline(args)
        if args.command == "generate":
            return run_generate(args)
        return run_chat(args)
    except (FileNotFoundError, OSError, ValueError) as error:
        print(f"hf-llm {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
