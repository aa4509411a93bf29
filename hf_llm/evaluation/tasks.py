"""The evaluators: one function per `--task`, each measuring one stage's artifact (`hf_llm.stages`).

| task | model | metrics |
|---|---|---|
| `pretrain` | causal LM | perplexity (token-weighted), bits per byte |
| `classifier` | sequence classifier | accuracy, macro-F1, confusion matrix (+ png); majority and TF-IDF baselines |
| `sft` | causal LM | BLEU of greedy answers, perplexity of the references; BLEU of the nearest training answer |
| `reward` | reward model (`num_labels=1`) | pairwise accuracy (chosen scored above rejected), mean margin |
| `win_rate` | policy (+ reference, reward model) | mean reward of greedy answers, win rate over the reference |

Every evaluator has the signature `evaluate_<task>(model, tokenizer, dataset, args) -> TaskResult`: `dataset` is the
evaluated split in the stage's data format (`STAGES[...].data_format`, canonical columns), `args` the
`EvaluationArguments`. A new task is a function with that signature (in its own module when it is large) and one
entry in `EVALUATORS`, keyed by the `eval_task` its stages name in `hf_llm/stages.py`.

The classifier and SFT evaluators also score baselines (`hf_llm.evaluation.baselines`) trained on the split the model
was trained on, which they rebuild from the `recipe.yaml` the checkpoint carries (its `DataArguments` and seed);
`train_dataset=` passes that split directly. When it cannot be rebuilt (no recipe, data no longer where the recipe
says), `baselines` in the metrics says why.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import DataArguments, load_dataset_from_args
from ..data.formatting import instruction_prompt_and_reference, preference_texts
from ..errors import UsageError
from ..loading import load_model_for_evaluation, load_reward_model
from .baselines import (
    TFIDF_SETTINGS,
    bleu_verdict,
    classification_baselines,
    compare_to_baselines,
    nearest_neighbour_answers,
)
from .classification import classification_report
from .inference import decoding_settings, generate_greedy, greedy_decoding, score_sequences
from .metrics import load_metric
from .perplexity import compute_perplexity, model_max_length
from .win_rate import compare_policies

if TYPE_CHECKING:
    from datasets import Dataset

    from .arguments import EvaluationArguments


@dataclass
class TaskResult:
    """What an evaluator measured."""

    metrics: dict
    """`metrics.json`'s `metrics`: numbers (and small tables such as a confusion matrix)."""
    samples: list[dict] | None = None
    """Per-example outputs (e.g. `prompt`, `reference`, `generation`), written to `generations.jsonl`."""
    settings: dict = field(default_factory=dict)
    """Task-specific settings a reader needs to reproduce the numbers (stride, decoding), added to the manifest."""


def _max_length(model: PreTrainedModel, args: EvaluationArguments) -> int:
    return args.max_length or model_max_length(model)


