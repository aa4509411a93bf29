"""Where a model comes from: the one local-path rule, checks of a local checkpoint before it loads, and load errors in
one line.

`from_pretrained` reports a user's mistake in many shapes: a missing local directory reads `Repo id must be in the
form ...`, a truncated `model.safetensors` raises a `SafetensorError` that names no file, and a directory holding only
`pytorch_model.bin` loads a pickle. [`check_model_source`] checks a local directory before anything is loaded and
[`explain_load_error`] turns what is left into a message naming the path, the flag and the fix, which
`hf_llm.errors.exit_on_user_error` prints as one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from typing import Any

from transformers.utils import logging

from hf_llm.errors import LoadError, UsageError

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


def looks_local(name_or_path: str) -> bool:
    """Whether `name_or_path` can only be a filesystem path: absolute, `./` or `~`, or not of a Hub repo id's form
    (`name` or `namespace/name`). The one rule hf_llm uses to tell a path from a Hub id."""
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
    if looks_local(name_or_path):
        raise FileNotFoundError(
            f"{flag} {name_or_path}: no such directory. Pass a directory written by save_pretrained (a training "
            "run's --output_dir) or a Hub repo id (namespace/name)."
        )
    return False


def is_adapter(name_or_path: str) -> bool:
    """Whether `name_or_path` (a directory or Hub repo id) holds a PEFT adapter (`adapter_config.json`)."""
    return read_adapter_config(name_or_path) is not None


def read_adapter_config(
    name_or_path: str, *, revision: str | None = None, token: str | None = None
) -> dict[str, Any] | None:
    """The `adapter_config.json` of a directory or Hub repo id, or `None` when it holds no adapter (or cannot be
    reached)."""
    from transformers.utils.peft_utils import find_adapter_config_file

    try:
        path = find_adapter_config_file(os.path.expanduser(name_or_path), revision=revision, token=token)
    except (OSError, ValueError):
        return None
    if path is None:
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)


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
        raise LoadError(
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
        raise LoadError(
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
        raise UsageError(
            f"{flag} {path}: the weights do not fit its config.json ({len(mismatched)} tensors differ, e.g. {key} "
            f"is {saved[key]} in the weights but {expected[key]} by the config); config.json was edited or comes from "
            "another checkpoint. Restore the config.json saved with these weights."
        )


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


@contextlib.contextmanager
def load_errors(name_or_path: str, flag: str = "--model_name_or_path") -> Iterator[None]:
    """
    Turn the `OSError`s of a load from `name_or_path` (missing directory, offline Hub id, unknown repo) into one
    [`LoadError`] naming the flag, the path and the fix ([`explain_load_error`]); a `LoadError` passes unchanged.

    ```python
    with load_errors(model_args.model_name_or_path):
        config = AutoConfig.from_pretrained(model_args.model_name_or_path)
    ```
    """
    try:
        yield
    except LoadError:
        raise
    except OSError as err:
        raise LoadError(explain_load_error(name_or_path, flag, err)) from err
