"""Every way hf_llm turns a name into a model, tokenizer or adapter: one package, one local-path rule, one kind check.

- `sources.py`: the local-path rule (`looks_local`, `local_path_exists`), `check_model_source` (a local checkpoint
  is complete and safetensors), adapter detection, stale remote code, one-line load errors;
- `kinds.py`: `check_model_kind`, causal LM, classifier or reward model, checked from the config before loading;
- `models.py`: `from_pretrained` (the one every entry point uses), `tokenizer_from_pretrained`,
  `load_model_for_evaluation`, `load_reward_model`;
- `base.py`: the base of a training stage: `resolve_base_model` (GPT-2 conversion), `load_tokenizer_for_stage`,
  `load_model_for_stage` (QLoRA quantization), `check_pad_token`;
- `adapters.py`: `load_adapter_model`, `merge_adapter`, `merge_trained_adapter`, `resolve_sft_checkpoint` (the
  merged SFT cache), and what the alignment stages load from it: `load_sft_model_for_stage`, `load_reference_model`.

Imports point one way: `loading` uses `models`, `data` and `tokenizer`; `evaluation`, `training`, the scripts and the
CLI use `loading`.
"""

from .adapters import (
    MERGED_DIR_NAME,
    load_adapter_model,
    load_reference_model,
    load_sft_model_for_stage,
    merge_adapter,
    merge_trained_adapter,
    resolve_sft_checkpoint,
)
from .base import (
    accelerator_available,
    check_pad_token,
    get_stage_quantization_config,
    load_model_for_stage,
    load_tokenizer_for_stage,
    resolve_base_model,
)
from .kinds import MODEL_KINDS, check_model_kind
from .models import from_pretrained, load_model_for_evaluation, load_reward_model, tokenizer_from_pretrained
from .sources import (
    RESAVE_ADVICE,
    check_attn_implementation,
    check_model_source,
    explain_load_error,
    is_adapter,
    load_errors,
    local_path_exists,
    looks_local,
    read_adapter_config,
    shipped_code_predates_cache_rename,
)

__all__ = [
    "MERGED_DIR_NAME",
    "MODEL_KINDS",
    "RESAVE_ADVICE",
    "accelerator_available",
    "check_attn_implementation",
    "check_model_kind",
    "check_model_source",
    "check_pad_token",
    "explain_load_error",
    "from_pretrained",
    "get_stage_quantization_config",
    "is_adapter",
    "load_errors",
    "load_adapter_model",
    "load_reference_model",
    "load_sft_model_for_stage",
    "load_model_for_evaluation",
    "load_model_for_stage",
    "load_reward_model",
    "load_tokenizer_for_stage",
    "local_path_exists",
    "looks_local",
    "merge_adapter",
    "merge_trained_adapter",
    "read_adapter_config",
    "resolve_base_model",
    "resolve_sft_checkpoint",
    "shipped_code_predates_cache_rename",
    "tokenizer_from_pretrained",
]