def _perplexity_stride(model: PreTrainedModel, args: EvaluationArguments) -> int:
    return args.perplexity_stride or max(_max_length(model, args) // 2, 1)


#: The resolved recipe every training script saves next to its model (`hf_llm.training.recipes.RECIPE_NAME`).
_RECIPE_FILE = "recipe.yaml"


def training_split_of(model_name_or_path: str, data_format: str) -> tuple[Dataset | None, str]:
    """
    The training split a checkpoint was trained on, rebuilt from the `recipe.yaml` saved beside it: its
    `DataArguments` and its seed (which also drew the validation hold-out).

    Args:
        model_name_or_path (`str`): A local checkpoint directory written by one of hf_llm's training scripts.
        data_format (`str`): The data format to load it in (`"classification"`, `"instruction"`).

    Returns:
        `tuple[Dataset | None, str]`: The split, or `None` and the reason it could not be rebuilt.
    """
    recipe_path = os.path.join(model_name_or_path, _RECIPE_FILE)
    if not os.path.isfile(recipe_path):
        return None, (
            f"{model_name_or_path} has no {_RECIPE_FILE} (only checkpoints saved by hf_llm's training scripts, as "
            "local directories, say which data trained them)"
        )
    with open(recipe_path, encoding="utf-8") as f:
        recipe = yaml.safe_load(f) or {}
    # The recipe is a flat `--config` file: its keys are the scripts' flags, DataArguments' among them.
    known = {f.name for f in dataclasses.fields(DataArguments)}
    data_fields = {k: v for k, v in recipe.items() if k in known}
    if not data_fields.get("dataset_name"):
        return None, f"{recipe_path} names no dataset_name"
    # Recipes record only values that differ from the defaults: no seed means TrainingArguments' default, 42.
    seed = recipe.get("seed", 42)
    try:
        splits = load_dataset_from_args(DataArguments(**data_fields), data_format, seed=seed)
    except (OSError, ValueError) as error:  # DataError and UsageError are ValueErrors: data moved or unreadable
        return None, f"the training data in {recipe_path} could not be loaded: {error}"
    if "train" not in splits:
        return None, f"the data in {recipe_path} has no train split"
    return splits["train"], f"the train split of {data_fields['dataset_name']} ({_RECIPE_FILE}, seed {seed})"


def evaluate_pretrain(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, args: EvaluationArguments
) -> TaskResult:
    """Corpus perplexity and bits per byte of the `text` column (empty texts are skipped and counted)."""
    texts = list(dataset["text"])
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
    metrics = {
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
    return TaskResult(metrics, settings={"perplexity_stride": _perplexity_stride(model, args)})


def evaluate_classifier(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    args: EvaluationArguments,
    train_dataset: Dataset | None = None,
) -> TaskResult:
    """
    Accuracy (through the `accuracy` module), macro-F1 and confusion matrix of a classifier, beside the majority-class
    and TF-IDF + logistic-regression baselines trained on `train_dataset` (default: the split the checkpoint's recipe
    trained it on) and the margins over them (`accuracy_minus_tfidf`, `baseline_verdict`).
    """
    label_names = list(dataset.features["label"].names)
    labels = list(dataset["label"])
    logits, truncated = score_sequences(model, tokenizer, dataset["text"], args.batch_size, _max_length(model, args))
    if logits.shape[1] != len(label_names):
        raise UsageError(
            f"the model has {logits.shape[1]} output labels but the dataset has {len(label_names)} classes "
            f"({label_names}); evaluate a classifier trained on this dataset."
        )
    predictions = logits.argmax(axis=-1)
    report = classification_report(predictions, labels, num_labels=len(label_names))
    accuracy = load_metric("accuracy", args.metrics_dir).compute(predictions=predictions.tolist(), references=labels)
    metrics = {
        "accuracy": accuracy["accuracy"],
        "macro_f1": report["macro_f1"],
        "f1_per_class": dict(zip(label_names, report["f1_per_class"], strict=True)),
        "confusion_matrix": report["confusion_matrix"],
        "label_names": label_names,
        "num_examples": len(labels),
        "num_truncated": truncated,
    }
    settings = {}
    train_source = "train_dataset"
    if train_dataset is None:
        train_dataset, train_source = training_split_of(args.model_name_or_path, "classification")
    if train_dataset is not None and list(train_dataset.features["label"].names) != label_names:
        train_dataset, train_source = (
            None,
            (
                f"the model's training classes {train_dataset.features['label'].names} differ from the evaluated "
                f"split's {label_names}"
            ),
        )
    if train_dataset is None:
        metrics["baselines"] = f"not computed: {train_source}"
    else:
        baselines = classification_baselines(
            train_dataset["text"], train_dataset["label"], dataset["text"], labels, num_labels=len(label_names)
        )
        metrics.update(baselines)
        metrics.update(compare_to_baselines(metrics["accuracy"], metrics["macro_f1"], baselines))
        settings["baselines"] = {"trained_on": train_source, "tfidf": TFIDF_SETTINGS}
    return TaskResult(metrics, settings=settings)


def evaluate_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    args: EvaluationArguments,
    train_dataset: Dataset | None = None,
) -> TaskResult:
    """
    BLEU of greedy generations against the references, perplexity of the references given the prompts, and the BLEU
    of copying the answer of the most similar training instruction (`nearest_neighbour_bleu`; training split:
    `train_dataset`, default the one the checkpoint's recipe names), scored the same way.
    """
    pairs = [instruction_prompt_and_reference(example, tokenizer) for example in dataset]
    prompts = [prompt for prompt, _ in pairs]
    references = [reference for _, reference in pairs]
    max_length = _max_length(model, args)
    generation_config = greedy_decoding(args.max_new_tokens, tokenizer)
    generations, truncated = generate_greedy(model, tokenizer, prompts, generation_config, args.batch_size, max_length)
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
        "num_examples": len(pairs),
        "num_prompts_truncated": truncated,
    }
    train_source = "train_dataset"
    if train_dataset is None:
        train_dataset, train_source = training_split_of(args.model_name_or_path, "instruction")
    if train_dataset is None:
        metrics["baselines"] = f"not computed: {train_source}"
    else:
        train_pairs = [instruction_prompt_and_reference(example, tokenizer) for example in train_dataset]
        copied = nearest_neighbour_answers([p for p, _ in train_pairs], [r for _, r in train_pairs], prompts)
        nearest = load_metric("bleu", args.metrics_dir).compute(
            predictions=copied, references=[[reference] for reference in references], tokenize=args.bleu_tokenize
        )
        metrics["nearest_neighbour_bleu"] = nearest["bleu"]
        metrics["bleu_minus_nearest_neighbour"] = bleu["bleu"] - nearest["bleu"]
        metrics["baseline_verdict"] = bleu_verdict(bleu["bleu"], nearest["bleu"])
    samples = [
        {"prompt": prompt, "reference": reference, "generation": generation}
        for prompt, reference, generation in zip(prompts, references, generations, strict=True)
    ]
    settings = {
        "perplexity_stride": _perplexity_stride(model, args),
        "decoding": decoding_settings(generation_config),
        "bleu_tokenize": args.bleu_tokenize,
    }
    if "nearest_neighbour_bleu" in metrics:
        settings["baselines"] = {"trained_on": train_source, "nearest_neighbour": "TF-IDF cosine over the prompts"}
    return TaskResult(metrics, samples, settings)


