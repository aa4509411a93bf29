"""The pieces of `train_scripts/classifier.py`: its training config, tokenization, class weights, baselines and label
files.

The classifier stage fine-tunes `AutoModelForSequenceClassification` (a new `score` head on the last non-pad token)
with `transformers.Trainer`; LoRA/QLoRA come from [`hf_llm.training.finetuning`].
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from datasets import DatasetDict
from transformers import PreTrainedTokenizerBase, TrainingArguments
from transformers.utils import logging

from hf_llm.data import DataArguments, apply_overlong_strategy
from hf_llm.errors import UsageError
from hf_llm.evaluation.baselines import classification_baseline_metrics

from .finetuning import accelerator_available
from .output_dir import FineTuningOutputArguments

logger = logging.get_logger(__name__)

CLASS_WEIGHTS = ("none", "balanced")
#: File next to a classifier adapter that records its classes (an adapter directory must hold no `config.json`,
#: or transformers tries to load it as a full model).
LABELS_FILE = "labels.json"


@dataclass
class ClassifierConfig(FineTuningOutputArguments, TrainingArguments):
    """
    `transformers.TrainingArguments` for the classifier stage, with [`FineTuningOutputArguments`]
    (`--overwrite_output_dir`, `--merge_adapter`). Every TrainingArguments flag works unchanged.

    Changed defaults: evaluation and saving every epoch, the best checkpoint by macro-F1 kept and reloaded at the end
    (`load_best_model_at_end`), TensorBoard logging, no bf16 on a CPU.

    Args:
        class_weights (`str`, defaults to `"none"`):
            `"balanced"` weighs each class's loss by `n_examples / (n_classes * n_examples_of_class)` on the training
            split (scikit-learn's convention), for unbalanced data; `"none"` is plain cross-entropy.
        early_stopping_patience (`int`, *optional*):
            Stop after this many evaluations without a `metric_for_best_model` improvement of at least
            `early_stopping_threshold`. Needs `load_best_model_at_end`.
        early_stopping_threshold (`float`, defaults to 0.0):
            Smallest improvement that counts.
        resume_from_checkpoint (`str`, *optional*):
            A `checkpoint-N` directory, or `"latest"` for the newest complete checkpoint in `output_dir`.
        trust_remote_code (`bool`, defaults to `False`):
            Allow custom code from the Hub when loading the base model.
    """

    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: 'no', 'steps' or 'epoch'."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save: 'no', 'steps', 'epoch' or 'best'."})
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Reload the best checkpoint (by metric_for_best_model) at the end."}
    )
    metric_for_best_model: str | None = field(
        default="macro_f1", metadata={"help": "Metric that picks the best checkpoint: macro_f1, accuracy or loss."}
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept (the best one is never deleted)."}
    )
    report_to: None | str | list[str] = field(
        default="tensorboard", metadata={"help": "Integrations to log to ('none' to disable)."}
    )
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: on a GPU with bf16."})
    class_weights: str = field(
        default="none", metadata={"help": "'balanced' weighs the loss by inverse class frequency; 'none' does not."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after N evaluations without improvement of metric_for_best_model."}
    )
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "Smallest improvement that counts."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint-N directory, or 'latest' (newest complete one in output_dir)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom code from the Hub."})

    def __post_init__(self):
        if self.class_weights not in CLASS_WEIGHTS:
            raise UsageError(
                f"--class_weights {self.class_weights!r} is unknown; choose one of {list(CLASS_WEIGHTS)}."
            )
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("--push_to_hub needs --hub_model_id, e.g. --hub_model_id your-name/gpt-classifier.")
        if self.early_stopping_patience is not None and not self.load_best_model_at_end:
            raise UsageError("--early_stopping_patience needs --load_best_model_at_end true (and a metric to watch).")
        if self.eval_strategy == "no" and self.load_best_model_at_end:
            # Nothing to pick the best checkpoint from: a run without evaluation keeps its last weights.
            self.load_best_model_at_end = False
        if self.bf16 is None:
            self.bf16 = accelerator_available() and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            self.bf16 = self.bf16 and not self.fp16 and not self.use_cpu
        super().__post_init__()


def tokenize_for_classification(
    dataset: DatasetDict, tokenizer: PreTrainedTokenizerBase, data_args: DataArguments, *, max_length: int
) -> DatasetDict:
    """
    Tokenize the `text` column (no padding: the collator pads each batch) and apply `--overlong_strategy` to texts
    longer than `--max_seq_length` (default: the model's context), counting them.

    Args:
        dataset (`DatasetDict`): `text` and `label` columns (from `load_dataset_from_args(..., "classification")`).
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer.
        data_args (`DataArguments`): `max_seq_length`, `overlong_strategy`, `preprocessing_num_workers`.
        max_length (`int`): The model's context length; `--max_seq_length` may not exceed it.

    Returns:
        `DatasetDict`: `input_ids`, `attention_mask` and `label`.
    """
    limit = data_args.max_seq_length or max_length
    if limit > max_length:
        raise UsageError(
            f"--max_seq_length {limit} exceeds the model's context length ({max_length}); pass --max_seq_length "
            f"{max_length} or less."
        )
    tokenized = dataset.map(
        lambda batch: tokenizer(batch["text"], add_special_tokens=False),
        batched=True,
        remove_columns=["text"],
        num_proc=data_args.preprocessing_num_workers,
        desc="Tokenizing",
    )
    return apply_overlong_strategy(
        tokenized, limit, data_args.overlong_strategy, num_proc=data_args.preprocessing_num_workers
    )


def balanced_class_weights(labels: list[int] | np.ndarray, num_labels: int) -> torch.Tensor:
    """
    `n / (num_labels * n_c)` per class `c` (scikit-learn's `"balanced"`): every class weighs the same in the loss.

    Raises:
        `ValueError`: A class has no training example (its weight would be infinite).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise UsageError(
            f"--class_weights balanced: classes {missing} have no training example; add examples or pass "
            "--class_weights none."
        )
    return torch.tensor(counts.sum() / (num_labels * counts), dtype=torch.float32)


def weighted_cross_entropy(class_weights: torch.Tensor) -> Callable:
    """
    A `Trainer(compute_loss_func=...)` loss: cross-entropy with per-class weights, torch's weighted mean over the batch
    (the sum of weighted losses divided by the sum of the examples' weights).
    """

    def loss(outputs, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return F.cross_entropy(logits, labels.to(logits.device), weight=class_weights.to(logits.device, logits.dtype))

    return loss


class ClassificationBaselines:
    """
    The majority-class and TF-IDF + logistic-regression baselines of one classifier run: fitted on the run's train
    split, scored on any of its splits, and compared with the classifier's scores there
    (`hf_llm.evaluation.baselines`). The TF-IDF model's `C` is cross-validated once, on the first split scored.

    The baselines see the split before tokenization: with `--overlong_strategy drop` they score the examples the
    classifier never saw too (the drop is counted in the log).

    Args:
        dataset (`DatasetDict`): The run's splits (`text`, `label`), as loaded.
        seed (`int`): Seed of the TF-IDF model's cross-validation folds and solver.
    """

    def __init__(self, dataset: DatasetDict, *, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.tfidf_c: float | None = None

    def metrics(self, split: str, model_metrics: dict[str, float], prefix: str) -> dict:
        """
        The baselines on `split` beside the classifier's `{prefix}_accuracy` and `{prefix}_macro_f1`, keys prefixed
        like Trainer's (`test_tfidf_accuracy`, `test_accuracy_minus_tfidf`, `test_baseline_verdict`, ...).
        """
        if split not in self.dataset or f"{prefix}_accuracy" not in model_metrics:
            return {}
        train, evaluated = self.dataset["train"], self.dataset[split]
        result = classification_baseline_metrics(
            train["text"],
            train["label"],
            evaluated["text"],
            evaluated["label"],
            num_labels=train.features["label"].num_classes,
            accuracy=model_metrics[f"{prefix}_accuracy"],
            macro_f1=model_metrics[f"{prefix}_macro_f1"],
            prefix=f"{prefix}_",
            model="The classifier",
            seed=self.seed,
            c=self.tfidf_c,
        )
        self.tfidf_c = result[f"{prefix}_tfidf_c"]
        return result

    def log_verdict(self, metrics: dict) -> None:
        """Say on the console how the classifier compares with TF-IDF on the test split (else validation)."""
        prefix = "test" if "test_baseline_verdict" in metrics else "eval"
        verdict = metrics.get(f"{prefix}_baseline_verdict")
        if verdict is None:
            return
        split = "test" if prefix == "test" else "validation"
        if metrics[f"{prefix}_beats_tfidf"]:
            logger.info(f"{split} split: {verdict}")
        else:
            logger.warning(f"{split} split: {verdict}")


def save_labels(output_dir: str, id2label: dict[int, str]) -> str:
    """Write `labels.json` (`{"id2label": {...}}`) next to a classifier adapter; `merge_adapter` reads it."""
    path = os.path.join(output_dir, LABELS_FILE)
    os.makedirs(output_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"id2label": {str(i): name for i, name in id2label.items()}}, f, indent=2)
    return path
