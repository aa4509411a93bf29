"""hf_llm.evaluation.baselines: the majority-class, TF-IDF and nearest-neighbour baselines equal scikit-learn computed
directly on a hand-made split, and every report (hf-llm eval, model card, pipeline report) shows them beside the
model, with a plain sentence when the model does not beat TF-IDF."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_gpt_config
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline

from hf_llm.evaluation.baselines import (
    classification_baseline_metrics,
    classification_baselines,
    compare_to_baselines,
    majority_class_predictions,
    nearest_neighbour_answers,
)

# Three topics, unbalanced (files is the majority), and wording that TF-IDF can and cannot separate.
TRAIN = [
    ("open a file and read its lines", 0),
    ("write the lines to a file", 0),
    ("delete a file from the disk", 0),
    ("list the entries of a directory", 0),
    ("copy a file into a directory", 0),
    ("rename a file on the disk", 0),
    ("send an HTTP request to a server", 1),
    ("parse a URL into its parts", 1),
    ("open a socket to a server", 1),
    ("download a page from a server", 1),
    ("compute the square root of a number", 2),
    ("round a float to two decimals", 2),
    ("add two numbers together", 2),
    ("divide a number by two", 2),
]
TEST = [
    ("read a file from the disk", 0),
    ("fetch a URL from a server", 1),
    ("the square of a number", 2),
    ("open a server socket", 1),
    ("move a directory", 0),
]


def _texts_labels(rows):
    return [t for t, _ in rows], [label for _, label in rows]


def test_majority_baseline_equals_scikit_learns_dummy_classifier():
    train_texts, train_labels = _texts_labels(TRAIN)
    texts, labels = _texts_labels(TEST)
    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(train_labels), 1)), train_labels)
    expected = dummy.predict(np.zeros((len(labels), 1)))
    assert majority_class_predictions(train_labels, len(labels)).tolist() == expected.tolist()
    # Ties go to the smallest class id, as DummyClassifier's argmax does.
    assert majority_class_predictions([2, 1, 2, 1], 3).tolist() == [1, 1, 1]

    result = classification_baselines(train_texts, train_labels, texts, labels, num_labels=3)
    assert result["majority_accuracy"] == pytest.approx(accuracy_score(labels, expected))
    assert result["majority_macro_f1"] == pytest.approx(f1_score(labels, expected, average="macro", zero_division=0))


def test_tfidf_baseline_equals_scikit_learns_grid_search_and_pipeline():
    train_texts, train_labels = _texts_labels(TRAIN)
    texts, labels = _texts_labels(TEST)
    result = classification_baselines(train_texts, train_labels, texts, labels, num_labels=3, seed=0)

    def pipeline(c=1.0):
        return make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
            LogisticRegression(C=c, solver="saga", max_iter=5000, random_state=0),
        )

    # C is picked on the training split alone, by the same folds GridSearchCV would use (4 = the rarest class's size).
    search = GridSearchCV(
        pipeline(),
        {"logisticregression__C": [1.0, 10.0, 100.0]},
        cv=StratifiedKFold(n_splits=4, shuffle=True, random_state=0),
    ).fit(train_texts, train_labels)
    assert result["tfidf_c"] == search.best_params_["logisticregression__C"]
    predictions = pipeline(result["tfidf_c"]).fit(train_texts, train_labels).predict(texts)
    assert result["tfidf_accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    assert result["tfidf_macro_f1"] == pytest.approx(f1_score(labels, predictions, average="macro", zero_division=0))
    assert result["num_train_examples"] == len(TRAIN)
    # Passing C skips the search and gives the same scores.
    assert classification_baselines(
        train_texts, train_labels, texts, labels, num_labels=3, c=result["tfidf_c"]
    ) == pytest.approx(result)


def test_the_sentence_says_so_when_the_model_is_below_tfidf():
    baselines = {"majority_accuracy": 0.4, "tfidf_accuracy": 0.8, "tfidf_macro_f1": 0.75}
    below = compare_to_baselines(0.7, 0.6, baselines, model="The classifier")
    assert below["beats_tfidf"] is False
    assert below["accuracy_minus_tfidf"] == pytest.approx(-0.1)
    assert below["accuracy_minus_majority"] == pytest.approx(0.3)
    assert below["baseline_verdict"].startswith(
        "The classifier does not beat the TF-IDF + logistic-regression baseline (70.0% vs 80.0% accuracy)"
    )
    above = compare_to_baselines(0.85, 0.8, baselines)
    assert above["beats_tfidf"] is True and "does not beat" not in above["baseline_verdict"]
    assert "by 5.0 accuracy points" in above["baseline_verdict"]
    # A tie is not a win.
    assert compare_to_baselines(0.8, 0.8, baselines)["beats_tfidf"] is False


def test_prefixed_metrics_carry_baselines_margins_and_verdict():
    train_texts, train_labels = _texts_labels(TRAIN)
    texts, labels = _texts_labels(TEST)
    metrics = classification_baseline_metrics(
        train_texts, train_labels, texts, labels, num_labels=3, accuracy=0.0, macro_f1=0.0, prefix="test_"
    )
    plain = classification_baselines(train_texts, train_labels, texts, labels, num_labels=3)
    assert metrics["test_tfidf_accuracy"] == plain["tfidf_accuracy"]
    assert metrics["test_accuracy_minus_tfidf"] == -plain["tfidf_accuracy"]
    assert "does not beat" in metrics["test_baseline_verdict"]


def test_nearest_neighbour_copies_the_answer_scikit_learns_cosine_neighbour_finds():
    instructions = ["open a file", "send a request to a server", "add two numbers", "read lines from a file"]
    answers = ["Use open().", "Use urllib.", "Use +.", "Use readlines()."]
    queries = ["how do I open a file", "add numbers", "a server request", "lines of a file"]
    copied = nearest_neighbour_answers(instructions, answers, queries)

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(instructions)
    neighbours = NearestNeighbors(n_neighbors=1, metric="cosine").fit(vectorizer.transform(instructions))
    _, index = neighbours.kneighbors(vectorizer.transform(queries))
    assert copied == [answers[i] for i in index[:, 0]]
    assert copied == ["Use open().", "Use +.", "Use urllib.", "Use readlines()."]


def test_model_card_shows_the_baselines_the_metrics_carry(tmp_path):
    from hf_llm.hub import create_model_card

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPTForSequenceClassification"]}))
    baselines = {"majority_accuracy": 0.5, "majority_macro_f1": 0.33, "tfidf_accuracy": 0.9, "tfidf_macro_f1": 0.88}
    metrics = {"eval_accuracy": 0.8, "eval_macro_f1": 0.79, "train_loss": 0.4}
    metrics.update({f"eval_{k}": v for k, v in {**baselines, **compare_to_baselines(0.8, 0.79, baselines)}.items()})
    card = open(create_model_card(tmp_path, stage="classifier", metrics=metrics)).read()

    assert "## Baselines" in card
    assert "| validation | accuracy | 0.8000 | 0.5000 | 0.9000 | -10.0 points |" in card
    assert "| validation | macro-F1 | 0.7900 | 0.3300 | 0.8800 | -0.090 |" in card
    assert "On the validation split: The model does not beat the TF-IDF + logistic-regression baseline" in card
    results = card.split("## Results")[1].split("## Baselines")[0]
    assert "| eval_accuracy | 0.8000 |" in results and "tfidf" not in results  # shown once, in its own section
    # The test split's comparison, from the test_results.json the script wrote before the card, is shown too.
    test = {"test_accuracy": 0.7, "test_macro_f1": 0.69, "test_majority_accuracy": 0.5, "test_tfidf_accuracy": 0.75}
    test.update(test_baseline_verdict="The model does not beat it (test).")
    (tmp_path / "test_results.json").write_text(json.dumps(test))
    card = open(create_model_card(tmp_path, stage="classifier", metrics=metrics)).read()
    assert "| test | accuracy | 0.7000 | 0.5000 | 0.7500 | -5.0 points |" in card
    assert "On the test split: The model does not beat it (test)." in card
    assert "trust the test split's" in card
    (tmp_path / "test_results.json").unlink()
    # A card without baselines has no such section.
    plain = open(create_model_card(tmp_path, stage="classifier", metrics={"eval_accuracy": 0.8})).read()
    assert "## Baselines" not in plain


def _pipeline_report(tmp_path, files: dict[str, dict]) -> str:
    from hf_llm.pipeline_report import write_pipeline_report
    from hf_llm.stages import PipelineStep

    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(content))
    steps = [PipelineStep(n, n.removeprefix("eval-"), [], tmp_path / n, "x") for n in ("classifier", "sft")]
    for step in steps:
        step.log_file = tmp_path / "logs" / f"{step.name}.log"
    return write_pipeline_report(tmp_path, steps, {}).read_text()


def test_pipeline_report_shows_tfidf_and_retrieval_baselines_with_a_sentence(tmp_path):
    test_results = {"test_accuracy": 0.62, "test_majority_accuracy": 0.3, "test_tfidf_accuracy": 0.7}
    test_results["test_tfidf_macro_f1"] = 0.66
    report = _pipeline_report(
        tmp_path,
        {
            "eval-classifier/metrics.json": {"metrics": {"accuracy": 0.62, "macro_f1": 0.55}},
            "classifier/test_results.json": test_results,  # the classifier's own baselines, same splits
            "eval-sft/metrics.json": {"metrics": {"bleu": 2.0, "nearest_neighbour_bleu": 5.0}},
        },
    )
    assert "| test accuracy (majority class → classifier) | 0.300 | 0.620 |" in report
    assert "| test accuracy (TF-IDF + logistic regression → classifier) | 0.700 | 0.620 |" in report
    assert "| test accuracy, classifier − TF-IDF (points) |  | -8.000 |" in report
    assert "| test macro-F1 | 0.660 | 0.550 |" in report
    assert "The classifier does not beat the TF-IDF + logistic-regression baseline (62.0% vs 70.0% accuracy)" in report
    assert "| test BLEU (copy the nearest training answer → SFT) | 5.000 | 2.000 |" in report
    assert "The SFT model does not beat copying the answer of the most similar training instruction" in report


def test_pipeline_report_prefers_the_evaluations_baselines(tmp_path):
    metrics = {"accuracy": 0.9, "macro_f1": 0.9, "majority_accuracy": 0.5, "tfidf_accuracy": 0.8}
    report = _pipeline_report(tmp_path, {"eval-classifier/metrics.json": {"metrics": metrics}})
    assert "| test accuracy (TF-IDF + logistic regression → classifier) | 0.800 | 0.900 |" in report
    assert "The classifier beats the TF-IDF + logistic-regression baseline by 10.0 accuracy points." in report


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory, tiny_tokenizer):
    """A tiny classifier saved as classifier.py saves one: weights, tokenizer and the recipe naming its data."""
    from hf_llm import GPTForSequenceClassification

    root = tmp_path_factory.mktemp("baselines")
    data = root / "data"
    data.mkdir()
    names = ["files", "network", "math"]
    for split, rows in (("train", TRAIN), ("test", TEST)):
        with open(data / f"{split}.jsonl", "w") as f:
            for text, label in rows:
                f.write(json.dumps({"text": text, "label": names[label]}) + "\n")
    torch.manual_seed(0)
    model_dir = root / "classifier"
    GPTForSequenceClassification(tiny_gpt_config(tiny_tokenizer, num_labels=3)).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    # The recipe exactly as the training scripts write it.
    from hf_llm.data import DataArguments
    from hf_llm.training import save_recipe
    from hf_llm.training.classifier import ClassifierConfig

    data_args = DataArguments(dataset_name=str(data), validation_split_percentage=20.0)
    save_recipe(model_dir, data_args, ClassifierConfig(output_dir=str(model_dir), seed=7, report_to="none"))
    return {"model": str(model_dir), "data": str(data), "root": root}


def test_eval_classifier_scores_baselines_on_the_split_the_recipe_trained_on(trained_classifier):
    from hf_llm.data import DataArguments, load_dataset_from_args
    from hf_llm.evaluation import main

    output_dir = trained_classifier["root"] / "eval"
    report = main(
        ["--model_name_or_path", trained_classifier["model"], "--task", "classifier", "--dataset_name",
         trained_classifier["data"], "--split", "test", "--output_dir", str(output_dir)]
    )  # fmt: skip
    metrics = report["metrics"]
    # The recipe's seed drew the validation hold-out: the baselines learn from exactly the rows the model did.
    splits = load_dataset_from_args(
        DataArguments(dataset_name=trained_classifier["data"], validation_split_percentage=20.0),
        "classification",
        seed=7,
    )
    train, test = splits["train"], splits["test"]
    assert len(train) < len(TRAIN)
    expected = classification_baselines(train["text"], train["label"], test["text"], test["label"], num_labels=3)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    assert metrics["accuracy_minus_tfidf"] == pytest.approx(metrics["accuracy"] - expected["tfidf_accuracy"])
    assert report["manifest"]["baselines"]["trained_on"].endswith("(recipe.yaml, seed 7)")
    markdown = (output_dir / "metrics.md").read_text()
    assert "| tfidf_accuracy |" in markdown and "| baseline_verdict |" in markdown


def test_eval_classifier_says_why_without_a_recipe(trained_classifier, tmp_path):
    import shutil

    from hf_llm.evaluation import main

    model = tmp_path / "no-recipe"
    shutil.copytree(trained_classifier["model"], model)
    (model / "recipe.yaml").unlink()
    report = main(
        ["--model_name_or_path", str(model), "--task", "classifier", "--dataset_name", trained_classifier["data"],
         "--split", "test", "--output_dir", str(tmp_path / "eval")]
    )  # fmt: skip
    assert report["metrics"]["baselines"].startswith(f"not computed: {model} has no recipe.yaml")
    assert "tfidf_accuracy" not in report["metrics"]


def test_eval_sft_scores_copying_the_nearest_training_answer(tiny_tokenizer, tmp_path):
    import sacrebleu

    from hf_llm import GPTForCausalLM
    from hf_llm.data.formatting import instruction_prompt_and_reference
    from hf_llm.evaluation import main

    train = [
        {"instruction": "Explain the with statement.", "input": "", "output": "It manages a context."},
        {"instruction": "What does len return?", "input": "", "output": "The number of items in a container."},
        {"instruction": "Name a mutable sequence type.", "input": "", "output": "list"},
        {"instruction": "What module encodes JSON?", "input": "", "output": "The json module."},
    ]
    test = [
        {"instruction": "What does the len function return?", "input": "", "output": "The number of items."},
        {"instruction": "Which module encodes JSON documents?", "input": "", "output": "The json module encodes."},
    ]
    data = tmp_path / "data"
    data.mkdir()
    for split, rows in (("train", train), ("test", test)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    torch.manual_seed(0)
    model_dir = tmp_path / "sft"
    GPTForCausalLM(tiny_gpt_config(tiny_tokenizer)).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    from hf_llm.data import DataArguments
    from hf_llm.training import save_recipe

    save_recipe(model_dir, DataArguments(dataset_name=str(data), validation_split_percentage=0.0))

    report = main(
        ["--model_name_or_path", str(model_dir), "--task", "sft", "--dataset_name", str(data), "--split", "test",
         "--max_new_tokens", "4", "--output_dir", str(tmp_path / "eval")]
    )  # fmt: skip
    metrics = report["metrics"]
    prompts = [instruction_prompt_and_reference(row, tiny_tokenizer)[0] for row in train]
    test_prompts = [instruction_prompt_and_reference(row, tiny_tokenizer)[0] for row in test]
    copied = nearest_neighbour_answers(prompts, [row["output"] for row in train], test_prompts)
    assert copied == ["The number of items in a container.", "The json module."]
    expected = sacrebleu.corpus_bleu(copied, [[row["output"] for row in test]]).score
    assert metrics["nearest_neighbour_bleu"] == pytest.approx(expected, rel=1e-12)
    assert metrics["bleu_minus_nearest_neighbour"] == pytest.approx(metrics["bleu"] - expected)
    assert "does not beat copying the answer of the most similar training instruction" in metrics["baseline_verdict"]
