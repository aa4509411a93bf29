"""Evaluate any hf_llm checkpoint on any task and write `metrics.json` (with a manifest) and `metrics.md`.

`eval/evaluate_model.py` and `hf-llm eval` both call [`main`]:

```bash
python eval/evaluate_model.py --model_name_or_path outputs/pretrain --task pretrain \
    --dataset_name pydocs --split test --output_dir outputs/eval/pretrain
```

| task | model | metrics |
|---|---|---|
| `pretrain` | causal LM | perplexity (token-weighted), bits per byte |
| `classification` | sequence classifier | accuracy, macro-F1, confusion matrix (+ `confusion_matrix.png`) |
| `instruction` | causal LM | BLEU of greedy generations, perplexity of the references given the prompts |
| `reward` | reward model (`num_labels=1`) | pairwise accuracy (chosen scored above rejected), mean margin |
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, set_seed
from transformers.utils import logging

from ..tokenizer import alpaca_messages
from .classification import classification_report
from .loading import is_adapter, load_metric, load_model_for_evaluation
from .perplexity import compute_perplexity, model_max_length

logger = logging.get_logger(__name__)

TASKS = ("pretrain", "classification", "instruction", "reward")
# The data layer calls preference pairs "preference"; the evaluation names the model it scores.
DATA_TASK = {
    "pretrain": "pretrain",
    "classification": "classification",
    "instruction": "instruction",
    "reward": "preference",
}
VERSIONED_LIBRARIES = (
    "hf_llm",
    "torch",
    "transformers",
    "datasets",
    "evaluate",
    "sacrebleu",
    "peft",
    "trl",
    "accelerate",
    "tokenizers",
    "numpy",
)


@dataclass
class EvaluationArguments:
    """
    What to evaluate, on which task and split, and where to write the report. Dataset flags (`--dataset_name`,
    column mappings, `--max_eval_samples`, ...) come from `hf_llm.data.DataArguments`.

    Args:
        model_name_or_path (`str`):
            Checkpoint to evaluate: a base, merged or LoRA-adapter `save_pretrained` directory, or a Hub repo id.
        task (`str`):
            `"pretrain"`, `"classification"`, `"instruction"` or `"reward"`.
        output_dir (`str`):
            Where `metrics.json`, `metrics.md` (and task extras) are written.
        split (`str`, defaults to `"test"`):
            Split of the loaded dataset to evaluate (`train`, `validation` or `test`).
        tokenizer_name_or_path (`str`, *optional*):
            Tokenizer to use; defaults to the checkpoint's (or, for an adapter, its base model's).
        batch_size (`int`, defaults to 8):
            Examples (or perplexity windows) per forward pass.
        max_length (`int`, *optional*):
            Longest token sequence fed to the model; defaults to the model's context length. Longer pretraining texts
            are scored with a sliding window; longer classification/reward inputs and instruction prompts are
            truncated from the left (counted in the report).
        perplexity_stride (`int`, *optional*):
            How far the perplexity window moves over a long text; defaults to half of `max_length`.
        max_new_tokens (`int`, defaults to 64):
            Generation budget per instruction prompt (greedy decoding).
        bleu_tokenize (`str`, defaults to `"13a"`):
            sacrebleu tokenizer for BLEU (`"13a"`, `"intl"`, `"char"`, `"none"`, ...).
        seed (`int`, defaults to 42):
            Random seed, recorded in the manifest.
        metrics_dir (`str`, *optional*):
            The `eval/metrics` directory holding the `evaluate` modules; defaults to the checkout's.
        device (`str`, *optional*):
            `"cpu"`, `"cuda"`, ...; defaults to CUDA when available.
        trust_remote_code (`bool`, defaults to `False`):
            Allow code shipped with the checkpoint to run.
    """

    model_name_or_path: str = field(
        metadata={"help": "Base, merged or LoRA-adapter checkpoint: a save_pretrained directory or a Hub repo id."}
    )
    task: str = field(metadata={"help": "What to measure: pretrain, classification, instruction or reward."})
    output_dir: str = field(metadata={"help": "Where metrics.json and metrics.md are written."})
    split: str = field(default="test", metadata={"help": "Dataset split to evaluate (train, validation or test)."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to use; defaults to the checkpoint's (or its base model's)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Examples (or perplexity windows) per forward pass."})
    max_length: int | None = field(
        default=None, metadata={"help": "Longest token sequence fed to the model; defaults to its context length."}
    )
    perplexity_stride: int | None = field(
        default=None, metadata={"help": "Sliding-window step for long texts; defaults to max_length // 2."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Instruction task: tokens generated per prompt."})
    bleu_tokenize: str = field(default="13a", metadata={"help": "sacrebleu tokenizer: 13a, intl, char, none, ..."})
    seed: int = field(default=42, metadata={"help": "Random seed (recorded in the manifest)."})
    metrics_dir: str | None = field(
        default=None, metadata={"help": "The eval/metrics directory; defaults to the one in hf_llm's checkout."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ...; defaults to CUDA when available."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code shipped with the checkpoint."})

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {list(TASKS)}, got {self.task!r}")
        for name in ("batch_size", "max_new_tokens", "max_length", "perplexity_stride"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be a positive integer, got {value}")


# ----------------------------------------------------------------------------------------------------------------
# Dataset


def load_evaluation_split(args: EvaluationArguments, data_args):
    """The `args.split` split of the task's dataset, with canonical columns (the only place data is loaded)."""
    from hf_llm.data import load_dataset_from_args

    dataset_dict = load_dataset_from_args(data_args, DATA_TASK[args.task], seed=args.seed)
    if args.split not in dataset_dict:
        raise ValueError(
            f"split {args.split!r} not found in {data_args.dataset_name!r}; splits are {list(dataset_dict)}; "
            "pass --split with one of them."
        )
    dataset = dataset_dict[args.split]
    if len(dataset) == 0:
        raise ValueError(f"split {args.split!r} of {data_args.dataset_name!r} is empty; nothing to evaluate.")
    return dataset


