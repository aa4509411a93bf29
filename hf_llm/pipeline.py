"""`hf-llm pipeline`: the whole life of a model in one command, stage after stage, then a report.

    tokenizer → pretrain → eval → classifier → eval → sft → eval → reward → eval → ppo → eval → dpo → eval → report

Each training stage is its own script (`train_scripts/<stage>.py`) started with `accelerate launch` and its
`--preset` recipe (`train_scripts/configs/<stage>/<preset>.yaml`), exactly as a user would start it; each evaluation is
`eval/evaluate_model.py`. Every step writes its full output to `OUTPUT_DIR/logs/<step>.log` while the terminal shows
one live line (step, progress, elapsed time). `OUTPUT_DIR/pipeline_state.json` records the finished steps: a re-run
skips them, and a training stage that was interrupted resumes from its last complete checkpoint
(`--resume_from_checkpoint latest`). A failed step stops the run naming the step, its one-line error and its log.
Stages run in their own process group, so Ctrl-C or a SIGTERM to the pipeline stops the whole stage (`accelerate
launch`'s child processes included) instead of leaving it running.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from .errors import UsageError
from .stages import STAGE_NAMES, PipelineStep

STATE_FILE = "pipeline_state.json"
TRAINING_STAGES = ("tokenizer", *STAGE_NAMES)
# The recipe keys that say which examples a stage trained on and held out: an evaluation of the recipe's own dataset
# reads them too, so it scores the examples the stage held out.
EVAL_DATA_KEYS = (
    "dataset_name",
    "dataset_config_name",
    "dataset_train_split",
    "dataset_validation_split",
    "dataset_test_split",
    "validation_split_percentage",
    "text_column",
    "label_column",
    "instruction_column",
    "input_column",
    "output_column",
    "messages_column",
    "class_names",
    "text_sample_by",
    "seed",
)


def find_checkout(repo_dir: str | None = None) -> Path:
    """The hf_llm checkout whose `train_scripts/` and `eval/` the pipeline runs.

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


def _per_stage_values(values: list[str], flag: str) -> dict[str, str]:
    """`["pydocs", "classifier=sms.csv"]` -> `{"": "pydocs", "classifier": "sms.csv"}` (the empty key: every stage)."""
    parsed: dict[str, str] = {}
    for value in values:
        stage, sep, rest = value.partition("=")
        if sep and stage in TRAINING_STAGES:
            parsed[stage] = rest
        elif sep and re.fullmatch(r"[a-z_]+", stage):
            raise UsageError(f"{flag} {value!r}: unknown stage {stage!r}; stages are {list(TRAINING_STAGES)}.")
        else:
            parsed[""] = value
    return parsed


