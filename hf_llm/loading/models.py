"""Load a checkpoint named by the user: the one `from_pretrained` every entry point goes through, with its tokenizer,
for evaluation (full model or adapter) or as a reward model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers import __version__ as transformers_version
from transformers.utils import logging

from hf_llm.errors import LoadError, UsageError
from hf_llm.stages import stage_for_eval_task

from .adapters import load_adapter_model
from .kinds import check_model_kind
from .sources import (
    RESAVE_ADVICE,
    _check_weights_fit_config,
    check_attn_implementation,
    check_model_source,
    explain_load_error,
    load_errors,
    local_path_exists,
    read_adapter_config,
    shipped_code_predates_cache_rename,
)

logger = logging.get_logger(__name__)


def from_pretrained(
    auto_class: Any, name_or_path: str, *, flag: str = "--model_name_or_path", **kwargs: Any
) -> PreTrainedModel:
    """
    `auto_class.from_pretrained(name_or_path, **kwargs)` with every user mistake turned into a one-line error.

    Loads safetensors weights only (`use_safetensors=True`). Checks the source first ([`check_model_source`]),
    the attention kernel ([`check_attn_implementation`]) and that a local directory's weights fit its `config.json`.

    Args:
        auto_class: An Auto class (`AutoModelForCausalLM`, `AutoModelForSequenceClassification`, ...) or a model
            class.
        name_or_path (`str`): A local `save_pretrained` directory or a Hub repo id.
        flag (`str`, defaults to `"--model_name_or_path"`): The flag to name in errors.
        kwargs: Passed to `from_pretrained` (`revision`, `dtype`, `attn_implementation`, `num_labels`, ...).

    Returns:
        `PreTrainedModel`: The loaded model.

    Raises:
        `OSError` or `ValueError`: With a message naming the path, the flag and the fix.
    """
    check_model_source(name_or_path, flag)
    check_attn_implementation(kwargs.get("attn_implementation"))
    path = os.path.expanduser(name_or_path)
    kwargs.setdefault("use_safetensors", True)
    if kwargs.get("trust_remote_code") and os.path.isdir(path) and shipped_code_predates_cache_rename(path):
        # Its own modeling_gpt.py would run and decode every cached generate() without context; hf_llm's class is
        # registered with the Auto classes, so transformers uses it once remote code is not asked for.
        logger.warning(
            f"{name_or_path}/modeling_gpt.py was saved by hf_llm 0.1.0 for transformers < 5.24 and generates wrong "
            f"tokens on transformers {transformers_version}; loading it with hf_llm's own GPT classes instead. "
            f"{RESAVE_ADVICE.format(path=name_or_path)}"
        )
        kwargs["trust_remote_code"] = False
    if os.path.isdir(path):
        config_kwargs = {k: v for k, v in kwargs.items() if k in ("num_labels", "trust_remote_code")}
        _check_weights_fit_config(auto_class, path, flag, **config_kwargs)
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except OSError as err:
        raise LoadError(explain_load_error(name_or_path, flag, err)) from err


def tokenizer_from_pretrained(name_or_path: str, *, flag: str = "--tokenizer_name_or_path", **kwargs: Any):
    """
    `AutoTokenizer.from_pretrained(name_or_path, **kwargs)` with a missing path or an unreachable Hub id reported in
    one line naming `flag` (see [`from_pretrained`]).

    Returns:
        `PreTrainedTokenizerBase`: The tokenizer.
    """
    from transformers import AutoTokenizer

    local_path_exists(name_or_path, flag)
    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(name_or_path), **kwargs)
    except OSError as err:
        raise LoadError(explain_load_error(name_or_path, flag, err)) from err


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
    raise LoadError(
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

    adapter_config = read_adapter_config(model_name_or_path)
    tokenizer_candidates = [tokenizer_name_or_path] if tokenizer_name_or_path else [model_name_or_path]
    # The kind of model must fit the task before any data or weights are loaded.
    kind = ("reward" if task == "reward" else "classifier") if sequence_classification else "causal_lm"
    try:
        check_model_kind(
            model_name_or_path, kind, task=task, adapter_config=adapter_config, trust_remote_code=trust_remote_code
        )
    except OSError as err:
        raise LoadError(explain_load_error(model_name_or_path, "--model_name_or_path", err)) from err
    try:
        if adapter_config is not None:
            from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

            base_model = adapter_config.get("base_model_name_or_path")
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
        raise LoadError(explain_load_error(model_name_or_path, "--model_name_or_path", err)) from err

    tokenizer = _load_tokenizer(tokenizer_candidates, trust_remote_code)
    if auto_class is AutoModelForSequenceClassification:
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise UsageError(
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


def load_reward_model(
    model_name_or_path: str,
    *,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    what: str = "--reward_model_path",
) -> PreTrainedModel:
    """
    Load a reward model (a `reward.py` output: full, merged or a LoRA adapter, which is merged here) as a standalone
    `AutoModelForSequenceClassification` with one output, the form PPO's `get_reward` needs (a backbone and a `score`
    head).

    Args:
        model_name_or_path (`str`): A directory or Hub repo id.
        dtype (`torch.dtype` or `str`, *optional*): Weights dtype; defaults to the checkpoint's.
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.
        what (`str`, defaults to `"--reward_model_path"`): The flag that named the model, for error messages.

    Returns:
        `PreTrainedModel`: The reward model, in eval mode.

    Raises:
        `UsageError`: The checkpoint is not a reward model (a causal LM, or a classifier with several labels); see
            [`check_model_kind`].
    """
    import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)

    check_model_kind(model_name_or_path, "reward", flag=what, trust_remote_code=trust_remote_code)
    if read_adapter_config(model_name_or_path) is not None:
        model = load_adapter_model(model_name_or_path, num_labels=1, trust_remote_code=trust_remote_code)
        model = model.merge_and_unload()
    else:
        with load_errors(model_name_or_path, what):
            model = AutoModelForSequenceClassification.from_pretrained(
                model_name_or_path, dtype=dtype, trust_remote_code=trust_remote_code
            )
    return model.eval()