# ----------------------------------------------------------------------------------------------------------------
# Tasks


def evaluate_pretrain(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], args: EvaluationArguments
) -> dict:
    """Corpus perplexity and bits per byte of `texts` (empty texts are skipped and counted)."""
    kept = [text for text in texts if text.strip()]
    result = load_metric("perplexity", args.metrics_dir).compute(
        predictions=kept,
        model=model,
        tokenizer=tokenizer,
        batch_size=args.batch_size,
        max_length=args.max_length,
        stride=args.perplexity_stride,
    )
    num_bytes = sum(len(text.encode("utf-8")) for text in kept)
    return {
        "perplexity": result["perplexity"],
        "mean_perplexity": result["mean_perplexity"],
        # Bits needed per UTF-8 byte of text: comparable across tokenizers, unlike perplexity.
        "bits_per_byte": result["nll_sum"] / math.log(2) / num_bytes,
        "nll": result["nll_sum"] / result["num_tokens"],
        "num_tokens": result["num_tokens"],
        "num_bytes": num_bytes,
        "num_examples": len(kept),
        "num_skipped_empty": len(texts) - len(kept),
    }


def _encode_keeping_the_end(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
) -> tuple[list[list[int]], int]:
    """Token ids of each text cut to its last `max_length` tokens, and how many texts were cut.

    The end is what matters: a sequence classifier pools the last token, and a prompt's end is what the model
    continues.
    """
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]  # cut just below
    return [ids[-max_length:] for ids in encoded], sum(len(ids) > max_length for ids in encoded)


@torch.no_grad()
def score_sequences(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int, max_length: int
) -> tuple[np.ndarray, int]:
    """Logits `(N, num_labels)` of a sequence-classification model on `texts`, and how many were truncated."""
    rows, truncated = _encode_keeping_the_end(tokenizer, texts, max_length)
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(rows), batch_size):
        batch = tokenizer.pad({"input_ids": rows[start : start + batch_size]}, padding=True, return_tensors="pt")
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits  # (B, num_labels)
        outputs.append(logits.float().cpu().numpy())
    return np.concatenate(outputs), truncated


def evaluate_classification(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    labels: list[int],
    label_names: list[str],
    args: EvaluationArguments,
) -> dict:
    """Accuracy (through the `accuracy` module), macro-F1 and confusion matrix of a classifier."""
    max_length = args.max_length or model_max_length(model)
    logits, truncated = score_sequences(model, tokenizer, texts, args.batch_size, max_length)
    if logits.shape[1] != len(label_names):
        raise ValueError(
            f"the model has {logits.shape[1]} output labels but the dataset has {len(label_names)} classes "
            f"({label_names}); evaluate a classifier trained on this dataset."
        )
    predictions = logits.argmax(axis=-1)
    report = classification_report(predictions, labels, num_labels=len(label_names))
    accuracy = load_metric("accuracy", args.metrics_dir).compute(predictions=predictions.tolist(), references=labels)
    return {
        "accuracy": accuracy["accuracy"],
        "macro_f1": report["macro_f1"],
        "f1_per_class": dict(zip(label_names, report["f1_per_class"], strict=True)),
        "confusion_matrix": report["confusion_matrix"],
        "label_names": label_names,
        "num_examples": len(labels),
        "num_truncated": truncated,
    }


