"""Classification scores in NumPy: accuracy, macro-F1 and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_llm.errors import UsageError


def classification_report(
    predictions: Sequence[int] | np.ndarray,
    references: Sequence[int] | np.ndarray,
    num_labels: int | None = None,
) -> dict:
    """Accuracy, macro-F1 and confusion matrix of integer predictions against integer labels.

    Macro-F1 averages the per-class F1 over every class that occurs in the references or the predictions (a
    class with no true, predicted or correct example scores F1 = 0, as in scikit-learn with `zero_division=0`).

    Args:
        predictions (`Sequence[int]`): predicted class ids.
        references (`Sequence[int]`): true class ids, one per prediction.
        num_labels (`int`, *optional*): size of the confusion matrix; defaults to `max(label) + 1`.

    Returns:
        `dict` with `accuracy`, `macro_f1`, `f1_per_class` (list, one per class id) and `confusion_matrix`
        (`list[list[int]]`, rows are true classes, columns predicted classes).
    """
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    references = np.asarray(references, dtype=np.int64).reshape(-1)
    if predictions.shape != references.shape:
        raise UsageError(
            f"got {predictions.size} predictions for {references.size} references; pass one per reference."
        )
    if predictions.size == 0:
        raise UsageError("got no predictions to score; the evaluation split is empty.")
    if min(predictions.min(), references.min()) < 0:
        raise UsageError("class ids must be >= 0 (a -100 label means the example was not labeled).")
    size = int(max(predictions.max(), references.max())) + 1
    if num_labels is not None:
        if size > num_labels:
            raise UsageError(f"found class id {size - 1} but num_labels={num_labels}.")
        size = num_labels
    confusion = np.zeros((size, size), dtype=np.int64)
    np.add.at(confusion, (references, predictions), 1)
    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    actual = confusion.sum(axis=1).astype(np.float64)
    denominator = predicted + actual
    f1 = np.divide(2 * true_positives, denominator, out=np.zeros(size), where=denominator > 0)
    present = denominator > 0  # classes absent from both sides are left out of the macro average
    return {
        "accuracy": float(true_positives.sum() / predictions.size),
        "macro_f1": float(f1[present].mean()),
        "f1_per_class": f1.tolist(),
        "confusion_matrix": confusion.tolist(),
    }
