"""LoRA adapters: load one on its base, merge it into a standalone model, and the merged SFT checkpoint the alignment
stages start from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import TYPE_CHECKING, Any

from transformers import AutoTokenizer
from transformers.utils import logging

from hf_llm.data import hf_llm_cache_dir
from hf_llm.errors import UsageError

from .base import load_model_for_stage, load_tokenizer_for_stage
from .sources import is_adapter, load_errors, read_adapter_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import ModelConfig

logger = logging.get_logger(__name__)

#: Name of the sub-directory `--merge_adapter` writes the standalone merged model to.
MERGED_DIR_NAME = "merged"


def _adapter_config(adapter_dir: str, revision: str | None = None, token: str | None = None) -> dict:
    adapter_config = read_adapter_config(adapter_dir, revision=revision, token=token)
    if adapter_config is None:
        raise UsageError(
            f"{adapter_dir} holds no adapter_config.json: merge takes a LoRA adapter directory or Hub repo written by "
            "classifier.py / sft.py with --use_peft true (a full fine-tuning output is already standalone)."
        )
    return adapter_config


def load_adapter_model(
    adapter_dir: str,
    *,
    num_labels: int | None = None,
    revision: str | None = None,
    token: str | None = None,
    trust_remote_code: bool = False,
):
    """
    Load a LoRA adapter on its base with `AutoPeftModelFor*` (the class follows the adapter's `task_type`).

    A classifier adapter stores only the trained `score` weights, so the base must be built with the right head size:
    `num_labels` defaults to the classes `classifier.py` writes next to the adapter (`labels.json`).

    Args:
        adapter_dir (`str`): An adapter directory or Hub repo id.
        num_labels (`int`, *optional*): The classifier's number of labels.
        revision (`str`, *optional*): Hub revision of the adapter.
        token (`str`, *optional*): Hub token.
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.

    Returns:
        `peft.PeftModel`: The base model with the adapter, in eval mode.
    """
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

    import hf_llm  # noqa: F401  (AutoPeftModel* load the base through the Auto classes)

    adapter_config = _adapter_config(adapter_dir, revision, token)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "token": token}
    if revision is not None:
        kwargs["revision"] = revision
    if adapter_config.get("task_type") == "SEQ_CLS":
        labels = _saved_labels(adapter_dir, revision, token)
        if num_labels is None and labels is not None:
            num_labels = len(labels)
        if num_labels is None:
            raise UsageError(
                f"{adapter_dir} is a classifier adapter with no labels.json to read its classes from: pass "
                "--num_labels (the number of classes it was trained on)."
            )
        kwargs["num_labels"] = num_labels
        if labels is not None:
            kwargs["id2label"] = dict(enumerate(labels))
            kwargs["label2id"] = {label: i for i, label in enumerate(labels)}
        peft_class = AutoPeftModelForSequenceClassification
    else:
        peft_class = AutoPeftModelForCausalLM
    with load_errors(adapter_dir, "ADAPTER_DIR"):
        model = peft_class.from_pretrained(adapter_dir, is_trainable=False, **kwargs)
    model.eval()
    return model


def _saved_labels(adapter_dir: str, revision: str | None, token: str | None) -> list[str] | None:
    """The classes `classifier.py` recorded next to its adapter (`labels.json`), or `None`."""
    from transformers.utils import cached_file

    path = cached_file(
        adapter_dir, "labels.json", revision=revision, token=token, _raise_exceptions_for_missing_entries=False
    )
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        id2label = json.load(f).get("id2label") or {}
    return [id2label[str(i)] for i in range(len(id2label))] or None


def merge_adapter(
    adapter_dir: str,
    output_dir: str,
    *,
    num_labels: int | None = None,
    revision: str | None = None,
    token: str | None = None,
    trust_remote_code: bool = False,
) -> str:
    """
    Merge a LoRA adapter into its base and save a standalone checkpoint that `AutoModelForCausalLM` /
    `AutoModelForSequenceClassification` and `pipeline()` load with no PEFT, `id2label` kept. The base is loaded in
    full precision (even after QLoRA: the adapter is merged into the original weights, not the 4-bit copy).

    Copies the adapter's tokenizer (or the base's), `recipe.yaml` and `data_fingerprint.json` when present.

    Args:
        adapter_dir (`str`): An adapter directory or Hub repo id (`hf-llm merge ADAPTER_DIR`).
        output_dir (`str`): Where to write the merged model.
        num_labels (`int`, *optional*): For a classifier adapter without its `labels.json` (see
            [`load_adapter_model`]).
        revision (`str`, *optional*): Hub revision of the adapter.
        token (`str`, *optional*): Hub token.
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.

    Returns:
        `str`: `output_dir`.
    """
    model = load_adapter_model(
        adapter_dir, num_labels=num_labels, revision=revision, token=token, trust_remote_code=trust_remote_code
    )
    base_model = model.peft_config[model.active_adapter].base_model_name_or_path
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    os.makedirs(output_dir, exist_ok=True)
    merged.save_pretrained(output_dir)
    tokenizer = None
    for source in (adapter_dir, base_model):
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                source, trust_remote_code=trust_remote_code, token=token, revision=revision
            )
            break
        except (OSError, ValueError):
            continue
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    if os.path.isdir(adapter_dir):
        for name in ("recipe.yaml", "data_fingerprint.json", "labels.json"):
            if os.path.isfile(os.path.join(adapter_dir, name)):
                shutil.copy2(os.path.join(adapter_dir, name), os.path.join(output_dir, name))
    logger.info(f"Merged adapter {adapter_dir} into {base_model}: saved to {os.path.abspath(output_dir)}")
    return output_dir


def merge_trained_adapter(
    output_dir: str,
    stage: str,
    *,
    trained_with_peft: bool,
    num_labels: int | None = None,
    trust_remote_code: bool = False,
) -> str | None:
    """
    `--merge_adapter` at the end of a stage: merge the adapter the run saved in `output_dir` into
    `OUTPUT_DIR/merged` (see [`merge_adapter`]). Call it on the main process only. A run trained in full has nothing
    to merge: it warns and returns `None`.

    Args:
        output_dir (`str`): The run's output directory, holding the saved adapter.
        stage (`str`): The stage name, for the log line.
        trained_with_peft (`bool`): Whether the run trained a LoRA adapter (`--use_peft true`).
        num_labels (`int`, *optional*): Classes of a classifier or reward adapter (see [`merge_adapter`]).
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.

    Returns:
        `str` or `None`: The merged model's directory, or `None` when there was nothing to merge.
    """
    if not trained_with_peft:
        logger.warning("--merge_adapter: nothing to merge, the model was fine-tuned in full (--use_peft false)")
        return None
    merged_dir = merge_adapter(
        output_dir,
        os.path.join(output_dir, MERGED_DIR_NAME),
        num_labels=num_labels,
        trust_remote_code=trust_remote_code,
    )
    logger.info(f"Merged {stage} model (no PEFT needed to load it): {merged_dir}")
    return merged_dir


def resolve_sft_checkpoint(model_name_or_path: str, *, trust_remote_code: bool = False) -> str:
    """
    The standalone checkpoint an alignment stage loads: `model_name_or_path` itself, or, for a LoRA adapter (an SFT
    run with `--use_peft true`), the adapter merged into its base once and cached under `$HF_LLM_CACHE/merged/`
    (keyed by the adapter's path and weights), so the reward model, the PPO/DPO policy and their reference all start
    from the same weights.

    Call it on the main process first (`training_args.main_process_first()`): the others then find the merged copy.

    Args:
        model_name_or_path (`str`): An SFT output directory (merged model or adapter) or Hub repo id.
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.

    Returns:
        `str`: The path or repo id to load with `AutoModelFor*`.
    """
    if not is_adapter(model_name_or_path):
        return model_name_or_path
    weights = os.path.join(model_name_or_path, "adapter_model.safetensors")
    stamp = os.stat(weights).st_mtime_ns if os.path.isfile(weights) else 0
    key = hashlib.sha256(f"{os.path.abspath(model_name_or_path)}@{stamp}".encode()).hexdigest()[:16]
    target = hf_llm_cache_dir() / "merged" / f"{os.path.basename(os.path.normpath(model_name_or_path))}-{key}"
    if not (target / "config.json").is_file():
        logger.info(f"{model_name_or_path} is a LoRA adapter: merging it into its base once, in {target}")
        staging = f"{target}.tmp-{os.getpid()}"
        merge_adapter(model_name_or_path, staging, trust_remote_code=trust_remote_code)
        os.replace(staging, target)  # atomic: a concurrent or killed run never sees half a checkpoint
    return str(target)


def load_sft_model_for_stage(
    model_args: ModelConfig,
    stage: str,
    *,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
    **config_kwargs,
) -> tuple[str | None, PreTrainedTokenizerBase, PreTrainedModel]:
    """
    The SFT model an alignment stage (reward, ppo, dpo) starts from: `--model_name_or_path` resolved to one
    standalone checkpoint ([`resolve_sft_checkpoint`]: an adapter is merged once, into a cache), then the stage's
    tokenizer and model loaded from it ([`~hf_llm.loading.load_tokenizer_for_stage`],
    [`~hf_llm.loading.load_model_for_stage`]). The parsed `model_args` are left as the user gave them; the resolved
    path is returned under its own name. Call it on the main process first.

    Args:
        model_args (`trl.ModelConfig`): `--model_name_or_path` (the SFT output) and the loading flags.
        stage (`str`): `"reward"`, `"ppo"` or `"dpo"`.
        trust_remote_code (`bool`, defaults to `False`): Passed to `from_pretrained`.
        gradient_checkpointing (`bool`, defaults to `False`): For a quantized model (see `load_model_for_stage`).
        config_kwargs: Config overrides, e.g. `num_labels=1` for a reward model.

    Returns:
        `tuple`: `(sft_path, tokenizer, model)`: the checkpoint loaded (`None` without `--model_name_or_path`, which
        the tokenizer then refuses), its tokenizer, and the stage's model, not yet wrapped with PEFT.
    """
    sft_model = model_args.model_name_or_path
    sft_path = resolve_sft_checkpoint(sft_model) if sft_model is not None else None
    tokenizer = load_tokenizer_for_stage(
        model_args, stage, model_name_or_path=sft_path, trust_remote_code=trust_remote_code
    )
    model = load_model_for_stage(
        model_args,
        stage,
        tokenizer,
        model_name_or_path=sft_path,
        trust_remote_code=trust_remote_code,
        gradient_checkpointing=gradient_checkpointing,
        **config_kwargs,
    )
    return sft_path, tokenizer, model


def load_reference_model(
    model_args: ModelConfig, stage: str, tokenizer: PreTrainedTokenizerBase, sft_path: str, *, uses_peft: bool
) -> PreTrainedModel | None:
    """
    The reference policy PPO and DPO measure their KL penalty against. With LoRA there is none to load: TRL uses the
    policy with its adapter disabled. Full fine-tuning gets a frozen copy of the SFT model, in eval mode.

    Args:
        model_args (`trl.ModelConfig`): The loading flags (dtype, attention kernel, quantization).
        stage (`str`): `"ppo"` or `"dpo"`.
        tokenizer (`PreTrainedTokenizerBase`): The policy's tokenizer.
        sft_path (`str`): The checkpoint [`load_sft_model_for_stage`] loaded the policy from.
        uses_peft (`bool`): Whether the policy trains a LoRA adapter.

    Returns:
        `PreTrainedModel` or `None`: The reference, or `None` with LoRA.
    """
    if uses_peft:
        return None
    return load_model_for_stage(model_args, stage, tokenizer, model_name_or_path=sft_path).eval()
