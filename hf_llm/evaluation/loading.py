"""Find hf_llm's `evaluate` modules by path, and load any checkpoint (full model or LoRA adapter) for evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging
from transformers.utils.peft_utils import find_adapter_config_file

from hf_llm.loading import (
    check_causal_lm,
    check_classification_head,
    check_model_source,
    explain_load_error,
    from_pretrained,
)

from ..stages import stage_for_eval_task

logger = logging.get_logger(__name__)

#: Where `eval/metrics` sits in a checkout: hf_llm/evaluation/loading.py -> parents[2] is the repository root.
DEFAULT_METRICS_DIR = Path(__file__).resolve().parents[2] / "eval" / "metrics"


def metric_path(name: str, metrics_dir: str | os.PathLike | None = None) -> str:
    """Path of the `evaluate` module script `eval/metrics/<name>/<name>.py`.

    hf_llm never imports `eval/`; it finds the modules next to the package in a checkout, or in
    `metrics_dir` when given.

    Args:
        name (`str`): the metric, e.g. `"bleu"`, `"accuracy"` or `"perplexity"`.
        metrics_dir (`str` or `os.PathLike`, *optional*): the `eval/metrics` directory; defaults to the one in the
            checkout hf_llm was installed from.

    Returns:
        `str`: the script path, ready for `evaluate.load`.
    """
    root = Path(metrics_dir) if metrics_dir is not None else DEFAULT_METRICS_DIR
    script = root / name / f"{name}.py"
    if not script.is_file():
        available = sorted(p.name for p in root.iterdir() if (p / f"{p.name}.py").is_file()) if root.is_dir() else []
        raise FileNotFoundError(
            f"evaluate module {name!r} not found at {script}. hf_llm finds its metrics in the eval/metrics "
            f"directory of the checkout it was installed from (available there: {available or 'none'}). "
            "Install hf_llm from a checkout (`git clone ... && pip install -e .`) or pass "
            "--metrics_dir /path/to/hf_llm/eval/metrics."
        )
    return str(script)


def load_metric(name: str, metrics_dir: str | os.PathLike | None = None, **kwargs):
    """`evaluate.load` one of hf_llm's offline metric modules by name.

    Args:
        name (`str`): `"accuracy"`, `"bleu"` or `"perplexity"`.
        metrics_dir (`str` or `os.PathLike`, *optional*): see [`metric_path`].
        kwargs: passed to `evaluate.load`.

    Returns:
        `evaluate.EvaluationModule`
    """
    import evaluate  # imported here: `evaluate` is slow to import and only evaluation needs it

    return evaluate.load(metric_path(name, metrics_dir), **kwargs)


def _looks_local(model_name_or_path: str) -> bool:
    """Whether the string can only be a filesystem path (a Hub id is `name` or `namespace/name`)."""
    return (
        os.path.isabs(model_name_or_path)
        or model_name_or_path.startswith((".", "~"))
        or model_name_or_path.count("/") > 1
        or (os.sep != "/" and os.sep in model_name_or_path)
    )


def is_adapter(model_name_or_path: str) -> bool:
    """Whether `model_name_or_path` (a directory or Hub repo id) holds a PEFT adapter (`adapter_config.json`)."""
    try:
        return find_adapter_config_file(model_name_or_path) is not None
    except (OSError, ValueError):
        return False


def _load_tokenizer(candidates: list[str], trust_remote_code: bool) -> PreTrainedTokenizerBase:
    errors = []
    for candidate in candidates:
        if os.path.isdir(candidate) and not any(
            (Path(candidate) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
        ):
            errors.append(f"{candidate}: no tokenizer files")
            continue
        try:
            return AutoTokenizer.from_pretrained(candidate, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            errors.append(f"{candidate}: {err}")
    raise OSError(
        f"no tokenizer found in {candidates} ({'; '.join(errors)}). Save the tokenizer with the checkpoint "
        "(tokenizer.save_pretrained(output_dir)) or pass --tokenizer_name_or_path."
    )


def load_model_for_evaluation(
    model_name_or_path: str,
    task: str,
    tokenizer_name_or_path: str | None = None,
    num_labels: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a checkpoint and its tokenizer for evaluation, in eval mode.

    `model_name_or_path` may be a full model (base or merged) or a LoRA adapter (a directory or Hub repo with
    `adapter_config.json`), which is loaded on top of its base model through `peft`'s `AutoPeftModelFor*`.

    Args:
        model_name_or_path (`str`): a local `save_pretrained` directory or a Hub repo id.
        task (`str`): the evaluation task (`hf_llm.stages`): `"pretrain"`, `"sft"` or `"win_rate"` load a causal LM,
            `"classifier"` or `"reward"` a sequence-classification model.
        tokenizer_name_or_path (`str`, *optional*): where to load the tokenizer from; defaults to the checkpoint,
            then (for an adapter without tokenizer files) its base model.
        num_labels (`int`, *optional*): number of labels of a sequence-classification adapter's head; a LoRA
            adapter stores only the head's weights, so the base model must be built with the right head size.
        device (`str` or `torch.device`, *optional*): defaults to CUDA when available, else CPU.
        dtype (`torch.dtype` or `str`, *optional*): weights dtype; defaults to the checkpoint's.
        trust_remote_code (`bool`, defaults to `False`): allow code from the checkpoint (never on by default).

    Returns:
        `tuple[PreTrainedModel, PreTrainedTokenizerBase]`: the model (a `PeftModel` for an adapter) and tokenizer.
    """
    import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)

    sequence_classification = stage_for_eval_task(task).sequence_classification
    auto_class = AutoModelForSequenceClassification if sequence_classification else AutoModelForCausalLM
    # A missing directory, pickle-only weights or a truncated file: one line naming the path, before loading.
    check_model_source(model_name_or_path)
    model_name_or_path = os.path.expanduser(model_name_or_path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    load_kwargs = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        load_kwargs["dtype"] = dtype

    try:
        adapter_config_file = find_adapter_config_file(model_name_or_path)
    except OSError:
        adapter_config_file = None
    tokenizer_candidates = [tokenizer_name_or_path] if tokenizer_name_or_path else [model_name_or_path]
    adapter_config = None
    if adapter_config_file is not None:
        with open(adapter_config_file, encoding="utf-8") as f:
            adapter_config = json.load(f)
    # The kind of model must fit the task before any data or weights are loaded.
    check_kind = check_classification_head if sequence_classification else check_causal_lm
    try:
        check_kind(model_name_or_path, task, adapter_config=adapter_config, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise OSError(explain_load_error(model_name_or_path, "--model_name_or_path", err)) from err
    try:
        if adapter_config_file is not None:
            from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

            with open(adapter_config_file, encoding="utf-8") as f:
                base_model = json.load(f).get("base_model_name_or_path")
            logger.info(f"{model_name_or_path} is a LoRA adapter on {base_model}; loading it with peft.")
            if not tokenizer_name_or_path and base_model:
                tokenizer_candidates.append(base_model)
            peft_class = (
                AutoPeftModelForCausalLM
                if auto_class is AutoModelForCausalLM
                else AutoPeftModelForSequenceClassification
            )
            if num_labels is not None and auto_class is AutoModelForSequenceClassification:
                load_kwargs["num_labels"] = num_labels
            model = peft_class.from_pretrained(model_name_or_path, is_trainable=False, **load_kwargs)
        else:
            model = from_pretrained(auto_class, model_name_or_path, **load_kwargs)
    except OSError as err:
        raise OSError(explain_load_error(model_name_or_path, "--model_name_or_path", err)) from err

    tokenizer = _load_tokenizer(tokenizer_candidates, trust_remote_code)
    if auto_class is AutoModelForSequenceClassification:
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ValueError(
                f"the tokenizer of {model_name_or_path!r} has pad token {tokenizer.pad_token!r}; a classifier or "
                "reward model pools the last non-pad token, so it needs a pad token distinct from eos. Train the "
                "tokenizer with hf_llm.tokenizer.train_tokenizer, or add a pad token and save it with the model."
            )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    elif tokenizer.pad_token is None:
        # Padding is masked out of every causal-LM score, so any token will do (e.g. GPT-2 ships no pad token).
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return model, tokenizer