def build_steps(args: argparse.Namespace, checkout: Path) -> list[PipelineStep]:
    """
    The pipeline's steps, in order, for the stages named by `--stages`: each training stage with its recipe and the
    earlier outputs it reads, each followed by its evaluation on the test split (on the held-out validation examples
    of a recipe's dataset that has no test split).

    Raises:
        UsageError: when a stage's recipe for `--preset` does not exist.
    """
    out = Path(args.output_dir).resolve()
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launch.append(str(resolve_in_checkout(args.accelerate_config, checkout)))
    datasets = _per_stage_values(args.dataset_name or [], "--dataset_name")
    extra = {stage: shlex.split(flags) for stage, flags in _per_stage_values(args.stage_args, "--stage_args").items()}
    if "" in extra:
        raise UsageError("--stage_args needs a stage: e.g. --stage_args 'sft=--max_steps 20'.")

    def recipe(stage: str) -> Path:
        path = checkout / "train_scripts" / "configs" / stage / f"{args.preset}.yaml"
        if stage in args.stages and not path.is_file():
            available = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise UsageError(f"--preset {args.preset!r} has no {stage} recipe ({path}); presets there: {available}.")
        return path

    @functools.cache  # each step's dataset and evaluation read it: parse each recipe once
    def recipe_values(stage: str) -> dict:
        path = recipe(stage) if stage != "tokenizer" else None  # the tokenizer's recipe is pydocs.yaml, not a preset
        return (yaml.safe_load(path.read_text()) or {}) if path is not None and path.is_file() else {}

    def dataset(stage: str) -> list[str]:
        # The user's --dataset_name for this stage (or all), else the recipe's own, else the bundled pydocs.
        name = datasets.get(stage, datasets.get(""))
        if name is None and recipe_values(stage).get("dataset_name") is None:
            name = "pydocs"
        return ["--dataset_name", name] if name else []

    def eval_data(stage: str, task: str) -> list[str]:
        """An evaluation's data: the user's dataset or pydocs on its test split; the recipe's own dataset read as the
        stage read it (configuration, columns, held-out share, seed), on its test split when the recipe names one,
        else on the validation examples the stage held out."""
        values = recipe_values(stage)
        if dataset(stage) or values.get("dataset_name") == "pydocs":
            return [*(dataset(stage) or ["--dataset_name", "pydocs"]), "--split", "test"]
        flags = []
        for key in EVAL_DATA_KEYS:
            value = values.get(key)
            if value is not None:
                flags += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
        if task == "win_rate" and "messages_column" not in values:
            # The win rate reads prompts as instruction data; a conversational preference pair's chosen conversation
            # is one (the user's turn, then the answer), as for trl-lib/ultrafeedback_binarized.
            flags += ["--messages_column", values.get("chosen_column", "chosen")]
        return [*flags, "--split", "test" if values.get("dataset_test_split") else "validation"]

    def hub(stage: str) -> list[str]:
        if not args.push_to_hub:
            return []
        return ["--push_to_hub", "true", "--hub_model_id", f"{args.hub_namespace}/{args.hub_prefix}-{stage}"]

    def train(stage: str, *inputs: str) -> PipelineStep:
        command = [*launch, str(checkout / "train_scripts" / f"{stage}.py"), "--config", str(recipe(stage))]
        command += [*inputs, *dataset(stage), "--output_dir", str(out / stage), "--resume_from_checkpoint", "latest"]
        if (
            args.max_steps is not None and stage != "ppo"
        ):  # PPO counts episodes (--stage_args 'ppo=--total_episodes N')
            command += ["--max_steps", str(args.max_steps)]
        command += [*hub(stage), *extra.get(stage, [])]
        return PipelineStep(stage, stage, command, out / stage, done_file="README.md")

    def evaluate(name: str, stage: str, task: str, model: str, *inputs: str) -> PipelineStep:
        command = [sys.executable, str(checkout / "eval" / "evaluate_model.py"), "--model_name_or_path", model]
        command += ["--task", task, *inputs, *eval_data(stage, task), "--output_dir", str(out / name)]
        if args.max_eval_samples is not None:
            command += ["--max_eval_samples", str(args.max_eval_samples)]
        return PipelineStep(name, stage, command, out / name, done_file="metrics.json")

    pretrain_recipe = yaml.safe_load(recipe("pretrain").read_text()) if recipe("pretrain").is_file() else {}
    own_tokenizer = not (pretrain_recipe.get("tokenizer_name_or_path") or pretrain_recipe.get("model_name_or_path"))
    tokenizer_recipe = checkout / "train_scripts" / "configs" / "tokenizer" / "pydocs.yaml"
    tokenizer_command = [sys.executable, str(checkout / "train_scripts" / "train_tokenizer.py")]
    tokenizer_command += [
        "--config",
        str(tokenizer_recipe),
        *dataset("tokenizer"),
        "--output_dir",
        str(out / "tokenizer"),
    ]
    tokenizer_command += [*hub("tokenizer"), *extra.get("tokenizer", [])]

    pretrain, sft, reward = str(out / "pretrain"), str(out / "sft"), str(out / "reward")
    win_rate = ["--reference_model_name_or_path", sft, "--reward_model_path", reward]
    steps = []
    if own_tokenizer:
        steps.append(PipelineStep("tokenizer", "tokenizer", tokenizer_command, out / "tokenizer", "tokenizer.json"))
    steps += [
        train("pretrain", *(["--tokenizer_name_or_path", str(out / "tokenizer")] if own_tokenizer else [])),
        evaluate("eval-pretrain", "pretrain", "pretrain", pretrain),
        train("classifier", "--model_name_or_path", pretrain),
        evaluate("eval-classifier", "classifier", "classifier", str(out / "classifier")),
        evaluate("eval-sft-before", "sft", "sft", pretrain),
        train("sft", "--model_name_or_path", pretrain),
        evaluate("eval-sft", "sft", "sft", sft),
        train("reward", "--model_name_or_path", sft),
        evaluate("eval-reward", "reward", "reward", reward),
        train("ppo", "--model_name_or_path", sft, "--reward_model_path", reward),
        evaluate("eval-ppo", "ppo", "win_rate", str(out / "ppo"), *win_rate),
        train("dpo", "--model_name_or_path", sft, "--reward_model_path", reward),
        evaluate("eval-dpo", "dpo", "win_rate", str(out / "dpo"), *win_rate),
    ]
    steps = [step for step in steps if step.stage in args.stages]
    for step in steps:
        step.log_file = out / "logs" / f"{step.name}.log"
    return steps


