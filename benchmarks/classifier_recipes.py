"""Which classifier recipe beats a bag-of-words baseline on small labeled data, on CPU, and by how much.

Two real labeled sets of different shapes, several seeds, every recipe run through the real scripts (`accelerate
launch` is not needed for one process), so the table measures exactly what a user gets:

- `pydocs`: the bundled 6-topic classification of standard-library docstrings (1,914 train / 265 validation / 263
  test rows, unbalanced, up to 128 tokens kept).
- `error-messages`: is a Python error message a `TypeError` or a `ValueError`? Built by [`build_error_messages`] from
  the `raise TypeError(...)` / `raise ValueError(...)` statements of the standard library and of numpy, pandas and
  scipy (installed with hf_llm); split by source file (so a module's phrasing never sits on both sides), balanced per
  split: about 1,400 train / 360 validation / 510 test rows of a dozen words each.

Recipes, all but the last from the `tiny` pretraining output (`--base`):

- `tiny`: `classifier.py` with `classifier/tiny.yaml` (the recipe the docs lead with until this benchmark);
- `small-data`: `classifier.py` with `classifier/small-data.yaml` (the best epoch by validation accuracy, early
  stopping);
- `continued`: `pretrain.py` from the base on the task's own training texts (`--continued_steps`, no labels), then
  `classifier/tiny.yaml`;
- `continued-small-data`: the same continued pretraining, then `classifier/small-data.yaml`;
- `lora`: `classifier/tiny.yaml` with `--use_peft true` (LoRA r=8 + the `score` head);
- `domain-pretrained`: not from the base: `pretrain.py` from scratch with `pretrain/tiny.yaml` (a new tokenizer and
  model) on the task's training texts plus the pydocs text corpus (`--domain_steps`, no labels), then
  `classifier/small-data.yaml`.

Every step of a run is timed (wall and CPU seconds, children's user + system) and counted in that run, continued
and domain pretraining included. Beside them, the majority-class and TF-IDF + logistic-regression baselines
(`hf_llm.evaluation.baselines`), fitted on the same train split and scored on the same test split. Prints one markdown
table per dataset, recipes ranked by their mean margin over TF-IDF (mean ± sample sd over seeds), plus each recipe's
seed ensemble (the seeds' test probabilities averaged: is training several seeds worth it?), and writes every run's
numbers to `--output_json`.

    # the base, once (3-7 minutes on 2 CPU cores)
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/pretrain.py \
        --config train_scripts/configs/pretrain/tiny.yaml --output_dir outputs/pretrain-tiny
    python benchmarks/classifier_recipes.py --base outputs/pretrain-tiny --seeds 0 1 2
    # only the error-message set, written as train/validation/test.jsonl (use it with --dataset_name DIR)
    python benchmarks/classifier_recipes.py --build_error_messages outputs/error-messages
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import sysconfig
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIFIER = os.path.join(REPO_ROOT, "train_scripts", "classifier.py")
PRETRAIN = os.path.join(REPO_ROOT, "train_scripts", "pretrain.py")
RECIPES_DIR = os.path.join(REPO_ROOT, "train_scripts", "configs", "classifier")
PRETRAIN_RECIPE = os.path.join(REPO_ROOT, "train_scripts", "configs", "pretrain", "tiny.yaml")
QUIET = ["--report_to", "none", "--disable_tqdm", "true"]
RECIPES = ("tiny", "small-data", "continued", "continued-small-data", "lora", "domain-pretrained")

#: The error-message set: its two classes and where its messages come from (`stdlib` and importable packages).
ERROR_CLASSES = ("TypeError", "ValueError")
ERROR_MESSAGE_SOURCES = ("stdlib", "numpy", "pandas", "scipy")
_SKIPPED_DIRS = {"site-packages", "test", "tests", "testing", "idlelib", "lib2to3", "__pycache__"}


def _message(node: ast.AST) -> str | None:
    """The literal text of an exception's message: a string, an f-string (each `{expression}` kept as written), or the
    format string of `"..." % x`, `"..." + x` and `"...".format(x)`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else "{" + ast.unparse(part.value) + "}"
            for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return _message(node.left)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _message(node.func.value)
    return None