def evaluate_reward(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, args: EvaluationArguments
) -> TaskResult:
    """
    Pairwise accuracy of a reward model: how often `prompt + chosen` scores above `prompt + rejected`. Data with a
    `rejected_kind` column (pydocs: what is wrong with the rejected answer) also gets `pairwise_accuracy/<kind>`.
    """
    if model.config.num_labels != 1:
        raise UsageError(
            f"a reward model has one output (num_labels=1); {args.model_name_or_path!r} has "
            f"{model.config.num_labels}. Evaluate a model trained with train_scripts/reward.py."
        )
    pairs = [preference_texts(example, tokenizer) for example in dataset]
    max_length = _max_length(model, args)
    chosen, truncated_chosen = score_sequences(model, tokenizer, [c for c, _ in pairs], args.batch_size, max_length)
    rejected, truncated_rejected = score_sequences(
        model, tokenizer, [r for _, r in pairs], args.batch_size, max_length
    )
    chosen, rejected = chosen[:, 0], rejected[:, 0]
    margins = chosen - rejected
    metrics = {
        "pairwise_accuracy": float((margins > 0).mean()),  # a tie counts as a miss
        "mean_margin": float(margins.mean()),
        "mean_chosen_reward": float(chosen.mean()),
        "mean_rejected_reward": float(rejected.mean()),
        "num_examples": len(pairs),
        "num_truncated": truncated_chosen + truncated_rejected,
    }
    if "rejected_kind" in dataset.column_names:
        kinds = np.array(dataset["rejected_kind"])
        for kind in sorted(set(kinds)):
            metrics[f"pairwise_accuracy/{kind}"] = float((margins[kinds == kind] > 0).mean())
    return TaskResult(metrics)


def evaluate_win_rate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, args: EvaluationArguments
) -> TaskResult:
    """
    The `win_rate` task (`hf-llm eval --task win_rate`): mean reward of `--model_name_or_path`'s greedy answers to the
    split's prompts under `--reward_model_path` and, with `--reference_model_name_or_path` (e.g. the SFT
    model), the win rate over that policy's answers. Each prompt's answers and rewards go to `generations.jsonl`.
    """
    if not args.reward_model_path:
        raise UsageError(
            "--task win_rate scores answers with a reward model: pass --reward_model_path (a reward.py "
            "output), and --reference_model_name_or_path (e.g. the SFT model) for the win rate."
        )
    device = next(model.parameters()).device
    reward_model = load_reward_model(
        args.reward_model_path, trust_remote_code=args.trust_remote_code, what="--reward_model_path"
    ).to(device)
    reward_model.config.pad_token_id = tokenizer.pad_token_id
    reference = None
    if args.reference_model_name_or_path:
        reference, _ = load_model_for_evaluation(
            args.reference_model_name_or_path, "win_rate", device=device, trust_remote_code=args.trust_remote_code
        )
    metrics, samples = compare_policies(
        model, reference, reward_model, tokenizer, list(dataset), max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )  # fmt: skip
    # The report's sample format: the prompt, the model's answer ("generation") and the reference policy's.
    samples = [
        {
            "prompt": sample["prompt"],
            "generation": sample["response"],
            "reference": sample.get("reference_response", ""),
            "reward": sample["reward"],
            "reference_reward": sample.get("reference_reward"),
        }
        for sample in samples
    ]
    settings = {
        "reward_model": args.reward_model_path,
        "reference_model": args.reference_model_name_or_path,
        "decoding": "greedy",
        "max_new_tokens": args.max_new_tokens,
    }
    return TaskResult(metrics, samples, settings)


Evaluator = Callable[[PreTrainedModel, PreTrainedTokenizerBase, "Dataset", "EvaluationArguments"], TaskResult]

#: `--task` -> evaluator. Keys are the `eval_task`s of `hf_llm.stages.STAGES`, which also give each task its data
#: format and model head (`stage_for_eval_task`).
EVALUATORS: dict[str, Evaluator] = {
    "pretrain": evaluate_pretrain,
    "classifier": evaluate_classifier,
    "sft": evaluate_sft,
    "reward": evaluate_reward,
    "win_rate": evaluate_win_rate,
}

#: The `--task` values `hf-llm eval` accepts.
TASKS: tuple[str, ...] = tuple(EVALUATORS)
