"""Model loading that fails in one line: every entry point's `from_pretrained` of a user-given model goes through here.

`from_pretrained` reports a user's mistake in many shapes: a missing local directory reads `Repo id must be in the
form ...`, a truncated `model.safetensors` raises a `SafetensorError` that names no file, a config that does not fit
its weights prints a 20-line load report before a `RuntimeError`, and a directory holding only `pytorch_model.bin`
loads a pickle. [`check_model_source`] checks a local directory before anything is loaded, [`from_pretrained`] loads
(safetensors only) and turns what is left into `OSError`/`ValueError` messages that name the path, the flag and the
fix, which `hf_llm.errors.exit_on_user_error` prints as one line.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from transformers import PreTrainedModel
from transformers import __version__ as transformers_version
from transformers.utils import logging

from hf_llm.errors import UsageError

logger = logging.get_logger(__name__)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")

# A Hub repo id: `name` or `namespace/name` (huggingface_hub's own rule, simplified).
_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


RESAVE_ADVICE = (
    'Re-save it to ship the current code (python -c "import hf_llm, transformers; '
    "transformers.AutoModelForCausalLM.from_pretrained('{path}').save_pretrained('{path}-resaved')\"), "
    "or pin transformers<5.24 where it must run without hf_llm."
)


def shipped_code_predates_cache_rename(path: str) -> bool:
    """
    Whether the `modeling_gpt.py` saved next to a checkpoint's weights (its remote code) still takes the KV cache as
    `past_key_values`, the name transformers' `generate()` stopped passing in 5.24 (it passes `cache=`). Such code
    builds a fresh cache at every decoding step: single prompts silently lose their context and left-padded
    batches fail with a mask-shape error.

    Args:
        path (`str`): A local `save_pretrained` directory.
    """
    modeling_file = os.path.join(path, "modeling_gpt.py")
    if not os.path.isfile(modeling_file):
        return False
    with open(modeling_file, encoding="utf-8") as file:
        source = file.read()
    return "past_key_values: Cache" in source and "cache: Cache" not in source


def check_attn_implementation(attn_implementation: str | None, flag: str = "--attn_implementation") -> None:
    """
    Refuse an attention kernel this machine cannot run, before any data is loaded (transformers only finds out when
    the model is built, after the dataset and tokenizer).

    Args:
        attn_implementation (`str`, *optional*): `"flash_attention_2"`, `"flash_attention_3"`, `"sdpa"`, ...
        flag (`str`, defaults to `"--attn_implementation"`): The flag to name in the error.

    Raises:
        `UsageError`: If the kernel's package (or a CUDA GPU) is missing.
    """
    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available, is_torch_flex_attn_available

    available = {
        "flash_attention_2": (
            is_flash_attn_2_available,
            "the flash-attn package and a CUDA GPU (pip install flash-attn)",
        ),
        "flash_attention_3": (is_flash_attn_3_available, "the flash-attn 3 package and a Hopper GPU"),
        "flex_attention": (is_torch_flex_attn_available, "torch >= 2.5 with flex attention"),
    }
    if attn_implementation not in available:
        return
    is_available, needs = available[attn_implementation]
    if not is_available():
        raise UsageError(
            f"{flag} {attn_implementation} needs {needs}, which this machine lacks; pass {flag} sdpa (the default) "
            "or eager."
        )


def _looks_local(name_or_path: str) -> bool:
    return (
        os.path.isabs(name_or_path)
        or name_or_path.startswith((".", "~"))
        or _REPO_ID.match(name_or_path) is None
        or (os.sep != "/" and os.sep in name_or_path)
    )


def local_path_exists(name_or_path: str, flag: str) -> bool:
    """
    Whether `name_or_path` is an existing local path (`False`: a Hub repo id).

    Raises:
        `FileNotFoundError`: If it can only be a local path (absolute, `./`, `~`, more than one `/`) and is missing.
    """
    if os.path.exists(os.path.expanduser(name_or_path)):
        return True
    if _looks_local(name_or_path):
        raise FileNotFoundError(
            f"{flag} {name_or_path}: no such directory. Pass a directory written by save_pretrained (a training "
            "run's --output_dir) or a Hub repo id (namespace/name)."
        )
    return False


def check_model_source(name_or_path: str, flag: str = "--model_name_or_path") -> None:
    """
    Check a model given by the user before anything is loaded: a local `save_pretrained` directory must exist, hold a
    `config.json` (or `adapter_config.json`) and complete safetensors weights. A Hub repo id is left to
    [`from_pretrained`].

    Args:
        name_or_path (`str`): A local directory or a Hub repo id.
        flag (`str`, defaults to `"--model_name_or_path"`): The flag to name in errors.

    Raises:
        `FileNotFoundError`: If a path does not exist, or is not a model directory.
        `OSError`: If the directory holds only pickle weights (`pytorch_model.bin`) or a truncated safetensors file.
    """
    if not local_path_exists(name_or_path, flag):
        return  # a Hub repo id
    path = os.path.expanduser(name_or_path)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{flag} {name_or_path} is a file; pass the directory that save_pretrained wrote (holding config.json and "
            f"{SAFE_WEIGHTS_NAME})."
        )
    names = set(os.listdir(path))
    adapter = "adapter_config.json" in names
    if not adapter and "config.json" not in names:
        raise FileNotFoundError(
            f"{flag} {name_or_path} holds no config.json (nor adapter_config.json), so it is not a model directory; "
            "pass the directory that save_pretrained wrote (a training run's --output_dir, or one of its "
            "checkpoint-N directories)."
        )
    safetensors = sorted(name for name in names if name.endswith(".safetensors"))
    pickles = sorted(names & set(PICKLE_WEIGHTS_NAMES))
    if not safetensors and pickles:
        raise OSError(
            f"{flag} {name_or_path} holds only {', '.join(pickles)}: hf_llm loads safetensors weights only (a pickle "
            'file can run code when loaded). Convert it where you trust the file: python -c "from transformers import '
            f"AutoModel; AutoModel.from_pretrained('{name_or_path}', use_safetensors=False).save_pretrained("
            f"'{name_or_path}')\" (writes {SAFE_WEIGHTS_NAME})."
        )
    for name in safetensors:
        _check_safetensors_file(os.path.join(path, name), flag)


def _check_safetensors_file(file: str, flag: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt"):
            pass
    except Exception as err:  # SafetensorError is no OSError; a truncated file fails here on its header check
        raise OSError(
            f"{flag}: {file} is truncated or corrupt ({err}); it was probably cut off while being written or "
            "copied. Copy or download it again, or use another checkpoint."
        ) from None


def _check_weights_fit_config(auto_class: Any, path: str, flag: str, **config_kwargs: Any) -> None:
    # transformers reinitialises mismatched tensors or prints a 20-line report before raising; name the first
    # mismatch in one line instead. Built on the meta device: no memory, no time.
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig

    index = os.path.join(path, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            files = sorted(set(json.load(f).get("weight_map", {}).values()))
    elif os.path.isfile(os.path.join(path, SAFE_WEIGHTS_NAME)):
        files = [SAFE_WEIGHTS_NAME]
    else:
        return
    saved: dict[str, list[int]] = {}
    for name in files:
        with safe_open(os.path.join(path, name), framework="pt") as f:
            saved.update({key: list(f.get_slice(key).get_shape()) for key in f.keys()})
    config = AutoConfig.from_pretrained(path, **config_kwargs)
    with torch.device("meta"):
        model = auto_class.from_config(config)
    # Under DeepSpeed ZeRO-3, from_config builds inside deepspeed.zero.Init: parameters are partitioned to shape [0]
    # and keep their real shape as `ds_shape`.
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    expected = {key: list(getattr(tensor, "ds_shape", tensor.shape)) for key, tensor in tensors}
    mismatched = [key for key in saved if key in expected and saved[key] != expected[key]]
    if mismatched:
        key = mismatched[0]
        raise ValueError(
            f"{flag} {path}: the weights do not fit its config.json ({len(mismatched)} tensors differ, e.g. {key} "
            f"is {saved[key]} in the weights but {expected[key]} by the config); config.json was edited or comes from "
            "another checkpoint. Restore the config.json saved with these weights."
        )


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
        raise OSError(explain_load_error(name_or_path, flag, err)) from err


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
        raise OSError(explain_load_error(name_or_path, flag, err)) from err


def explain_load_error(name_or_path: str, flag: str, err: OSError) -> str:
    """The message of a failed `from_pretrained` of `name_or_path`, naming `flag` and the fix (offline, no repo)."""
    message = str(err)
    if message.startswith(f"{flag} "):
        return message  # already explained
    if os.path.isdir(os.path.expanduser(name_or_path)):
        return f"{flag} {name_or_path}: {message}"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or "couldn't connect" in message or "offline" in message.lower():
        return (
            f"{flag} {name_or_path}: no such local directory, and it is not in the Hugging Face cache"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ' (the Hub cannot be reached)'}. Pass a directory written "
            "by save_pretrained, or download the repo where there is network (hf download "
            f"{name_or_path}) so it is cached."
        )
    if "not a valid model identifier" in message or "RepositoryNotFound" in type(err.__cause__).__name__:
        return (
            f"{flag} {name_or_path}: no such local directory and no such Hub repo (a private or gated repo needs "
            "--hub_token or `hf auth login`)."
        )
    return f"{flag} {name_or_path}: {message}"


def check_classification_head(
    name_or_path: str, task: str, *, adapter_config: dict | None = None, trust_remote_code: bool = False
) -> None:
    """
    Refuse to evaluate a checkpoint whose sequence-classification head was never trained: loading a causal LM (or an
    SFT adapter) with `AutoModelForSequenceClassification` silently builds a random `score` head, whose accuracy is
    noise that looks like a result.

    Args:
        name_or_path (`str`): The checkpoint (a local directory or Hub repo id).
        task (`str`): `"classifier"` (a head of 2 or more labels) or `"reward"` (one score).
        adapter_config (`dict`, *optional*): The checkpoint's `adapter_config.json` when it is a PEFT adapter.
        trust_remote_code (`bool`, defaults to `False`): Passed to `AutoConfig` for a full model.

    Raises:
        `UsageError`: Naming the checkpoint, what it is, and which stage writes the model the task needs.
    """
    from transformers import AutoConfig

    writer = "train_scripts/reward.py" if task == "reward" else "train_scripts/classifier.py"
    if adapter_config is not None:
        saved = set(adapter_config.get("modules_to_save") or [])
        if adapter_config.get("task_type") != "SEQ_CLS" and not saved & {"score", "classifier"}:
            raise UsageError(
                f"--task {task}: {name_or_path} is a {adapter_config.get('task_type') or 'PEFT'} adapter without a "
                f"trained classification head (no `score` in modules_to_save), so its scores would come from a random "
                f"head. Evaluate an adapter or model written by {writer}, or use --task pretrain/sft for a causal LM."
            )
        return
    config = AutoConfig.from_pretrained(os.path.expanduser(name_or_path), trust_remote_code=trust_remote_code)
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise UsageError(
            f"--task {task}: {name_or_path} is a {', '.join(architectures) or config.model_type} with no trained "
            f"classification head, so its scores would come from a randomly initialised one. Evaluate a model "
            f"written by {writer}, or use --task pretrain/sft for a causal LM."
        )
    if task == "reward" and config.num_labels != 1:
        raise UsageError(
            f"--task reward: {name_or_path} is a classifier with {config.num_labels} labels, not a reward model (one "
            "score per text, num_labels=1); evaluate it with --task classifier, or a model written by "
            "train_scripts/reward.py."
        )
    if task == "classifier" and config.num_labels == 1:
        raise UsageError(
            f"--task classifier: {name_or_path} is a reward model (one score, num_labels=1); evaluate it with --task "
            "reward."
        )


def check_causal_lm(
    name_or_path: str, task: str, *, adapter_config: dict | None = None, trust_remote_code: bool = False
) -> None:
    """
    Refuse to generate from or score text with a checkpoint that is not a language model: a classifier or reward
    model loaded with `AutoModelForCausalLM` gets a language-model head that is tied to its embeddings (or random), so
    its perplexity or answers would be numbers that look like a result.

    Args:
        name_or_path (`str`): The checkpoint (a local directory or Hub repo id).
        task (`str`): The evaluation (`"pretrain"`, `"sft"`, `"win_rate"`), named in the error.
        adapter_config (`dict`, *optional*): The checkpoint's `adapter_config.json` when it is a PEFT adapter.
        trust_remote_code (`bool`, defaults to `False`): Passed to `AutoConfig` for a full model.

    Raises:
        `UsageError`: Naming the checkpoint, the kind found and the task that fits it.
    """
    from transformers import AutoConfig

    if adapter_config is not None:
        if adapter_config.get("task_type") == "SEQ_CLS":
            raise UsageError(
                f"--task {task}: {name_or_path} is a sequence-classification (SEQ_CLS) adapter, not a language model; "
                "evaluate it with --task classifier (or --task reward for a one-score head)."
            )
        return
    config = AutoConfig.from_pretrained(os.path.expanduser(name_or_path), trust_remote_code=trust_remote_code)
    architectures = config.architectures or []
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        kind, fits = (
            ("a reward model (one score)", "reward") if config.num_labels == 1 else ("a classifier", "classifier")
        )
        raise UsageError(
            f"--task {task}: {name_or_path} is {kind} ({', '.join(architectures)}), not a language model, so it "
            f"cannot generate or be scored on text; evaluate it with --task {fits}, or pass a causal LM "
            "(a pretrain, sft, ppo or dpo output)."
        )
