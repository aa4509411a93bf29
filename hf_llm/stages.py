"""One stage vocabulary: stage = script name = model-card stage = pipeline stage.

Data formats are a separate vocabulary (what the rows look like); evaluation tasks name the evaluator that measures
a stage's artifact. This table is the one place that maps one onto the other.

| stage | script | data format (columns) | evaluation task: metrics |
|---|---|---|---|
| `pretrain` | `pretrain.py` | `text` (`text`) | `pretrain`: perplexity, bits per byte |
| `classifier` | `classifier.py` | `classification` (`text`, `label`) | `classifier`: accuracy, F1 |
| `sft` | `sft.py` | `instruction` (`instruction`, `input`, `output`; or `messages`) | `sft`: BLEU, perplexity |
| `reward` | `reward.py` | `preference` (`prompt`, `chosen`, `rejected`) | `reward`: pairwise accuracy, margin |
| `ppo` | `ppo.py` | `instruction` (its prompts) | `win_rate`: mean reward, win rate vs. the SFT policy |
| `dpo` | `dpo.py` | `preference` (`prompt`, `chosen`, `rejected`) | `win_rate` |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hf_llm.errors import UsageError


@dataclass(frozen=True)
class Stage:
    """One stage of a model's life and the vocabulary around it."""

    name: str
    """Stage name: also the script name (`train_scripts/<name>.py`), the model-card tag and the pipeline step."""
    data_format: str
    """What the training rows look like: `text`, `classification`, `instruction` or `preference`."""
    eval_task: str
    """The `hf-llm eval --task` that measures the stage's artifact."""
    sequence_classification: bool
    """Whether the artifact is a sequence classifier (a `score` head) rather than a causal LM."""


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("pretrain", "text", "pretrain", False),
        Stage("classifier", "classification", "classifier", True),
        Stage("sft", "instruction", "sft", False),
        Stage("reward", "preference", "reward", True),
        Stage("ppo", "instruction", "win_rate", False),
        Stage("dpo", "preference", "win_rate", False),
    )
}
STAGE_NAMES: tuple[str, ...] = tuple(STAGES)
DATA_FORMATS: tuple[str, ...] = ("text", "classification", "instruction", "preference")
EVAL_TASKS: tuple[str, ...] = tuple(dict.fromkeys(stage.eval_task for stage in STAGES.values()))


def stage_for_eval_task(task: str) -> Stage:
    """The first stage an evaluation task measures: its data format and whether the model is a classifier."""
    for stage in STAGES.values():
        if stage.eval_task == task:
            return stage
    raise UsageError(f"unknown evaluation task {task!r}; --task must be one of {list(EVAL_TASKS)}.")


@dataclass
class PipelineStep:
    """One step of `hf-llm pipeline`: a command run from the checkout, the directory it fills and its log."""

    name: str
    """`tokenizer`, a stage name (`pretrain`, `sft`, ...), or `eval-<what>` for an evaluation."""
    stage: str
    """The stage this step belongs to (`--stages` selects by it): `tokenizer` or one of `hf_llm.stages.STAGE_NAMES`."""
    command: list[str]
    output_dir: Path
    done_file: str
    """A file the step writes last; with the state file it tells a finished step from an interrupted one."""
    log_file: Path = field(default=Path())