def instruction_prompt_and_reference(example: dict, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """The chat-formatted prompt (ending with the assistant turn's opening) and the reference answer."""
    if example.get("messages"):
        messages = list(example["messages"])
        if messages[-1]["role"] != "assistant":
            raise ValueError(
                f"instruction example's last message has role {messages[-1]['role']!r}; the last message must be "
                "the assistant's answer, used as the BLEU reference."
            )
        prompt_messages, reference = messages[:-1], messages[-1]["content"]
    else:
        prompt_messages = alpaca_messages(example["instruction"], example.get("input") or "")
        reference = example["output"]
    if tokenizer.chat_template is None:
        raise ValueError(
            "the tokenizer has no chat template, so instruction prompts cannot be formatted; use a tokenizer from "
            "hf_llm.tokenizer.train_tokenizer (Alpaca template) or pass --tokenizer_name_or_path."
        )
    prompt = tokenizer.apply_chat_template(prompt_messages, tokenize=False, add_generation_prompt=True)
    return prompt, reference


@torch.no_grad()
def generate_greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    generation_config: GenerationConfig,
    batch_size: int,
    max_length: int,
) -> tuple[list[str], int]:
    """Greedy continuations of `prompts` (batched, left-padded, KV cache), and how many prompts were truncated."""
    max_prompt_length = max_length - generation_config.max_new_tokens
    if max_prompt_length < 1:
        raise ValueError(
            f"--max_new_tokens {generation_config.max_new_tokens} leaves no room for a prompt in a context of "
            f"{max_length} tokens; lower --max_new_tokens."
        )
    rows, truncated = _encode_keeping_the_end(tokenizer, prompts, max_prompt_length)
    device = next(model.parameters()).device
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues the last column, so prompts must end there
    try:
        generations = []
        for start in range(0, len(rows), batch_size):
            batch = tokenizer.pad({"input_ids": rows[start : start + batch_size]}, padding=True, return_tensors="pt")
            output = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                generation_config=generation_config,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            generations.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
    return [text.strip() for text in generations], truncated


def evaluate_instruction(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict],
    args: EvaluationArguments,
) -> tuple[dict, list[dict]]:
    """BLEU of greedy generations against the references, and perplexity of the references given the prompts."""
    pairs = [instruction_prompt_and_reference(example, tokenizer) for example in examples]
    prompts = [prompt for prompt, _ in pairs]
    references = [reference for _, reference in pairs]
    max_length = args.max_length or model_max_length(model)
    generations, truncated = generate_greedy(
        model, tokenizer, prompts, decoding_settings(args, tokenizer), args.batch_size, max_length
    )
    bleu = load_metric("bleu", args.metrics_dir).compute(
        predictions=generations, references=[[reference] for reference in references], tokenize=args.bleu_tokenize
    )
    # The prompt is context, not scored; it already opens the sequence, so no extra BOS token.
    perplexity = compute_perplexity(
        model,
        tokenizer,
        references,
        contexts=prompts,
        batch_size=args.batch_size,
        max_length=max_length,
        stride=args.perplexity_stride,
        add_start_token=False,
    )
    metrics = {
        "bleu": bleu["bleu"],
        "bleu_precisions": bleu["precisions"],
        "bleu_brevity_penalty": bleu["brevity_penalty"],
        "bleu_signature": bleu["signature"],
        "reference_perplexity": perplexity["perplexity"],
        "num_examples": len(examples),
        "num_prompts_truncated": truncated,
    }
    samples = [
        {"prompt": prompt, "reference": reference, "generation": generation}
        for prompt, reference, generation in zip(prompts, references, generations, strict=True)
    ]
    return metrics, samples


