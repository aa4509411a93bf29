"""What kind of model a checkpoint is, checked before it is loaded: one function for every stage and evaluation.

A checkpoint of the wrong kind loads without complaint and gives numbers that look like a result: a causal LM loaded
with `AutoModelForSequenceClassification` gets a random `score` head (its accuracy or reward is noise), and a
classifier loaded with `AutoModelForCausalLM` gets a language-model head tied to its embeddings (its perplexity is
meaningless). [`check_model_kind`] reads only the config (or `adapter_config.json`) and refuses such a pairing in one
line naming the kind found and what fits it.
"""

from __future__ import annotations

import os
from typing import Any

from hf_llm.errors import UsageError

from .sources import load_errors, read_adapter_config

#: The kinds of model hf_llm's stages and evaluations load, with how an error names them and which stage writes one.
MODEL_KINDS = {
    "causal_lm": ("a language model", "a pretrain, sft, ppo or dpo output"),
    "classifier": (
        "a classifier (a trained classification head of two or more labels)",
        "train_scripts/classifier.py",
    ),
    "reward": ("a reward model (a sequence classifier with one output, num_labels=1)", "train_scripts/reward.py"),
}


def found_kind(name_or_path: str, *, adapter_config: dict | None = None, trust_remote_code: bool = False) -> tuple:
    """
    `(kind, description)` of a checkpoint, read from its config: `kind` is one of [`MODEL_KINDS`], `"seq_cls_adapter"`
    (a classifier or reward adapter: its number of labels is not in `adapter_config.json`) or `None` (no head hf_llm
    knows); `description` names it for an error message.
    """
    from transformers import AutoConfig

    if adapter_config is not None:
        task_type = adapter_config.get("task_type")
        saved = set(adapter_config.get("modules_to_save") or [])
        if task_type == "SEQ_CLS" or saved & {"score", "classifier"}:
            return "seq_cls_adapter", "a sequence-classification (SEQ_CLS) adapter"
        if task_type == "CAUSAL_LM":
            return "causal_lm", "a CAUSAL_LM adapter (a language model's LoRA)"
        return None, f"a {task_type or 'PEFT'} adapter without a trained classification head"
    import hf_llm  # noqa: F401  (registers the GPT family with AutoConfig)

    with load_errors(name_or_path):
        config = AutoConfig.from_pretrained(os.path.expanduser(name_or_path), trust_remote_code=trust_remote_code)
    architectures = config.architectures or []
    named = ", ".join(architectures) or config.model_type
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        if config.num_labels == 1:
            return "reward", f"a reward model ({named}, one output)"
        return "classifier", f"a classifier ({named}, {config.num_labels} labels)"
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        return "causal_lm", f"a {named} with no trained classification head"
    return None, f"a {named} model"


def check_model_kind(
    name_or_path: str,
    kind: str,
    *,
    flag: str = "--model_name_or_path",
    task: str | None = None,
    adapter_config: dict | None | Any = ...,
    trust_remote_code: bool = False,
) -> None:
    """
    Refuse a checkpoint that is not of the `kind` a stage or evaluation needs, before it is loaded.

    Args:
        name_or_path (`str`): A local `save_pretrained` directory or Hub repo id (model or LoRA adapter).
        kind (`str`): `"causal_lm"`, `"classifier"` or `"reward"` (see [`MODEL_KINDS`]).
        flag (`str`, defaults to `"--model_name_or_path"`): The flag that named the checkpoint.
        task (`str`, *optional*): The evaluation (`--task`) asking, named first in the message.
        adapter_config (`dict`, *optional*): The checkpoint's `adapter_config.json` when already read; read here
            when not given.
        trust_remote_code (`bool`, defaults to `False`): Passed to `AutoConfig`.

    Raises:
        `UsageError`: Naming the checkpoint, the kind found, the kind needed and what fits.
    """
    if adapter_config is ...:
        adapter_config = read_adapter_config(name_or_path)
    found, description = found_kind(name_or_path, adapter_config=adapter_config, trust_remote_code=trust_remote_code)
    if found == kind or (found == "seq_cls_adapter" and kind in ("classifier", "reward")):
        return
    wanted, writer = MODEL_KINDS[kind]
    if found in MODEL_KINDS and task is not None:
        fits = {"causal_lm": "--task pretrain or sft", "classifier": "--task classifier", "reward": "--task reward"}
        advice = f"evaluate it with {fits[found]}, or pass {'the output of ' if kind != 'causal_lm' else ''}{writer}"
    else:
        advice = f"pass {'the output of ' if kind != 'causal_lm' else ''}{writer}"
    if found == "causal_lm" and kind != "causal_lm":
        advice = f"its scores would come from a randomly initialised head; {advice}"
    prefix = f"--task {task}: " if task is not None else ""
    raise UsageError(f"{prefix}{flag} {name_or_path} is {description}, not {wanted}; {advice}.")
