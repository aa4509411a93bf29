"""Trainer metric hooks and the NumPy classification scores equal independent computations."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_gpt_config
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, EvalPrediction, Trainer, TrainingArguments

from hf_llm import GPTForCausalLM
from hf_llm.evaluation import (
    classification_report,
    compute_causal_lm_metrics,
    compute_classification_metrics,
    compute_perplexity,
    load_metric,
    preprocess_logits_for_causal_lm_metrics,
    preprocess_logits_for_classification,
)


def _scores_by_loops(predictions, references, num_labels):
    confusion = [[0] * num_labels for _ in range(num_labels)]
    for p, r in zip(predictions, references, strict=True):
        confusion[r][p] += 1
    f1s = []
    for c in range(num_labels):
        tp = confusion[c][c]
        fp = sum(confusion[r][c] for r in range(num_labels)) - tp
        fn = sum(confusion[c]) - tp
        if tp + fp + fn == 0:
            continue  # class absent from both sides
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    accuracy = sum(confusion[c][c] for c in range(num_labels)) / len(references)
    return accuracy, sum(f1s) / len(f1s), confusion


def test_classification_report_equals_loops():
    rng = np.random.default_rng(1)
    references = rng.integers(0, 4, 150)
    predictions = np.where(rng.random(150) < 0.6, references, rng.integers(0, 4, 150))
    predictions[predictions == 2] = 1  # class 2 is never predicted: F1 0, still in the macro average
    report = classification_report(predictions, references, num_labels=5)  # class 4 absent everywhere
    accuracy, macro_f1, confusion = _scores_by_loops(predictions.tolist(), references.tolist(), 5)
    assert report["accuracy"] == pytest.approx(accuracy, rel=1e-12)
    assert report["macro_f1"] == pytest.approx(macro_f1, rel=1e-12)
    assert report["confusion_matrix"] == confusion
    assert report["f1_per_class"][2] == 0.0
    # The same accuracy as the evaluate module.
    module = load_metric("accuracy").compute(predictions=predictions.tolist(), references=references.tolist())
    assert report["accuracy"] == pytest.approx(module["accuracy"], rel=1e-12)


def test_classification_report_bad_input():
    with pytest.raises(ValueError, match="2 predictions for 3 references"):
        classification_report([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="empty"):
        classification_report([], [])
    with pytest.raises(ValueError, match="-100"):
        classification_report([0, 1], [0, -100])


def test_classification_hooks_equal_argmax_accuracy():
    rng = np.random.default_rng(2)
    logits = torch.tensor(rng.normal(size=(40, 3)))
    labels = torch.tensor(rng.integers(0, 3, 40))
    predictions = preprocess_logits_for_classification((logits,), labels)
    assert predictions.shape == (40,)  # one label per example, not the logits
    metrics = compute_classification_metrics(EvalPrediction(predictions=predictions.numpy(), label_ids=labels.numpy()))
    expected_accuracy, expected_f1, _ = _scores_by_loops(logits.argmax(-1).tolist(), labels.tolist(), 3)
    assert metrics["accuracy"] == pytest.approx(expected_accuracy, rel=1e-12)
    assert metrics["macro_f1"] == pytest.approx(expected_f1, rel=1e-12)
    # Raw logits work too.
    from_logits = compute_classification_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=labels.numpy()))
    assert from_logits == metrics


@pytest.fixture(scope="module")
def causal_lm(tiny_tokenizer):
    torch.manual_seed(0)
    return GPTForCausalLM(tiny_gpt_config(tiny_tokenizer)).eval()


TEXTS = [
    "a short one",
    "a somewhat longer text about cats and mats and hats",
    "x = 1",
    "def f(a):\n    return a * 2",
    "the longest text of them all, so that batches hold very different token counts",
]


def test_causal_lm_preprocess_reduces_logits_to_three_numbers(causal_lm, tiny_tokenizer):
    ids = [tiny_tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS[:2]]
    batch = tiny_tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        logits = causal_lm(**batch).logits
    stats = preprocess_logits_for_causal_lm_metrics(logits, labels)
    assert stats.shape == (2, 3)
    for row, sequence in enumerate(ids):
        log_probs = torch.log_softmax(logits[row, : len(sequence) - 1].double(), dim=-1)
        nll = -sum(log_probs[t, sequence[t + 1]].item() for t in range(len(sequence) - 1))
        correct = sum(int(log_probs[t].argmax() == sequence[t + 1]) for t in range(len(sequence) - 1))
        assert stats[row].tolist() == pytest.approx([nll, len(sequence) - 1, correct], rel=1e-5)


def test_trainer_eval_perplexity_is_token_weighted(causal_lm, tiny_tokenizer, tmp_path):
    tokenizer = tiny_tokenizer
    dataset = Dataset.from_dict(
        {"input_ids": [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]}
    )
    trainer = Trainer(
        model=causal_lm,
        args=TrainingArguments(
            output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True, disable_tqdm=True
        ),
        eval_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        compute_metrics=compute_causal_lm_metrics,
        preprocess_logits_for_metrics=preprocess_logits_for_causal_lm_metrics,
    )
    metrics = trainer.evaluate()
    expected = compute_perplexity(causal_lm, tokenizer, TEXTS, add_start_token=False)
    assert metrics["eval_perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    assert 0.0 <= metrics["eval_token_accuracy"] <= 1.0
    # eval_loss averages per-batch means, so its exp is not the corpus perplexity when batches differ in size.
    assert math.exp(metrics["eval_loss"]) != pytest.approx(metrics["eval_perplexity"], rel=1e-4)


def test_causal_lm_metrics_without_scored_tokens():
    with pytest.raises(ValueError, match="every label is -100"):
        compute_causal_lm_metrics(EvalPrediction(predictions=np.zeros((2, 3)), label_ids=np.zeros((2, 4))))