def _source_root(source: str) -> str:
    if source == "stdlib":
        return sysconfig.get_paths()["stdlib"]
    spec = importlib.util.find_spec(source)
    if spec is None or spec.origin is None:
        raise SystemExit(f"--error_message_sources: {source} is not installed; pip install {source} or leave it out")
    return os.path.dirname(spec.origin)


def error_message_rows(sources: tuple[str, ...] = ERROR_MESSAGE_SOURCES) -> list[dict]:
    """Every distinct `raise TypeError/ValueError("...")` message of at least 3 words in `sources` (tests left out),
    whitespace collapsed, with its label and source file, in a fixed order (sources, then sorted paths)."""
    rows, seen = [], set()
    for source in sources:
        root = _source_root(source)
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(dirpath, name)
                try:
                    with open(path, encoding="utf-8") as f:
                        tree = ast.parse(f.read())
                except (SyntaxError, UnicodeDecodeError, ValueError):
                    continue  # a template or a file for another Python: not a source of messages
                for node in ast.walk(tree):
                    exc = node.exc if isinstance(node, ast.Raise) else None
                    if not (isinstance(exc, ast.Call) and exc.args and isinstance(exc.func, ast.Name)):
                        continue
                    if exc.func.id not in ERROR_CLASSES:
                        continue
                    text = " ".join((_message(exc.args[0]) or "").split())
                    if len(text.split()) < 3 or text in seen:
                        continue
                    seen.add(text)
                    rows.append(
                        {"text": text, "label": exc.func.id, "module": f"{source}:{os.path.relpath(path, root)}"}
                    )
    return rows


def build_error_messages(output_dir: str, sources: tuple[str, ...] = ERROR_MESSAGE_SOURCES, seed: int = 0) -> dict:
    """
    Write the error-message set as `train.jsonl`, `validation.jsonl` and `test.jsonl` (`text`, `label`, `module`).

    A source file's messages all go to one split (25% of files test, 10% validation, 65% train, by a hash of the
    file's name), so no split shares a module's phrasing; each split keeps every message of its rarer class and as
    many of the other, drawn with `seed`. Returns the sources, Python's version and the rows per split and class.
    """
    rows = error_message_rows(sources)

    def split_of(module: str) -> str:
        bucket = int(hashlib.sha256(module.encode()).hexdigest(), 16) % 100
        return "test" if bucket < 25 else "validation" if bucket < 35 else "train"

    rng = random.Random(seed)
    os.makedirs(output_dir, exist_ok=True)
    counts = {}
    for split in ("train", "validation", "test"):
        by_label = {c: [r for r in rows if r["label"] == c and split_of(r["module"]) == split] for c in ERROR_CLASSES}
        size = min(len(found) for found in by_label.values())
        chosen = [row for found in by_label.values() for row in rng.sample(found, size)]
        rng.shuffle(chosen)
        with open(os.path.join(output_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in chosen)
        counts[split] = {c: size for c in ERROR_CLASSES}
    # Not a file in output_dir: the loader reads every JSON file there as data.
    return {"sources": list(sources), "python": sys.version.split()[0], "rows": counts}


def run(command: list[str], log_path: str) -> tuple[float, float]:
    """Run a script, its output into `log_path`; returns its wall and CPU seconds. Raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {result.returncode}); see {log_path}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def export_texts(dataset_name: str, path: str) -> None:
    """The training split's texts as JSON Lines (`text`): the task's own unlabeled text, for continued pretraining."""
    from hf_llm.data import DataArguments, load_dataset_from_args

    train = load_dataset_from_args(DataArguments(dataset_name=dataset_name), "classification")["train"]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in train["text"])


def export_domain_texts(dataset_name: str, path: str) -> None:
    """The training split's texts plus the pydocs text corpus's train split as JSON Lines (`text`): the corpus a model
    and its tokenizer are pretrained on from scratch, so the tokenizer knows the task's words."""
    from hf_llm.data import DataArguments, load_dataset_from_args, load_formatted_dataset

    train = load_dataset_from_args(DataArguments(dataset_name=dataset_name), "classification")["train"]
    pydocs = load_formatted_dataset("pydocs", "text")["train"]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in [*train["text"], *pydocs["text"]]
        )