class PipelineState:
    """`OUTPUT_DIR/pipeline_state.json`: per step, whether it finished, how long it took and the command it ran."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / STATE_FILE
        self.steps: dict[str, dict] = json.loads(self.path.read_text())["steps"] if self.path.is_file() else {}

    def is_done(self, step: PipelineStep) -> bool:
        return self.steps.get(step.name, {}).get("status") == "done" and (step.output_dir / step.done_file).is_file()

    def record(self, step: PipelineStep, status: str, seconds: float) -> None:
        previous = self.steps.get(step.name, {})
        self.steps[step.name] = {
            "status": status,
            # An interrupted-then-resumed stage took the sum of its attempts.
            "seconds": seconds + (previous.get("seconds", 0.0) if previous.get("status") != "done" else 0.0),
            "command": shlex.join(step.command),
            "log_file": str(step.log_file),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"steps": self.steps}, indent=2) + "\n")
        os.replace(tmp, self.path)


_PROGRESS = re.compile(r"(\d+)/(\d+) \[")
_ONE_LINE_ERROR = re.compile(r"^\S+(?: \S+)?: error: .+$", re.MULTILINE)


def _log_tail(log_file: Path, size: int = 8192) -> str:
    if not log_file.is_file():
        return ""
    with open(log_file, "rb") as f:
        f.seek(max(0, log_file.stat().st_size - size))
        return f.read().decode("utf-8", errors="replace")


def progress_of(log_file: Path) -> str:
    """The last progress-bar count (`45/300`) in a step's log, or `""`."""
    matches = _PROGRESS.findall(_log_tail(log_file))
    return f"{matches[-1][0]}/{matches[-1][1]}" if matches else ""


def failure_summary(log_file: Path) -> str:
    """A failed step's one-line error (`sft.py: error: ...`) from its log, else the log's last line."""
    tail = _log_tail(log_file, 65536)
    errors = _ONE_LINE_ERROR.findall(tail)
    if errors:
        return errors[-1].strip()
    lines = [line.strip() for line in re.split(r"[\r\n]+", tail) if line.strip()]
    return lines[-1] if lines else "no output"


def _elapsed(seconds: float) -> str:
    return f"{int(seconds // 60):d}:{int(seconds % 60):02d}"


