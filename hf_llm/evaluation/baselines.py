"""Baselines every classification and SFT result is shown beside, so a reader sees whether the model earns its cost.

- **Classification**: the majority class of the training split, and TF-IDF + logistic regression (scikit-learn)
  fitted on the training split; both scored on the evaluated split with the same accuracy and macro-F1 as the model
  ([`classification_baselines`]). [`compare_to_baselines`] adds the differences and a plain sentence when the model
  does not beat TF-IDF.
- **Instruction following (SFT)**: copy the answer of the most similar training instruction (nearest neighbour by
  TF-IDF cosine similarity, [`nearest_neighbour_answers`]); its BLEU, computed exactly as the model's, tells whether
  the model learned more than retrieval.

The TF-IDF settings are fixed and recorded with every result ([`TFIDF_SETTINGS`]): word unigrams and bigrams with
sublinear term frequency, and an L2-regularised logistic regression whose strength `C` is picked by stratified
cross-validation on the training split alone (never on the evaluated split), so the baseline is a fair one, not a
straw man.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from .classification import classification_report

#: The TF-IDF + logistic-regression baseline's settings (written next to its numbers).
TFIDF_SETTINGS: dict = {
    "vectorizer": "TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)",
    "classifier": "LogisticRegression(solver='saga'), C in (1, 10, 100) picked by stratified 5-fold CV on train",
}
_C_GRID = (1.0, 10.0, 100.0)


def majority_class_predictions(train_labels: Sequence[int], num_examples: int) -> np.ndarray:
    """
    Predict the most frequent training class for every example (ties go to the smallest class id, as scikit-learn's
    `DummyClassifier(strategy="most_frequent")` does).
    """
    counts = Counter(int(label) for label in train_labels)
    if not counts:
        raise ValueError("the training split has no labels; a baseline needs at least one training example.")
    top = max(counts.values())
    majority = min(label for label, count in counts.items() if count == top)
    return np.full(num_examples, majority, dtype=np.int64)


def _tfidf_pipeline(c: float, seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=c, solver="saga", max_iter=5000, random_state=seed),
    )


def _pick_c(train_texts: list[str], train_labels: np.ndarray, seed: int) -> float:
    """The regularisation strength with the best mean cross-validated accuracy on the training split."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    counts = Counter(train_labels.tolist())
    folds = min(5, min(counts.values()))
    if folds < 2 or len(counts) < 2:
        return 1.0  # too few examples of some class to cross-validate: scikit-learn's default
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = [
        cross_val_score(_tfidf_pipeline(c, seed), train_texts, train_labels, cv=splitter).mean() for c in _C_GRID
    ]
    return _C_GRID[int(np.argmax(scores))]


def tfidf_logistic_regression_predictions(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    texts: Sequence[str],
    *,
    seed: int = 0,
    c: float | None = None,
) -> tuple[np.ndarray, float]:
    """
    Fit TF-IDF + logistic regression on the training split and predict `texts`.

    Args:
        train_texts (`Sequence[str]`): The training split's texts.
        train_labels (`Sequence[int]`): Their class ids.
        texts (`Sequence[str]`): The texts to classify (the evaluated split).
        seed (`int`, defaults to 0): Seed of the cross-validation folds and the solver.
        c (`float`, *optional*): The inverse regularisation strength; default: picked by cross-validation on train.

    Returns:
        `tuple[np.ndarray, float]`: The predicted class ids and the `C` used.
    """
    train_texts = list(train_texts)
    labels = np.asarray(train_labels, dtype=np.int64)
    if len(set(labels.tolist())) < 2:
        # Logistic regression needs two classes; with one, every prediction is that class.
        return majority_class_predictions(labels, len(texts)), float("nan")
    chosen = c if c is not None else _pick_c(train_texts, labels, seed)
    model = _tfidf_pipeline(chosen, seed).fit(train_texts, labels)
    return np.asarray(model.predict(list(texts)), dtype=np.int64), chosen


def classification_baselines(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    num_labels: int,
    seed: int = 0,
    c: float | None = None,
) -> dict:
    """
    The majority-class and TF-IDF + logistic-regression baselines, trained on one split and scored on another.

    Args:
        train_texts (`Sequence[str]`), train_labels (`Sequence[int]`): The split the baselines learn from (the one
            the model was trained on).
        texts (`Sequence[str]`), labels (`Sequence[int]`): The evaluated split.
        num_labels (`int`): The number of classes (the size of the confusion matrix).
        seed (`int`, defaults to 0): Seed of the TF-IDF model's cross-validation folds and solver.
        c (`float`, *optional*): The TF-IDF model's `C`; default: picked by cross-validation on the training split
            (pass an earlier result's `tfidf_c` to score a second split without cross-validating again).

    Returns:
        `dict`: `majority_accuracy`, `majority_macro_f1`, `tfidf_accuracy`, `tfidf_macro_f1`, `tfidf_c` (the chosen
        regularisation), `num_train_examples`.
    """
    if len(train_texts) != len(train_labels) or len(texts) != len(labels):
        raise ValueError("each text needs one label: the baselines got lists of different lengths.")
    majority = classification_report(
        majority_class_predictions(train_labels, len(labels)), labels, num_labels=num_labels
    )
    predictions, c = tfidf_logistic_regression_predictions(train_texts, train_labels, texts, seed=seed, c=c)
    tfidf = classification_report(predictions, labels, num_labels=num_labels)
    return {
        "majority_accuracy": majority["accuracy"],
        "majority_macro_f1": majority["macro_f1"],
        "tfidf_accuracy": tfidf["accuracy"],
        "tfidf_macro_f1": tfidf["macro_f1"],
        "tfidf_c": c,
        "num_train_examples": len(train_labels),
    }