def baselines(dataset_name: str) -> dict:
    """Majority class and TF-IDF + logistic regression, fitted on train, scored on test."""
    from hf_llm.data import DataArguments, load_dataset_from_args
    from hf_llm.evaluation.baselines import classification_baselines

    splits = load_dataset_from_args(DataArguments(dataset_name=dataset_name), "classification")
    train, test = splits["train"], splits["test"]
    num_labels = train.features["label"].num_classes
    return classification_baselines(train["text"], train["label"], test["text"], test["label"], num_labels=num_labels)


def run_recipe(
    recipe: str, base: str, dataset_name: str, texts: str, domain_texts: str, output_dir: str, seed: int, args
) -> dict:
    """One run of one recipe: its (continued or domain pretraining and) classifier steps; test scores and time
    spent."""
    wall = cpu = 0.0
    start_from = base
    if recipe == "domain-pretrained":
        start_from = output_dir + "-pretrain"
        # The tiny recipe (preset, 4096-token tokenizer, batch, learning rate, 10% warmup) for fewer steps; no
        # validation hold-out, evaluation or checkpoint: only the classifier's validation split picks anything.
        step_wall, step_cpu = run(
            [sys.executable, PRETRAIN, "--config", PRETRAIN_RECIPE, "--dataset_name", domain_texts, "--text_column",
             "text", "--validation_split_percentage", "0", "--max_steps", str(args.domain_steps), "--warmup_steps",
             "0.1", "--eval_strategy", "no", "--save_strategy", "no", "--seed", str(seed), "--output_dir",
             start_from, "--overwrite_output_dir", "true", *QUIET],
            start_from + ".log",
        )  # fmt: skip
        wall, cpu = wall + step_wall, cpu + step_cpu
    if recipe.startswith("continued"):
        start_from = output_dir + "-pretrain"
        step_wall, step_cpu = run(
            [sys.executable, PRETRAIN, "--model_name_or_path", base, "--dataset_name", texts, "--text_column", "text",
             "--block_size", "128", "--max_steps", str(args.continued_steps), "--per_device_train_batch_size", "16",
             "--learning_rate", "1e-3", "--warmup_steps", "10", "--eval_strategy", "no", "--save_strategy", "no",
             "--dataloader_num_workers", "0", "--seed", str(seed), "--output_dir", start_from,
             "--overwrite_output_dir", "true", *QUIET],
            start_from + ".log",
        )  # fmt: skip
        wall, cpu = wall + step_wall, cpu + step_cpu
    config = "small-data.yaml" if recipe.endswith("small-data") or recipe == "domain-pretrained" else "tiny.yaml"
    extra = ["--use_peft", "true", "--lora_r", "8", "--lora_alpha", "16", "--learning_rate", "5e-3"]
    step_wall, step_cpu = run(
        [sys.executable, CLASSIFIER, "--config", os.path.join(RECIPES_DIR, config), "--model_name_or_path",
         start_from, "--dataset_name", dataset_name, "--output_dir", output_dir, "--overwrite_output_dir", "true",
         "--seed", str(seed), "--save_total_limit", "1", *QUIET, *(extra if recipe == "lora" else [])],
        output_dir + ".log",
    )  # fmt: skip
    with open(os.path.join(output_dir, "test_results.json")) as f:
        results = json.load(f)
    return {
        "test_accuracy": results["test_accuracy"],
        "test_macro_f1": results["test_macro_f1"],
        "wall_s": wall + step_wall,
        "cpu_s": cpu + step_cpu,
        "output_dir": output_dir,
    }


def test_probabilities(
    model_dir: str, dataset_name: str, max_length: int = 128
) -> tuple[list[list[float]], list[int]]:
    """A saved classifier's class probabilities on the test split, tokenized as classifier.py does (the first
    `max_length` tokens, no special tokens), with the labels."""
    import torch

    from hf_llm.data import DataArguments, load_dataset_from_args
    from hf_llm.loading import load_model_for_evaluation

    test = load_dataset_from_args(DataArguments(dataset_name=dataset_name), "classification")["test"]
    model, tokenizer = load_model_for_evaluation(
        model_dir, "classifier", num_labels=test.features["label"].num_classes, device="cpu"
    )
    probabilities = []
    with torch.no_grad():
        for start in range(0, len(test), 64):
            texts = test["text"][start : start + 64]
            batch = tokenizer(
                texts, truncation=True, max_length=max_length, add_special_tokens=False, padding=True,
                return_tensors="pt",
            )  # fmt: skip
            probabilities += model(**batch).logits.softmax(-1).tolist()
    return probabilities, list(test["label"])


