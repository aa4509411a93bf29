"""Evaluate any hf_llm checkpoint on any task and write `metrics.json` (with a manifest) and `metrics.md`.

`eval/evaluate_model.py` and `hf-llm eval` both run [`main`]:

```bash
python eval/evaluate_model.py --model_name_or_path outputs/pretrain --task pretrain \
    --dataset_name pydocs --split test --output_dir outputs/eval/pretrain
```

`--task` names the stage whose artifact is measured (`pretrain`, `classifier`, `sft`, `reward`); the evaluators are
in `hf_llm.evaluation.tasks`, the report pieces in `hf_llm.evaluation.report`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import set_seed
from transformers.utils import logging

from hf_llm.command_output import check_command_output_dir
from hf_llm.errors import UsageError

from ..loading import check_model_kind, check_model_source, is_adapter, load_model_for_evaluation
from ..stages import stage_for_eval_task
from .arguments import TASK_MODEL_KINDS, EvaluationArguments
from .perplexity import model_max_length
from .report import REPORT_FILES, build_manifest, write_evaluation_report
from .tasks import EVALUATORS

logger = logging.get_logger(__name__)


def load_evaluation_split(args: EvaluationArguments, data_args):
    """The `args.split` split of the task's dataset, in the stage's data format with canonical columns."""
    from hf_llm.data import load_dataset_from_args

    data_format = stage_for_eval_task(args.task).data_format
    dataset_dict = load_dataset_from_args(data_args, data_format, seed=args.seed)
    if args.split not in dataset_dict:
        raise UsageError(
            f"split {args.split!r} not found in {data_args.dataset_name!r}; splits are {list(dataset_dict)}; "
            "pass --split with one of them."
        )
    dataset = dataset_dict[args.split]
    if len(dataset) == 0:
        raise UsageError(f"split {args.split!r} of {data_args.dataset_name!r} is empty; nothing to evaluate.")
    return dataset


def run_evaluation(args: EvaluationArguments, data_args) -> dict:
    """Evaluate `args.model_name_or_path` on `args.task` and write the report to `args.output_dir`.

    Args:
        args (`EvaluationArguments`): model, task, split, output and evaluation settings.
        data_args (`hf_llm.data.DataArguments`): the dataset (`--dataset_name`, column mappings,
            `--max_eval_samples`, ...).

    Returns:
        `dict`: the content of `metrics.json`: `{"metrics": {...}, "manifest": {...}}`.
    """
    if data_args.dataset_name is None:
        raise UsageError("--dataset_name is required: a Hub dataset id, a local file or folder, or 'pydocs'.")
    # Where the report goes is checked first: never into a model's directory, never over a user's files.
    inputs = {
        "--model_name_or_path": args.model_name_or_path,
        "--tokenizer_name_or_path": args.tokenizer_name_or_path,
        "--reward_model_path": args.reward_model_path,
        "--reference_model_name_or_path": args.reference_model_name_or_path,
        "--dataset_name": data_args.dataset_name,
    }
    check_command_output_dir(
        args.output_dir,
        inputs={flag: path for flag, path in inputs.items() if path is not None},
        overwrite_output_dir=args.overwrite_output_dir,
        example_suffix="-eval",
        own_outputs=REPORT_FILES,
    )
    set_seed(args.seed)
    check_model_source(args.model_name_or_path)  # a missing or broken checkpoint is named before the data loads
    # The model must be of the kind the task scores (no random head, no perplexity of a classifier), before the data.
    check_model_kind(
        args.model_name_or_path, TASK_MODEL_KINDS[args.task], task=args.task, trust_remote_code=args.trust_remote_code
    )
    dataset = load_evaluation_split(args, data_args)
    num_labels = None
    if stage_for_eval_task(args.task).sequence_classification:
        # A LoRA classifier stores only its head's weights, so its size comes from the data (reward models: 1).
        num_labels = dataset.features["label"].num_classes if "label" in dataset.features else 1
    model, tokenizer = load_model_for_evaluation(
        args.model_name_or_path,
        args.task,
        tokenizer_name_or_path=args.tokenizer_name_or_path,
        num_labels=num_labels,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )

    logger.info(f"Evaluating {args.model_name_or_path} ({args.task}) on {len(dataset)} examples of {args.split}.")
    result = EVALUATORS[args.task](model, tokenizer, dataset, args)

    manifest = build_manifest(
        args,
        data_args,
        dataset,
        model,
        is_adapter=is_adapter(args.model_name_or_path),
        max_length=args.max_length or model_max_length(model),
        settings=result.settings,
    )
    report = write_evaluation_report(args.output_dir, result.metrics, manifest, result.samples)
    logger.info(f"Wrote {Path(args.output_dir) / 'metrics.json'} and {Path(args.output_dir) / 'metrics.md'}.")
    return report


def main(argv: list[str] | None = None) -> dict:
    """The `hf-llm eval` / `python eval/evaluate_model.py` command, raising on a user's mistake.

    Parses `EvaluationArguments` and `hf_llm.data.DataArguments` from `argv` (default `sys.argv[1:]`) with TRL's
    parser, so `--config recipe.yaml` sets defaults that later flags override, and runs [`run_evaluation`]. Entry
    points wrap it in `hf_llm.errors.exit_on_user_error` and print [`summary`].

    Args:
        argv (`list[str]`, *optional*): command-line arguments, without the program name.

    Returns:
        `dict`: the content of `metrics.json`, plus `output_dir`.
    """
    from hf_llm.data import DataArguments
    from hf_llm.parser import RecipeParser

    parser = RecipeParser((EvaluationArguments, DataArguments))
    args, data_args = parser.parse_args_and_config(args=argv)
    report = run_evaluation(args, data_args)
    report["output_dir"] = str(args.output_dir)
    return report


def summary(report: dict) -> str:
    """The headline numbers of a report as JSON, and where `metrics.md` is."""
    numbers = {name: value for name, value in report["metrics"].items() if isinstance(value, (int, float))}
    return f"{json.dumps(numbers, indent=2)}\nReport: {Path(report['output_dir']) / 'metrics.md'}"


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    """`hf-llm eval`: its flags are [`EvaluationArguments`] and `DataArguments`, parsed by [`main`]."""
    command = commands.add_parser("eval", help="evaluate a checkpoint (see `hf-llm eval --help`)", add_help=False)
    command.set_defaults(run=run_eval_command, forwards_argv=True)


def run_eval_command(args: argparse.Namespace) -> int:
    """Evaluate with the flags after `hf-llm eval` and print the headline numbers."""
    print(summary(main(args.forwarded_argv)))
    return 0
