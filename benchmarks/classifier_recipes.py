"""Which fine-tuning recipe classifies best from a small pretrained base: LoRA vs full vs continued pretraining.

On pydocs' 6-topic classification task, from the `tiny` pretraining output, over several seeds:

- `full`: `classifier.py` with the `tiny` recipe (every weight trains);
- `lora`: the same with `--use_peft true` (LoRA on every linear layer + the `score` head);
- `continued`: `pretrain.py --model_name_or_path BASE` on the classification training texts alone (the task's own
  unlabeled text, no labels), then `full` from that checkpoint.

Each run goes through the real scripts (`accelerate launch` is not needed for one process), so the table measures
exactly what a user gets. Prints one markdown table (test accuracy and macro-F1, mean ± std over seeds, and the
majority-class baseline) and writes every run's numbers to `--output_json`.

    # the base, once (a few minutes on 2 CPU cores)
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/pretrain.py \
        --config train_scripts/configs/pretrain/tiny.yaml --output_dir outputs/pretrain-tiny
    python benchmarks/classifier_recipes.py --base outputs/pretrain-tiny --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIFIER = os.path.join(REPO_ROOT, "train_scripts", "classifier.py")
PRETRAIN = os.path.join(REPO_ROOT, "train_scripts", "pretrain.py")
CLASSIFIER_RECIPE = os.path.join(REPO_ROOT, "train_scripts", "configs", "classifier", "tiny.yaml")
QUIET = ["--report_to", "none", "--disable_tqdm", "true"]


def run(command: list[str], log_path: str) -> float:
    """Run a script, its output into `log_path`; returns the wall time. Raises if it fails."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {result.returncode}); see {log_path}")
    return time.perf_counter() - start


def classify(base: str, output_dir: str, seed: int, extra: list[str]) -> dict:
    wall = run(
        [sys.executable, CLASSIFIER, "--config", CLASSIFIER_RECIPE, "--model_name_or_path", base,
         "--output_dir", output_dir, "--overwrite_output_dir", "true", "--seed", str(seed), *QUIET, *extra],
        output_dir + ".log",
    )  # fmt: skip
    with open(os.path.join(output_dir, "test_results.json")) as f:
        results = json.load(f)
    return {"test_accuracy": results["test_accuracy"], "test_macro_f1": results["test_macro_f1"], "wall_s": wall}


def export_texts(path: str) -> None:
    """The classification training split's texts as JSON Lines (`text`): the task's own unlabeled text."""
    from hf_llm.data import load_pydocs

    with open(path, "w") as f:
        for text in load_pydocs("classification")["train"]["text"]:
            f.write(json.dumps({"text": text}) + "\n")


def majority_baseline() -> float:
    from hf_llm.data import load_pydocs

    test = load_pydocs("classification")["test"]["label"]
    return Counter(test).most_common(1)[0][1] / len(test)


def spread(values: list[float]) -> float:
    """Sample standard deviation (0 for a single run)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="outputs/pretrain-tiny", help="the tiny pretraining output")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["full", "lora", "continued"])
    parser.add_argument("--lora_learning_rate", type=float, default=5e-3, help="LoRA's learning rate (full: recipe)")
    parser.add_argument("--continued_steps", type=int, default=200, help="continued-pretraining steps")
    parser.add_argument("--work_dir", default="outputs/bench-classifier")
    parser.add_argument("--output_json", default="outputs/bench-classifier/results.json")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.base, "config.json")):
        raise SystemExit(f"--base {args.base} is not a saved model; run the pretraining command in this docstring")
    os.makedirs(args.work_dir, exist_ok=True)

    runs = []
    continued_base = os.path.join(args.work_dir, "continued-base")
    if "continued" in args.methods:
        texts = os.path.join(args.work_dir, "classification_texts.jsonl")
        export_texts(texts)
        wall = run(
            [sys.executable, PRETRAIN, "--model_name_or_path", args.base, "--dataset_name", texts,
             "--text_column", "text", "--block_size", "128", "--max_steps", str(args.continued_steps),
             "--per_device_train_batch_size", "16", "--learning_rate", "1e-3", "--warmup_steps", "10",
             "--eval_strategy", "no", "--save_strategy", "no", "--dataloader_num_workers", "0",
             "--output_dir", continued_base, "--overwrite_output_dir", "true", *QUIET],
            continued_base + ".log",
        )  # fmt: skip
        print(f"continued pretraining on the classification texts: {wall:.0f} s", flush=True)
    for seed in args.seeds:
        for method in args.methods:
            output_dir = os.path.join(args.work_dir, f"{method}-seed{seed}")
            if method == "full":
                result = classify(args.base, output_dir, seed, ["--use_peft", "false"])
            elif method == "lora":
                extra = ["--use_peft", "true", "--lora_r", "8", "--lora_alpha", "16"]
                result = classify(
                    args.base, output_dir, seed, extra + ["--learning_rate", str(args.lora_learning_rate)]
                )
            elif method == "continued":
                result = classify(continued_base, output_dir, seed, ["--use_peft", "false"])
            else:
                raise SystemExit(f"unknown method {method!r}; choose full, lora or continued")
            runs.append({"method": method, "seed": seed, **result})
            print(json.dumps(runs[-1]), flush=True)

    baseline = majority_baseline()
    print(f"\npydocs 6-topic classification, test split, {len(args.seeds)} seeds (majority class: {baseline:.1%})\n")
    print("| method | test accuracy | test macro-F1 | minus majority class | wall s / run |")
    print("|---|---|---|---|---|")
    for method in args.methods:
        rows = [r for r in runs if r["method"] == method]
        acc = [r["test_accuracy"] for r in rows]
        f1 = [r["test_macro_f1"] for r in rows]
        print(
            f"| {method} | {statistics.mean(acc):.1%} ± {spread(acc):.1%} | {statistics.mean(f1):.3f} ± "
            f"{spread(f1):.3f} | {100 * (statistics.mean(acc) - baseline):+.1f} pts | "
            f"{statistics.mean(r['wall_s'] for r in rows):.0f} |"
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
    with open(args.output_json, "w") as f:
        json.dump({"majority_class": baseline, "runs": runs, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
