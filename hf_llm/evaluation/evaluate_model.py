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
from dataclasses import dataclass, field
from pathlib import Path

from transformers import set_seed
from transformers.utils import logging

from ..loading import check_model_source
from ..stages import stage_for_eval_task
from .loading import is_adapter, load_model_for_evaluation
from .perplexity import model_max_length
from .report import build_manifest, write_evaluation_report
from .tasks import EVALUATORS, TASKS
from .win_rate import check_reward_model

logger = logging.get_logger(__name__)


@dataclass
class EvaluationArguments:
    """
    What to evaluate, on which task and split, and where to write the report. Dataset flags (`--dataset_name`,
    column mappings, `--max_eval_samples`, ...) come from `hf_llm.data.DataArguments`.

    Args:
        model_name_or_path (`str`):
            Checkpoint to evaluate: a base, merged or LoRA-adapter `save_pretrained` directory, or a Hub repo id.
        task (`str`):
            What to measure: `"pretrain"`, `"classifier"`, `"sft"` or `"reward"` (the stage whose artifact it is;
            see `hf_llm.evaluation.tasks`).
        output_dir (`str`):
            Where `metrics.json`, `metrics.md` (and task extras) are written.
        split (`str`, defaults to `"test"`):
            Split of the loaded dataset to evaluate (`train`, `validation` or `test`).
        tokenizer_name_or_path (`str`, *optional*):
            Tokenizer to use; defaults to the checkpoint's (or, for an adapter, its base model's).
        batch_size (`int`, defaults to 8):
            Examples (or perplexity windows) per forward pass.
        max_length (`int`, *optional*):
            Longest token sequence fed to the model; defaults to the model's context length. Longer pretraining texts
            are scored with a sliding window; longer classifier/reward inputs and SFT prompts are
            truncated from the left (counted in the report).
        perplexity_stride (`int`, *optional*):
            How far the perplexity window moves over a long text; defaults to half of `max_length`.
        max_new_tokens (`int`, defaults to 64):
            Generation budget per SFT prompt (greedy decoding).
        bleu_tokenize (`str`, defaults to `"13a"`):
            sacrebleu tokenizer for BLEU (`"13a"`, `"intl"`, `"char"`, `"none"`, ...).
        seed (`int`, defaults to 42):
            Random seed, recorded in the manifest.
        metrics_dir (`str`, *optional*):
            The `eval/metrics` directory holding the `evaluate` modules; defaults to the checkout's.
        reward_model_name_or_path (`str`, *optional*):
            `win_rate` task: the reward model (a `reward.py` output) that scores the greedy answers.
        reference_model_name_or_path (`str`, *optional*):
            `win_rate` task: the policy the model is compared against (e.g. the SFT model it was aligned from).
        device (`str`, *optional*):
            `"cpu"`, `"cuda"`, ...; defaults to CUDA when available.
        trust_remote_code (`bool`, defaults to `False`):
            Allow code shipped with the checkpoint to run.
    """

    model_name_or_path: str = field(
        metadata={"help": "Base, merged or LoRA-adapter checkpoint: a save_pretrained directory or a Hub repo id."}
    )
    task: str = field(metadata={"help": f"What to measure: one of {', '.join(TASKS)} (the stage's evaluation)."})
    output_dir: str = field(metadata={"help": "Where metrics.json and metrics.md are written."})
    split: str = field(default="test", metadata={"help": "Dataset split to evaluate (train, validation or test)."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to use; defaults to the checkpoint's (or its base model's)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Examples (or perplexity windows) per forward pass."})
    max_length: int | None = field(
        default=None, metadata={"help": "Longest token sequence fed to the model; defaults to its context length."}
    )
    perplexity_stride: int | None = field(
        default=None, metadata={"help": "Sliding-window step for long texts; defaults to max_length // 2."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "sft task: tokens generated per prompt."})
    bleu_tokenize: str = field(default="13a", metadata={"help": "sacrebleu tokenizer: 13a, intl, char, none, ..."})
    seed: int = field(default=42, metadata={"help": "Random seed (recorded in the manifest)."})
    metrics_dir: str | None = field(
        default=None, metadata={"help": "The eval/metrics directory; defaults to the one in hf_llm's checkout."}
    )
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "win_rate task: the reward model (reward.py output) that scores answers."}
    )
    reference_model_name_or_path: str | None = field(
        default=None, metadata={"help": "win_rate task: the policy compared against (e.g. the SFT model)."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ...; defaults to CUDA when available."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code shipped with the checkpoint."})

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {list(TASKS)}, got {self.task!r}")
        for name in ("batch_size", "max_new_tokens", "max_length", "perplexity_stride"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be a positive integer, got {value}")


def load_evaluation_split(args: EvaluationArguments, data_args):
    """The `args.split` split of the task's dataset, in the stage's data format with canonical columns."""
    from hf_llm.data import load_dataset_from_args

    data_format = stage_for_eval_task(args.task).data_format
    dataset_dict = load_dataset_from_args(data_args, data_format, seed=args.seed)
    if args.split not in dataset_dict:
        raise ValueError(
            f"split {args.split!r} not found in {data_args.dataset_name!r}; splits are {list(dataset_dict)}; "
            "pass --split with one of them."
        )
    dataset = dataset_dict[args.split]
    if len(dataset) == 0:
        raise ValueError(f"split {args.split!r} of {data_args.dataset_name!r} is empty; nothing to evaluate.")
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
        raise ValueError("--dataset_name is required: a Hub dataset id, a local file or folder, or 'pydocs'.")
    set_seed(args.seed)
    check_model_source(args.model_name_or_path)  # a missing or broken checkpoint is named before the data loads
    if args.task == "reward":
        check_reward_model(args.model_name_or_path, trust_remote_code=args.trust_remote_code)  # not a random head
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
    from trl import TrlParser

    from hf_llm.data import DataArguments

    parser = TrlParser((EvaluationArguments, DataArguments))
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