class StepRunner:
    """Runs one step in its own process group with its output in its log file, showing a live status line."""

    def __init__(self, checkout: Path, interactive: bool):
        self.checkout = checkout
        self.interactive = interactive

    def run(self, step: PipelineStep, label: str) -> int:
        step.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(step.log_file, "ab") as log:
            log.write(f"\n$ {shlex.join(step.command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                step.command, cwd=self.checkout, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            stop = threading.Event()
            display = threading.Thread(target=self._show, args=(process, step, label, stop), daemon=True)
            display.start()
            try:
                return process.wait()
            except BaseException:
                _stop_process_group(process)
                raise
            finally:
                stop.set()
                display.join()

    def _show(self, process: subprocess.Popen, step: PipelineStep, label: str, stop: threading.Event) -> None:
        start = time.monotonic()
        last_print = start
        while not stop.wait(0.5):
            now = time.monotonic()
            status = f"{label} {step.name:<16} {progress_of(step.log_file):>10}  {_elapsed(now - start)}"
            if self.interactive:
                print(f"\r{status}", end="", flush=True)
            elif now - last_print >= 30:
                print(status, flush=True)
                last_print = now
        if self.interactive:
            print("\r\033[K", end="", flush=True)


def _stop_process_group(process: subprocess.Popen) -> None:
    """Stop a stage and everything it started (accelerate launch's workers): SIGTERM, then SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def check_pipeline_output_dir(output_dir: Path, *, overwrite_output_dir: bool = False) -> None:
    """
    Refuse to run in a directory holding files that no pipeline wrote: the pipeline writes `report.md`, `logs/` and
    one directory per step there, and would replace a user's own files of those names. A directory with a
    `pipeline_state.json` is an earlier run of the pipeline, which this run resumes. With `--overwrite_output_dir`
    the directory's contents are deleted first.

    Raises:
        `UsageError`: Naming the directory, what is in it, and the ways on.
    """
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if overwrite_output_dir:
        shutil.rmtree(output_dir)
        return
    if (output_dir / STATE_FILE).is_file():
        return  # an earlier run: finished steps are skipped, an interrupted one resumes
    names = sorted(entry.name for entry in output_dir.iterdir())
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise UsageError(
        f"--output_dir {output_dir} holds files no pipeline run wrote ({shown}); the pipeline would write its steps, "
        "logs and report.md there. Pass a new or empty directory, or --overwrite_output_dir to delete its contents."
    )


def run_pipeline(args: argparse.Namespace) -> int:
    """`hf-llm pipeline`: run the steps not yet done, stop at the first failure, then write the report."""
    from .pipeline_report import write_pipeline_report

    if args.push_to_hub and not args.hub_namespace:
        raise UsageError("--push_to_hub needs --hub_namespace (your user or organisation name on the Hub).")
    checkout = find_checkout(args.repo_dir)
    output_dir = Path(args.output_dir).resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output_dir {output_dir} is a file; pass a directory.")
    check_pipeline_output_dir(output_dir, overwrite_output_dir=args.overwrite_output_dir)
    steps = build_steps(args, checkout)
    output_dir.mkdir(parents=True, exist_ok=True)
    state = PipelineState(output_dir)
    runner = StepRunner(checkout, interactive=sys.stdout.isatty())
    print(f"hf-llm pipeline: {len(steps)} steps into {output_dir} (logs in {output_dir / 'logs'})", flush=True)
    # SIGTERM (a scheduler stopping the job) unwinds like Ctrl-C, so the running stage's process group is stopped.
    if args.push_to_hub:
        _push_datasets(args)
    previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        for index, step in enumerate(steps, start=1):
            label = f"[{index:>2}/{len(steps)}]"
            if state.is_done(step):
                print(f"{label} {step.name:<16} done earlier, skipped", flush=True)
                continue
            resumed = " (resuming)" if state.steps.get(step.name, {}).get("status") == "interrupted" else ""
            start = time.monotonic()
            try:
                returncode = runner.run(step, label)
            except KeyboardInterrupt:
                state.record(step, "interrupted", time.monotonic() - start)
                print(f"\nhf-llm pipeline: interrupted during {step.name}; run the same command to resume.")
                return 130
            seconds = time.monotonic() - start
            if returncode != 0:
                state.record(step, "failed", seconds)
                print(
                    f"hf-llm pipeline: error: stage {step.name!r} failed (exit {returncode}): "
                    f"{failure_summary(step.log_file)} (full log: {step.log_file})",
                    file=sys.stderr,
                    flush=True,
                )
                return returncode
            state.record(step, "done", seconds)
            print(f"{label} {step.name:<16} done in {_elapsed(seconds)}{resumed}", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    report = write_pipeline_report(output_dir, steps, state.steps)
    print(f"hf-llm pipeline: done. Report: {report} and {report.with_suffix('.html')}")
    return 0


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _push_datasets(args: argparse.Namespace) -> None:
    """Push the bundled data the stages train on, one dataset repo per data format, before any model is pushed."""
    from .data import load_formatted_dataset
    from .hub import push_dataset

    datasets = _per_stage_values(args.dataset_name or ["pydocs"], "--dataset_name")
    if datasets.get("", "pydocs") != "pydocs":
        return  # the user's own data stays where it is
    for data_format in ("text", "classification", "instruction", "preference"):
        repo_id = f"{args.hub_namespace}/{args.hub_prefix}-pydocs-{data_format}"
        push_dataset(load_formatted_dataset("pydocs", data_format), repo_id, private=args.hub_private_repo)
        print(f"hf-llm pipeline: pushed the pydocs {data_format} data to the dataset repo {repo_id}", flush=True)


def add_pipeline_command(commands: argparse._SubParsersAction) -> None:
    """`hf-llm pipeline` and its flags."""
    pipeline = commands.add_parser(
        "pipeline",
        help="run every stage (tokenizer, pretrain, classifier, sft, reward, ppo, dpo) and write a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pipeline.add_argument("--output_dir", default="outputs/pipeline", help="one sub-directory per step, logs, report")
    pipeline.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="delete what --output_dir holds and start over (without it, a directory of an earlier run resumes)",
    )
    pipeline.add_argument("--preset", default="tiny", help="recipe name: train_scripts/configs/<stage>/<preset>.yaml")
    pipeline.add_argument(
        "--stages",
        nargs="+",
        default=list(TRAINING_STAGES),
        choices=TRAINING_STAGES,
        help="stages to run (each with its evaluation); default: all",
    )
    pipeline.add_argument(
        "--dataset_name",
        action="append",
        default=None,
        metavar="[STAGE=]NAME",
        help="data for every stage (default: each recipe's dataset_name, else the bundled pydocs), or for one: "
        "--dataset_name classifier=sms.csv",
    )
    pipeline.add_argument(
        "--stage_args",
        action="append",
        default=[],
        metavar="STAGE=FLAGS",
        help="extra flags for one stage's script, e.g. --stage_args 'ppo=--total_episodes 64'",
    )
    pipeline.add_argument("--accelerate_config", default="accelerate_configs/cpu.yaml")
    pipeline.add_argument("--max_steps", type=int, default=None, help="override every training recipe's max_steps")
    pipeline.add_argument("--max_eval_samples", type=int, default=None, help="cap every evaluation's examples")
    pipeline.add_argument("--push_to_hub", action="store_true", help="push every stage's model and the data")
    pipeline.add_argument("--hub_namespace", default=None, help="Hub user or organisation to push to")
    pipeline.add_argument("--hub_prefix", default="hf-llm", help="repo names: <namespace>/<prefix>-<stage>")
    pipeline.add_argument("--hub_private_repo", action="store_true")
    pipeline.add_argument("--repo_dir", default=None, help="the hf_llm checkout (default: the installed one)")
    pipeline.set_defaults(run=run_pipeline)