def baseline_verdict(accuracy: float, tfidf_accuracy: float, *, model: str = "The model") -> str:
    """
    One plain sentence comparing a model's accuracy with the TF-IDF baseline's: a warning when it does not beat it.
    """
    gap = 100 * (accuracy - tfidf_accuracy)
    if gap > 0:
        return f"{model} beats the TF-IDF + logistic-regression baseline by {gap:.1f} accuracy points."
    return (
        f"{model} does not beat the TF-IDF + logistic-regression baseline ({100 * accuracy:.1f}% vs "
        f"{100 * tfidf_accuracy:.1f}% accuracy): a bag-of-words model classifies this data as well, for a fraction "
        "of the cost. What to try: docs/fine-tuning.md, 'Small labeled data on a CPU'."
    )


def compare_to_baselines(accuracy: float, macro_f1: float, baselines: dict, *, model: str = "The model") -> dict:
    """
    The model's margins over the baselines and the verdict sentence, to merge into its metrics.

    Args:
        accuracy (`float`), macro_f1 (`float`): The model's scores on the evaluated split.
        baselines (`dict`): [`classification_baselines`]'s result on the same split.
        model (`str`, defaults to `"The model"`): How the sentence names the model.

    Returns:
        `dict`: `accuracy_minus_majority`, `accuracy_minus_tfidf`, `macro_f1_minus_tfidf`, `beats_tfidf` and
        `baseline_verdict`.
    """
    return {
        "accuracy_minus_majority": accuracy - baselines["majority_accuracy"],
        "accuracy_minus_tfidf": accuracy - baselines["tfidf_accuracy"],
        "macro_f1_minus_tfidf": macro_f1 - baselines["tfidf_macro_f1"],
        "beats_tfidf": bool(accuracy > baselines["tfidf_accuracy"]),
        "baseline_verdict": baseline_verdict(accuracy, baselines["tfidf_accuracy"], model=model),
    }


def classification_baseline_metrics(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    num_labels: int,
    accuracy: float,
    macro_f1: float,
    prefix: str = "",
    model: str = "The model",
    seed: int = 0,
    c: float | None = None,
) -> dict:
    """
    [`classification_baselines`] and [`compare_to_baselines`] in one flat dict, keys prefixed (e.g. `prefix="test_"`
    gives `test_tfidf_accuracy`, `test_accuracy_minus_tfidf`, `test_baseline_verdict`), as Trainer's metrics are.
    """
    baselines = classification_baselines(
        train_texts, train_labels, texts, labels, num_labels=num_labels, seed=seed, c=c
    )
    compared = compare_to_baselines(accuracy, macro_f1, baselines, model=model)
    return {f"{prefix}{key}": value for key, value in {**baselines, **compared}.items()}


def bleu_verdict(bleu: float, nearest_neighbour_bleu: float, *, model: str = "The model") -> str:
    """One plain sentence comparing a model's BLEU with that of copying the nearest training answer."""
    if bleu > nearest_neighbour_bleu:
        return (
            f"{model}'s answers score {bleu - nearest_neighbour_bleu:.3f} BLEU above copying the answer of the most "
            "similar training instruction."
        )
    return (
        f"{model} does not beat copying the answer of the most similar training instruction ({bleu:.3f} vs "
        f"{nearest_neighbour_bleu:.3f} BLEU): by this measure it has learned no more than retrieval from its "
        "training data."
    )


def nearest_neighbour_answers(
    train_instructions: Sequence[str], train_answers: Sequence[str], instructions: Sequence[str]
) -> list[str]:
    """
    For each instruction, the answer of the most similar training instruction (TF-IDF word unigrams and bigrams,
    cosine similarity; the first on ties): what pure retrieval from the training data would answer.

    Args:
        train_instructions (`Sequence[str]`): The training prompts (instruction and input, as the model sees them).
        train_answers (`Sequence[str]`): Their reference answers.
        instructions (`Sequence[str]`): The evaluated prompts.

    Returns:
        `list[str]`: One copied training answer per evaluated prompt.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(train_instructions) != len(train_answers):
        raise ValueError("each training instruction needs one answer: got lists of different lengths.")
    if not train_instructions:
        raise ValueError("the training split is empty; the nearest-neighbour baseline needs training answers.")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    train_matrix = vectorizer.fit_transform(list(train_instructions))
    similarity = vectorizer.transform(list(instructions)) @ train_matrix.T  # rows are L2-normalised: cosine
    nearest = np.asarray(similarity.argmax(axis=1)).reshape(-1)
    return [train_answers[int(i)] for i in nearest]
