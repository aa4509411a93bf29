"""Share hf_llm artifacts on the Hugging Face Hub: model cards and pushing an `output_dir`.

Every training script ends the same way: `create_model_card` writes `README.md` into the `save_pretrained` directory
(YAML front matter the Hub indexes, how to load the model, its metrics and the recipe it was made with), then
`push_output_dir` creates the repo (if needed) and uploads the directory in one commit, leaving out checkpoints and
TensorBoard runs. GPT checkpoints carry `configuration_gpt.py` / `modeling_gpt.py` and an `auto_map`, so the pushed
repo loads with `AutoModelForCausalLM.from_pretrained(repo_id, trust_remote_code=True)` where hf_llm is not installed.

Loading from the Hub needs nothing from this module: every place that takes a path also takes a repo id
(`from_pretrained`, `GPTForCausalLM.from_gpt2`, `load_model_for_evaluation`, the perplexity metric).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import yaml
from datasets import DatasetDict
from huggingface_hub import HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import logging

from hf_llm.errors import UsageError

from .environment import requirement
from .evaluation.report import format_value, library_versions
from .stages import STAGES

logger = logging.get_logger(__name__)

MODEL_CARD_NAME = "README.md"

#: Left out of a push: intermediate checkpoints, TensorBoard runs and atomic-checkpoint staging directories.
PUSH_IGNORE_PATTERNS = ["checkpoint-*/", "runs/", "_tmp-*/"]

#: Stages whose artifact is a sequence-classification model (everything else is a causal LM).
SEQUENCE_CLASSIFICATION_STAGES = tuple(name for name, stage in STAGES.items() if stage.sequence_classification)

#: Recipe keys never written to a card, whatever the recipe holds.
_SECRET_KEYS = {"token", "hub_token", "hf_token", "push_to_hub_token"}


def _is_hub_repo_id(name: str | None) -> bool:
    """Whether `name` reads as a `namespace/name` Hub id rather than a local path or a bundled dataset name."""
    if not name or "/" not in name or os.path.exists(os.path.expanduser(name)):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if str(k) not in _SECRET_KEYS}
    if isinstance(value, (list, tuple)):
        return [_without_secrets(v) for v in value]
    return value


def _load_snippet(repo: str, is_adapter: bool, sequence_classification: bool, custom_code: bool) -> str:
    head = "ForSequenceClassification" if sequence_classification else "ForCausalLM"
    remote = ", trust_remote_code=True" if custom_code else ""
    if is_adapter:
        model_class = f"AutoPeftModel{head}"
        imports = f"from peft import {model_class}\nfrom transformers import AutoTokenizer"
    else:
        model_class = f"AutoModel{head}"
        imports = f"from transformers import AutoTokenizer, {model_class}"
    lines = [
        imports,
        "",
        f'model = {model_class}.from_pretrained("{repo}"{remote})',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
    ]
    if not sequence_classification:
        lines += [
            "",
            'inputs = tokenizer("def fibonacci(n):", return_tensors="pt")',
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))",
        ]
    return "\n".join(lines)


#: Metric names (after a split prefix such as `eval_`) that `hf_llm.evaluation.baselines` adds beside a classifier's.
_BASELINE_KEYS = (
    "majority_accuracy",
    "majority_macro_f1",
    "tfidf_accuracy",
    "tfidf_macro_f1",
    "tfidf_c",
    "num_train_examples",
    "accuracy_minus_majority",
    "accuracy_minus_tfidf",
    "macro_f1_minus_tfidf",
    "beats_tfidf",
    "baseline_verdict",
)
_SPLIT_NAMES = {"eval": "validation", "test": "test", "": "evaluated"}


def _is_baseline_key(key: str) -> bool:
    return any(key == name or key.endswith(f"_{name}") for name in _BASELINE_KEYS)


def _baseline_section(metrics: dict[str, Any]) -> list[str]:
    """
    A "Baselines" section for the splits whose metrics carry `*tfidf_accuracy` (`hf_llm.evaluation.baselines`): the
    classifier's accuracy and macro-F1 beside the majority class and TF-IDF + logistic regression fitted on the same
    train split, the difference, and each split's plain verdict sentence.
    """
    rows, verdicts = [], []
    for prefix, split in _SPLIT_NAMES.items():
        key = f"{prefix}_" if prefix else ""
        if metrics.get(f"{key}tfidf_accuracy") is None or metrics.get(f"{key}accuracy") is None:
            continue
        accuracy, tfidf = metrics[f"{key}accuracy"], metrics[f"{key}tfidf_accuracy"]
        majority = format_value(metrics.get(f"{key}majority_accuracy", ""))
        rows.append(
            f"| {split} | accuracy | {format_value(accuracy)} | {majority} | {format_value(tfidf)} "
            f"| {100 * (accuracy - tfidf):+.1f} points |"
        )
        if metrics.get(f"{key}macro_f1") is not None and metrics.get(f"{key}tfidf_macro_f1") is not None:
            f1, tfidf_f1 = metrics[f"{key}macro_f1"], metrics[f"{key}tfidf_macro_f1"]
            majority_f1 = format_value(metrics.get(f"{key}majority_macro_f1", ""))
            rows.append(
                f"| {split} | macro-F1 | {format_value(f1)} | {majority_f1} | {format_value(tfidf_f1)} "
                f"| {f1 - tfidf_f1:+.3f} |"
            )
        if metrics.get(f"{key}baseline_verdict"):
            verdicts.append(f"On the {split} split: {metrics[f'{key}baseline_verdict']}")
    if not rows:
        return []
    header = "| split | metric | this model | majority class | TF-IDF + logistic regression | model − TF-IDF |"
    caveat = (
        " The validation split also picked the best checkpoint, so its comparison flatters the model: trust the test "
        "split's."
        if any(row.startswith("| validation") for row in rows) and any(row.startswith("| test") for row in rows)
        else ""
    )
    return [
        "## Baselines",
        "Both baselines are fitted on the same train split and scored on the same split as the model: the training "
        "split's most frequent class, and TF-IDF (word unigrams and bigrams) + logistic regression (scikit-learn)."
        + caveat,
        header + "\n|---|---|---|---|---|---|\n" + "\n".join(rows),
        *verdicts,
    ]


def create_model_card(
    output_dir: str | os.PathLike,
    *,
    stage: str,
    base_model: str | None = None,
    dataset_name: str | None = None,
    metrics: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    hub_model_id: str | None = None,
) -> str:
    """Write a model card (`README.md`) into a `save_pretrained` directory.

    The YAML front matter carries `library_name` (`transformers`, or `peft` for a LoRA adapter), `tags` (`hf_llm`,
    the stage, `custom_code` when the model code ships with the weights, then `tags`), `pipeline_tag`, and
    `datasets` / `base_model` when they are Hub ids (local paths and bundled corpora are named in the body only).
    The body shows how to load the model, the architecture read from `config.json`, the metrics table and the recipe.

    Args:
        output_dir (`str` or `os.PathLike`):
            The directory written by `save_pretrained` (the card reads its `config.json` / `adapter_config.json`).
        stage (`str`):
            The stage that made the artifact (`hf_llm.stages.STAGE_NAMES`: `"pretrain"`, `"classifier"`, `"sft"`,
            `"reward"`, `"ppo"`, `"dpo"`); added as a tag.
        base_model (`str`, *optional*):
            The model this one was trained from (a Hub id or a local path). Defaults to an adapter's
            `base_model_name_or_path`.
        dataset_name (`str`, *optional*):
            The training data (a Hub dataset id, a local file or a bundled corpus name).
        metrics (`dict[str, Any]`, *optional*):
            Final metrics, e.g. `{"eval_loss": 2.1, "eval_perplexity": 8.2}`, shown as a table. A classifier's
            baselines (`eval_tfidf_accuracy`, `eval_majority_accuracy`, `eval_baseline_verdict`, ... from
            `hf_llm.evaluation.baselines`, for any split prefix) get their own "Baselines" section beside its scores,
            with the test split's from `test_results.json` in `output_dir` when the script wrote one.
        recipe (`dict[str, Any]`, *optional*):
            The resolved recipe (e.g. `hf_llm.training.recipes.recipe_dict(...)`), shown as YAML. Token fields are
            never written.
        tags (`list[str]`, *optional*):
            Extra tags for the front matter.
        hub_model_id (`str`, *optional*):
            The repo id the card will live in, used in the loading example (defaults to a placeholder).

    Returns:
        `str`: the path of the written `README.md`.
    """
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(
            f"--output_dir {output_dir!r} does not exist; save the model there (save_pretrained) before writing "
            "its model card."
        )
    config = _read_json(os.path.join(output_dir, "config.json")) or {}
    adapter_config = _read_json(os.path.join(output_dir, "adapter_config.json"))
    is_adapter = adapter_config is not None
    if is_adapter and base_model is None:
        base_model = adapter_config.get("base_model_name_or_path")
    architectures = config.get("architectures") or []
    if architectures:
        sequence_classification = any(a.endswith("ForSequenceClassification") for a in architectures)
    else:
        sequence_classification = stage in SEQUENCE_CLASSIFICATION_STAGES
    # An adapter's base is an hf_llm GPT (its code ships with it) or a transformers model: the flag is harmless there.
    custom_code = "auto_map" in config or is_adapter

    card_tags = ["hf_llm", stage]
    if "auto_map" in config:
        card_tags.append("custom_code")
    if is_adapter:
        card_tags += ["lora", "peft"]
    for tag in tags or []:
        if tag not in card_tags:
            card_tags.append(tag)
    pipeline_tag = "text-classification" if sequence_classification else "text-generation"
    card_data = ModelCardData(
        library_name="peft" if is_adapter else "transformers",
        tags=card_tags,
        pipeline_tag=pipeline_tag,
        datasets=[dataset_name] if _is_hub_repo_id(dataset_name) else None,
        base_model=base_model if _is_hub_repo_id(base_model) else None,
    )

    repo = hub_model_id or "<your-namespace>/<repo-name>"
    title = hub_model_id.split("/")[-1] if hub_model_id else os.path.basename(os.path.abspath(output_dir))
    what = "LoRA adapter" if is_adapter else ("sequence classifier" if sequence_classification else "language model")
    sections = [
        f"# {title}",
        f"A GPT {what} from the **{stage}** stage of hf_llm"
        + (f", trained from `{base_model}`" if base_model else "")
        + (f" on `{dataset_name}`" if dataset_name else "")
        + ".",
        "## How to use",
        f"```python\n{_load_snippet(repo, is_adapter, sequence_classification, custom_code)}\n```",
    ]
    if "auto_map" in config:
        sections.append(
            "The model code (`configuration_gpt.py`, `modeling_gpt.py`) ships with the weights, so "
            "`trust_remote_code=True` loads it where hf_llm is not installed; with hf_llm installed, `import hf_llm` "
            "registers the architecture and `trust_remote_code` is not needed."
        )
    sections += [
        "## Requirements",
        f"`{requirement('transformers')}`"
        + (f" and `{requirement('peft')}`" if is_adapter else "")
        + ". The shipped model code takes the KV cache as `cache`, the argument `generate()` passes since "
        "transformers 5.24; on older transformers its cached generation is wrong.",
    ]
    if config and not is_adapter:
        details = {
            "architecture": ", ".join(architectures) or config.get("model_type"),
            "hidden size": config.get("hidden_size"),
            "layers": config.get("num_hidden_layers"),
            "attention heads": config.get("num_attention_heads"),
            "context length": config.get("max_position_embeddings"),
            "vocabulary": config.get("vocab_size"),
        }
        rows = [f"| {k} | {format_value(v)} |" for k, v in details.items() if v is not None]
        sections += ["## Model details", "| | |\n|---|---|\n" + "\n".join(rows)]
    if metrics:
        # The test split's scores are written by the script before the card (Trainer's test_results.json); the metrics
        # passed here are the validation ones, on which the best epoch was picked, so they flatter the model.
        test_results = _read_json(os.path.join(output_dir, "test_results.json")) or {}
        baselines = _baseline_section({**metrics, **{k: v for k, v in test_results.items() if k.startswith("test_")}})
        shown = {k: v for k, v in metrics.items() if not (baselines and _is_baseline_key(k))}
        rows = [f"| {format_value(k)} | {format_value(v)} |" for k, v in shown.items()]
        sections += ["## Results", "| metric | value |\n|---|---|\n" + "\n".join(rows)]
        sections += baselines
    if recipe:
        recipe_yaml = yaml.safe_dump(_without_secrets(recipe), sort_keys=False, allow_unicode=True).strip()
        sections += [
            "## Training recipe",
            "The resolved recipe (YAML defaults + command-line overrides) this model was made with:",
            f"```yaml\n{recipe_yaml}\n```",
        ]
    versions = library_versions(("hf_llm", "transformers", "torch", "huggingface_hub", "peft", "trl"))
    sections += ["## Framework versions", "\n".join(f"- {name} {v}" for name, v in versions.items() if v)]

    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
    path = os.path.join(output_dir, MODEL_CARD_NAME)
    card.save(path)
    logger.info(f"Model card written to {path}")
    return path


def push_output_dir(
    output_dir: str | os.PathLike,
    hub_model_id: str | None,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload model trained with hf_llm",
) -> str:
    """Create the Hub repo (if needed) and upload a training `output_dir` to it in one commit.

    Intermediate checkpoints (`checkpoint-*/`), TensorBoard `runs/` and staging directories (`_tmp-*/`) are left
    out: the repo gets the final model, tokenizer, code files, model card, recipe and metrics.

    Args:
        output_dir (`str` or `os.PathLike`):
            The directory written by `save_pretrained` (and `create_model_card`).
        hub_model_id (`str`):
            The repo to push to, `namespace/name` (or `name`, in the token owner's namespace).
        private (`bool`, defaults to `False`):
            Create the repo private (an existing repo keeps its visibility).
        token (`str`, *optional*):
            A Hub token with write access; defaults to `HF_TOKEN` or the token saved by `hf auth login`.
        commit_message (`str`, defaults to `"Upload model trained with hf_llm"`):
            The commit message.

    Returns:
        `str`: the URL of the repo, e.g. `https://huggingface.co/your-name/gpt-tiny`.
    """
    if not hub_model_id:
        raise UsageError("--push_to_hub needs --hub_model_id: the repo to push to, e.g. --hub_model_id you/gpt-tiny.")
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"--output_dir {output_dir!r} does not exist: nothing to push to {hub_model_id}.")
    if not os.path.isfile(os.path.join(output_dir, MODEL_CARD_NAME)):
        logger.warning(f"{output_dir} has no {MODEL_CARD_NAME}; call hf_llm.hub.create_model_card before pushing.")
    config = _read_json(os.path.join(output_dir, "config.json")) or {}
    if config.get("model_type") == "hf_llm_gpt" and "auto_map" not in config:
        logger.warning(
            f"{output_dir}/config.json has no auto_map: the pushed model will load only where hf_llm is installed. "
            "Save it after `import hf_llm` (which registers the classes for remote code) to ship the model code."
        )

    api = HfApi(token=token)
    repo_url = api.create_repo(hub_model_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_url.repo_id,
        folder_path=output_dir,
        commit_message=commit_message,
        ignore_patterns=PUSH_IGNORE_PATTERNS,
    )
    logger.info(f"Pushed {output_dir} to {repo_url} ({commit.oid})")
    return str(repo_url)


def push_dataset(
    dataset: DatasetDict,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    card: str | None = None,
    commit_message: str = "Upload dataset with hf_llm",
) -> str:
    """Push a `DatasetDict` as a dataset repo that `datasets.load_dataset(repo_id)` reads back, in one commit.

    Each split is written as `data/<split>-00000-of-00001.parquet` (the layout the Hub's loader maps to splits by
    file name), with `card` as the repo's `README.md`.

    Args:
        dataset (`DatasetDict`): The splits to push.
        repo_id (`str`): The dataset repo, `namespace/name`.
        private (`bool`, defaults to `False`): Create the repo private (an existing repo keeps its visibility).
        token (`str`, *optional*): A Hub token with write access; defaults to `HF_TOKEN` or the saved login.
        card (`str`, *optional*): The dataset card; defaults to a short one listing the splits.
        commit_message (`str`): The commit message.

    Returns:
        `str`: The URL of the dataset repo.
    """
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        os.makedirs(os.path.join(folder, "data"))
        for split, split_dataset in dataset.items():
            split_dataset.to_parquet(os.path.join(folder, "data", f"{split}-00000-of-00001.parquet"))
        rows = ", ".join(f"{split}: {len(split_dataset)} rows" for split, split_dataset in dataset.items())
        with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
            f.write(card or f"# {repo_id.split('/')[-1]}\n\nPushed with hf_llm ({rows}).\n")
        api.upload_folder(
            repo_id=repo_url.repo_id, repo_type="dataset", folder_path=folder, commit_message=commit_message
        )
    logger.info(f"Pushed the dataset ({rows}) to {repo_url}")
    return str(repo_url)