def preference_texts(example: dict, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """`prompt + chosen` and `prompt + rejected` as the reward model saw them in TRL's `RewardTrainer`."""
    prompt, chosen, rejected = example.get("prompt"), example["chosen"], example["rejected"]
    if isinstance(chosen, str):
        # RewardTrainer appends EOS to plain-text completions and prepends the prompt.
        prefix = prompt or ""
        return tuple(
            prefix + text + ("" if text.endswith(tokenizer.eos_token) else tokenizer.eos_token)
            for text in (chosen, rejected)
        )
    prompt_messages = list(prompt or [])
    return tuple(
        tokenizer.apply_chat_template(prompt_messages + list(messages), tokenize=False)
        for messages in (chosen, rejected)
    )


def evaluate_reward(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[dict], args: EvaluationArguments
) -> dict:
    """Pairwise accuracy of a reward model: how often `prompt + chosen` scores above `prompt + rejected`."""
    if model.config.num_labels != 1:
        raise ValueError(
            f"a reward model has one output (num_labels=1); {args.model_name_or_path!r} has "
            f"{model.config.num_labels}. Evaluate a model trained with train_scripts/train_reward.py."
        )
    pairs = [preference_texts(example, tokenizer) for example in examples]
    max_length = args.max_length or model_max_length(model)
    chosen, truncated_chosen = score_sequences(model, tokenizer, [c for c, _ in pairs], args.batch_size, max_length)
    rejected, truncated_rejected = score_sequences(
        model, tokenizer, [r for _, r in pairs], args.batch_size, max_length
    )
    chosen, rejected = chosen[:, 0], rejected[:, 0]
    margins = chosen - rejected
    return {
        "pairwise_accuracy": float((margins > 0).mean()),  # a tie counts as a miss
        "mean_margin": float(margins.mean()),
        "mean_chosen_reward": float(chosen.mean()),
        "mean_rejected_reward": float(rejected.mean()),
        "num_examples": len(examples),
        "num_truncated": truncated_chosen + truncated_rejected,
    }


# ----------------------------------------------------------------------------------------------------------------
# Report


def decoding_settings(args: EvaluationArguments, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """Greedy decoding with the KV cache, stopping at EOS."""
    return GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that can move a metric, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_manifest(args: EvaluationArguments, data_args, dataset, tokenizer, model: PreTrainedModel) -> dict:
    """What a reader needs to reproduce the numbers: model, data (with fingerprint), settings and versions."""
    manifest = {
        "model_name_or_path": args.model_name_or_path,
        "is_adapter": is_adapter(args.model_name_or_path),
        "model_class": type(model).__name__,
        "task": args.task,
        "dataset_name": data_args.dataset_name,
        "dataset_config_name": getattr(data_args, "dataset_config_name", None),
        "split": args.split,
        "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
        "num_rows": len(dataset),
        "max_eval_samples": getattr(data_args, "max_eval_samples", None),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "max_length": args.max_length or model_max_length(model),
        "device": str(next(model.parameters()).device),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "versions": library_versions(),
    }
    if args.task in ("pretrain", "instruction"):
        manifest["perplexity_stride"] = args.perplexity_stride or max(manifest["max_length"] // 2, 1)
    if args.task == "instruction":
        config = decoding_settings(args, tokenizer)
        manifest["decoding"] = {
            key: getattr(config, key)
            for key in ("max_new_tokens", "do_sample", "num_beams", "use_cache", "pad_token_id", "eos_token_id")
        }
        manifest["bleu_tokenize"] = args.bleu_tokenize
    return manifest


def _format(value) -> str:
    # Pipes would split a markdown table cell (sacrebleu signatures are pipe-separated).
    return f"{value:.4f}" if isinstance(value, float) else str(value).replace("|", "\\|")


def render_markdown(metrics: dict, manifest: dict, samples: list[dict] | None = None) -> str:
    """`metrics.md`: headline numbers, the confusion matrix (classification), sample generations and the manifest."""
    lines = [
        f"# Evaluation: `{manifest['model_name_or_path']}` on `{manifest['dataset_name']}` ({manifest['split']})",
        "",
        f"Task: **{manifest['task']}**. Written {manifest['created_at']}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, value in metrics.items():
        if isinstance(value, (int, float, str)):
            lines.append(f"| {key} | {_format(value)} |")
    if "confusion_matrix" in metrics:
        names = metrics["label_names"]
        lines += ["", "## Confusion matrix (rows: true label, columns: predicted)", ""]
        lines += ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for name, row in zip(names, metrics["confusion_matrix"], strict=True):
            lines.append(f"| **{name}** | " + " | ".join(str(count) for count in row) + " |")
        lines += ["", "![confusion matrix](confusion_matrix.png)"]
        lines += ["", "| class | F1 |", "|---|---|"]
        lines += [f"| {name} | {f1:.4f} |" for name, f1 in metrics["f1_per_class"].items()]
    if samples:
        lines += ["", "## Sample generations", ""]
        for sample in samples[:5]:
            lines += [
                "```text",
                sample["prompt"].strip(),
                "```",
                f"- reference: {sample['reference']!r}",
                f"- generation: {sample['generation']!r}",
                "",
            ]
    lines += ["", "## Manifest", "", "```json", json.dumps(manifest, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def plot_confusion_matrix(confusion: list[list[int]], label_names: list[str], path: str | os.PathLike) -> None:
    """Save the confusion matrix as a PNG heat map with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    size = max(3.0, 0.6 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(label_names)), labels=label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), labels=label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    ax.set_title(f"Confusion matrix (n={int(matrix.sum())})")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def run_evaluation(args: EvaluationArguments, data_args) -> dict:
    """Evaluate `args.model_name_or_path` on `args.task` and write the report to `args.output_dir`.

    Args:
        args (`EvaluationArguments`): model, task, split, output and evaluation settings.
        data_args (`hf_llm.data.DataArguments`): the dataset (`--dataset_name`, column mappings,
            `--max_eval_samples`, ...).

    Returns:
        `dict`: the content of `metrics.json`: `{"metrics": {...}, "manifest": {...}}`.
    """
    if data_args.dataset_name is None:
        raise ValueError("--dataset_name is required: a Hub dataset id, a local file or folder, or 'pydocs'.")
    set_seed(args.seed)
    dataset = load_evaluation_split(args, data_args)
    label_names = list(dataset.features["label"].names) if args.task == "classification" else None
    # A LoRA classifier stores only its head's weights, so its size comes from the data (reward models: 1).
    num_labels = {"classification": len(label_names or []), "reward": 1}.get(args.task)
    model, tokenizer = load_model_for_evaluation(
        args.model_name_or_path,
        args.task,
        tokenizer_name_or_path=args.tokenizer_name_or_path,
        num_labels=num_labels,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )

    samples = None
    logger.info(f"Evaluating {args.model_name_or_path} ({args.task}) on {len(dataset)} examples of {args.split}.")
    if args.task == "pretrain":
        metrics = evaluate_pretrain(model, tokenizer, list(dataset["text"]), args)
    elif args.task == "classification":
        metrics = evaluate_classification(model, tokenizer, dataset["text"], dataset["label"], label_names, args)
    elif args.task == "instruction":
        metrics, samples = evaluate_instruction(model, tokenizer, list(dataset), args)
    else:
        metrics = evaluate_reward(model, tokenizer, list(dataset), args)

    manifest = build_manifest(args, data_args, dataset, tokenizer, model)
    report = {"metrics": metrics, "manifest": manifest}
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (output_dir / "metrics.md").write_text(render_markdown(metrics, manifest, samples), encoding="utf-8")
    if args.task == "classification":
        plot_confusion_matrix(metrics["confusion_matrix"], label_names, output_dir / "confusion_matrix.png")
    if samples is not None:
        with open(output_dir / "generations.jsonl", "w", encoding="utf-8") as f:
            for sample in samples:
                f.write(json.dumps(sample, ensure_ascii=False) + "\n")
    logger.info(f"Wrote {output_dir / 'metrics.json'} and {output_dir / 'metrics.md'}.")
    return report


def main(argv: list[str] | None = None) -> dict:
    """The `hf-llm eval` / `python eval/evaluate_model.py` command.

    Parses `EvaluationArguments` and `hf_llm.data.DataArguments` from `argv` (default `sys.argv[1:]`) with TRL's
    parser, so `--config recipe.yaml` sets defaults that later flags override, runs [`run_evaluation`] and prints
    the headline numbers.

    Args:
        argv (`list[str]`, *optional*): command-line arguments, without the program name.

    Returns:
        `dict`: the content of `metrics.json`.
    """
    from trl import TrlParser

    from hf_llm.data import DataArguments

    parser = TrlParser((EvaluationArguments, DataArguments))
    args, data_args = parser.parse_args_and_config(args=argv)
    report = run_evaluation(args, data_args)
    report["output_dir"] = str(args.output_dir)
    return report
