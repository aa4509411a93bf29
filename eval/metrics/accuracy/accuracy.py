"""Accuracy as an offline `evaluate` module: `evaluate.load("eval/metrics/accuracy")`.

Self-contained (NumPy only) so it loads with `HF_HUB_OFFLINE=1` and can be pushed to a Hub Space as is.
Every import sits on its own line: `evaluate` scans this file line by line for the libraries it needs.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy is the fraction of predictions that equal their reference label:

    accuracy = sum_i w_i * [prediction_i == reference_i] / sum_i w_i

with every weight `w_i = 1` unless `sample_weight` is given. It lies in [0, 1]; with `normalize=False` the
(weighted) count of correct predictions is returned instead.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels.
    references (`list[int]`): ground-truth labels, one per prediction.
    normalize (`bool`, defaults to `True`): return the fraction of correct predictions; with `False`, the
        (weighted) number of correct predictions.
    sample_weight (`list[float]`, *optional*): one non-negative weight per prediction.

Returns:
    `dict`: `{"accuracy": float}`, in [0, 1] when `normalize=True`.

Examples:
    >>> import evaluate
    >>> accuracy = evaluate.load("eval/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75}
    >>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], normalize=False)
    {'accuracy': 3.0}
    >>> accuracy.compute(predictions=[0, 1], references=[0, 0], sample_weight=[3.0, 1.0])
    {'accuracy': 0.75}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Fraction (or weighted count) of predictions equal to their reference label."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(
        self,
        predictions: list[int],
        references: list[int],
        normalize: bool = True,
        sample_weight: list[float] | None = None,
    ) -> dict[str, float]:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.size == 0:
            raise ValueError("accuracy got empty `predictions` and `references`; pass at least one pair to score.")
        correct = (predictions == references).astype(np.float64)
        if sample_weight is None:
            weights = np.ones_like(correct)
        else:
            weights = np.asarray(sample_weight, dtype=np.float64)
            if weights.shape != correct.shape:
                raise ValueError(
                    f"accuracy got {weights.size} `sample_weight` values for {correct.size} predictions; "
                    "pass one weight per prediction."
                )
            if (weights < 0).any():
                raise ValueError("accuracy got a negative `sample_weight`; weights must be >= 0.")
        score = float((correct * weights).sum())
        if normalize:
            total = float(weights.sum())
            if total == 0.0:
                raise ValueError("accuracy got `sample_weight` summing to 0; at least one weight must be positive.")
            score /= total
        return {"accuracy": score}
