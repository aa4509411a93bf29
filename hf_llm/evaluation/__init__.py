"""Evaluation: offline `evaluate` metrics found by path, Trainer metric hooks, and the evaluate-a-checkpoint command.

Modules
    `evaluate_model`: `EvaluationArguments`, `run_evaluation(args, data_args) -> dict`, `main(argv=None)`: the
    `hf-llm eval` command (also `python eval/evaluate_model.py`), writing `metrics.json` (with a manifest) and
    `metrics.md`.
    `tasks`: the evaluators, one per `--task` (`EVALUATORS`, `TASKS`, `TaskResult`).
    `inference`: batched scoring and greedy generation the evaluators share.
    `report`: manifest, `library_versions()`, `format_value`, markdown, plots (also used by model cards and the
    pipeline report).

Checkpoints are loaded by `hf_llm.loading` (`load_model_for_evaluation`, `load_reward_model`).

Public API
    `metric_path(name, metrics_dir=None)`, `load_metric(name, metrics_dir=None)`: the `evaluate` modules in
    `eval/metrics/<name>/` (`accuracy`, `bleu`, `perplexity`), found relative to the checkout.
    `compute_perplexity(model, tokenizer, texts, ...)`: token-weighted, batched, sliding-window perplexity.
    `classification_report(predictions, references)`: accuracy, macro-F1, confusion matrix.
    Trainer hooks: `preprocess_logits_for_causal_lm_metrics` + `compute_causal_lm_metrics` (eval perplexity and
    token accuracy without holding logits), `preprocess_logits_for_classification` + `compute_classification_metrics`.
"""

from .arguments import EvaluationArguments
from .classification import classification_report
from .evaluate_model import main, run_evaluation
from .metrics import DEFAULT_METRICS_DIR, load_metric, metric_path
from .perplexity import compute_perplexity, model_max_length, perplexity_from_loss
from .tasks import EVALUATORS, TASKS, TaskResult
from .trainer_metrics import (
    compute_causal_lm_metrics,
    compute_classification_metrics,
    preprocess_logits_for_causal_lm_metrics,
    preprocess_logits_for_classification,
)

__all__ = [
    "DEFAULT_METRICS_DIR",
    "EVALUATORS",
    "TASKS",
    "TaskResult",
    "EvaluationArguments",
    "classification_report",
    "compute_causal_lm_metrics",
    "compute_classification_metrics",
    "compute_perplexity",
    "load_metric",
    "main",
    "metric_path",
    "model_max_length",
    "perplexity_from_loss",
    "preprocess_logits_for_causal_lm_metrics",
    "preprocess_logits_for_classification",
    "run_evaluation",
]