def ensemble_accuracy(runs: list[dict], dataset_name: str) -> dict:
    """Average the seeds' class probabilities on the test split (one ensemble of every run given): its accuracy, and
    each member's accuracy as recomputed here (it must equal its test_results.json)."""
    members, labels = [], None
    for run in runs:
        probabilities, labels = test_probabilities(run["output_dir"], dataset_name)
        members.append(probabilities)
    mean = [[sum(member[i][c] for member in members) / len(members) for c in range(len(members[0][i]))]
            for i in range(len(labels))]  # fmt: skip

    def accuracy(probabilities: list[list[float]]) -> float:
        predictions = [max(range(len(p)), key=p.__getitem__) for p in probabilities]
        return sum(p == y for p, y in zip(predictions, labels, strict=True)) / len(labels)

    return {"test_accuracy": accuracy(mean), "member_accuracy": [accuracy(m) for m in members]}


def spread(values: list[float]) -> float:
    """Sample standard deviation (0 for a single run)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table(
    dataset: str, reference: dict, runs: list[dict], ensembles: list[dict], recipes: list[str], seeds: list[int]
) -> list[str]:
    """The markdown table of one dataset: recipes (and their seed ensembles) ranked by mean margin over TF-IDF, the
    baselines as rows."""
    rows = []
    for recipe in recipes:
        found = [r for r in runs if r["dataset"] == dataset and r["recipe"] == recipe]
        if not found:
            continue
        accuracy = [r["test_accuracy"] for r in found]
        margin = [100 * (a - reference["tfidf_accuracy"]) for a in accuracy]
        rows.append((statistics.mean(margin), recipe, found, accuracy, margin))
    for ensemble in (e for e in ensembles if e["dataset"] == dataset and e["recipe"] in recipes):
        name = f"{ensemble['recipe']}, mean of {len(ensemble['seeds'])} seeds' probabilities"
        margin = [100 * (ensemble["test_accuracy"] - reference["tfidf_accuracy"])]
        member = {"test_macro_f1": None, "wall_s": ensemble["wall_s"], "cpu_s": ensemble["cpu_s"]}
        rows.append((margin[0], name, [member], [ensemble["test_accuracy"]], margin))
    lines = [
        f"\n{dataset}: test split, seeds {' '.join(map(str, seeds))}; majority class "
        f"{reference['majority_accuracy']:.1%}, TF-IDF + logistic regression {reference['tfidf_accuracy']:.1%} "
        f"(macro-F1 {reference['tfidf_macro_f1']:.3f})\n",
        "| rank | recipe | test accuracy | minus TF-IDF | minus majority | test macro-F1 | beats TF-IDF "
        "| wall s / run | CPU s / run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rank, (_, recipe, found, accuracy, margin) in enumerate(sorted(rows, key=lambda row: -row[0]), start=1):
        f1 = [r["test_macro_f1"] for r in found if r["test_macro_f1"] is not None]
        f1_cell = f"{statistics.mean(f1):.3f} ± {spread(f1):.3f}" if f1 else ""
        beats = f"{sum(m > 0 for m in margin)}/{len(margin)} seeds" if f1 else ("yes" if margin[0] > 0 else "no")
        lines.append(
            f"| {rank} | {recipe} | {statistics.mean(accuracy):.1%} ± {spread(accuracy):.1%} | "
            f"{statistics.mean(margin):+.1f} ± {spread(margin):.1f} pts | "
            f"{100 * (statistics.mean(accuracy) - reference['majority_accuracy']):+.1f} pts | "
            f"{f1_cell} | {beats} | "
            f"{statistics.mean(r['wall_s'] for r in found):.0f} | {statistics.mean(r['cpu_s'] for r in found):.0f} |"
        )
    lines.append(f"| | TF-IDF + logistic regression | {reference['tfidf_accuracy']:.1%} | 0 | | "
                 f"{reference['tfidf_macro_f1']:.3f} | | | |")  # fmt: skip
    lines.append(f"| | majority class | {reference['majority_accuracy']:.1%} | "
                 f"{100 * (reference['majority_accuracy'] - reference['tfidf_accuracy']):+.1f} pts | 0 | "
                 f"{reference['majority_macro_f1']:.3f} | | | |")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="outputs/pretrain-tiny", help="the tiny pretraining output")
    parser.add_argument("--datasets", nargs="+", default=["error-messages", "pydocs"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=["tiny", "small-data"], choices=RECIPES)
    parser.add_argument("--continued_steps", type=int, default=150, help="continued-pretraining steps per run")
    parser.add_argument("--domain_steps", type=int, default=150, help="from-scratch pretraining steps per run")
    parser.add_argument("--build_error_messages", metavar="DIR", help="only write the error-message set to DIR")
    parser.add_argument("--work_dir", default="outputs/bench-classifier")
    parser.add_argument("--output_json", default="outputs/benchmarks/classifier_recipes.json")
    args = parser.parse_args()
    if args.build_error_messages:
        print(json.dumps(build_error_messages(args.build_error_messages), indent=2))
        return
    if not os.path.isfile(os.path.join(args.base, "config.json")):
        raise SystemExit(f"--base {args.base} is not a saved model; run the pretraining command in this docstring")
    os.makedirs(args.work_dir, exist_ok=True)

    runs, references, sources, ensembles = [], {}, {}, []

    def save() -> None:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
        with open(args.output_json, "w") as f:
            record = {"baselines": references, "error_messages": sources, "runs": runs, "ensembles": ensembles}
            record["args"] = vars(args)
            json.dump(record, f, indent=2)

    for dataset in args.datasets:
        dataset_name = dataset
        if dataset == "error-messages":
            dataset_name = os.path.join(args.work_dir, "error-messages")
            sources[dataset] = build_error_messages(dataset_name)
        elif dataset != "pydocs":
            raise SystemExit(f"--datasets: unknown {dataset!r}; choose pydocs or error-messages")
        start = time.perf_counter()
        references[dataset] = {**baselines(dataset_name), "seconds": time.perf_counter() - start}
        print(f"{dataset} baselines: {json.dumps(references[dataset])}", flush=True)
        texts = os.path.join(args.work_dir, f"{dataset}-train-texts.jsonl")
        export_texts(dataset_name, texts)
        domain_texts = os.path.join(args.work_dir, f"{dataset}-domain-texts.jsonl")
        if "domain-pretrained" in args.recipes:
            export_domain_texts(dataset_name, domain_texts)
        for seed in args.seeds:
            for recipe in args.recipes:
                output_dir = os.path.join(args.work_dir, f"{dataset}-{recipe}-seed{seed}")
                result = run_recipe(recipe, args.base, dataset_name, texts, domain_texts, output_dir, seed, args)
                margin = result["test_accuracy"] - references[dataset]["tfidf_accuracy"]
                runs.append({"dataset": dataset, "recipe": recipe, "seed": seed, **result, "minus_tfidf": margin})
                print(json.dumps(runs[-1]), flush=True)
                save()  # after every run: an interrupted benchmark keeps what it measured
        if len(args.seeds) > 1:
            for recipe in args.recipes:
                found = [r for r in runs if r["dataset"] == dataset and r["recipe"] == recipe]
                ensemble = {"dataset": dataset, "recipe": recipe, "seeds": args.seeds}
                ensemble.update(ensemble_accuracy(found, dataset_name))
                ensemble.update(wall_s=sum(r["wall_s"] for r in found), cpu_s=sum(r["cpu_s"] for r in found))
                ensembles.append(ensemble)
                print(json.dumps(ensembles[-1]), flush=True)
                save()

    for dataset in args.datasets:
        print("\n".join(table(dataset, references[dataset], runs, ensembles, args.recipes, args.seeds)))
    print(f"\nWrote {args.output_json}")


if __name__ == "__main__":
    main()
