"""hf_llm: build, pretrain, fine-tune and align a GPT on the Hugging Face stack.

Importing the package registers the GPT family with the transformers Auto classes, so
``AutoModelForCausalLM.from_pretrained(path)`` works on any checkpoint hf_llm writes.
"""

import logging as _logging
import os as _os

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as _MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
)

from .models.gpt import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel, GPTPreTrainedModel
from .tokenizer import train_tokenizer

__version__ = "0.1.0"

AutoConfig.register(GPTConfig.model_type, GPTConfig, exist_ok=True)
AutoModel.register(GPTConfig, GPTModel, exist_ok=True)
AutoModelForCausalLM.register(GPTConfig, GPTForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(GPTConfig, GPTForSequenceClassification, exist_ok=True)
# Tools that ask "is this a causal LM?" by model type rather than through the Auto classes read this name table:
# lm-evaluation-harness's HF backend otherwise warns that our model is "neither CausalLM nor Seq2SeqLM".
_MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault(GPTConfig.model_type, GPTForCausalLM.__name__)

# save_pretrained then also writes configuration_gpt.py and modeling_gpt.py with an `auto_map`, so checkpoints load
# with trust_remote_code=True where hf_llm is not installed (e.g. straight from the Hub).
GPTConfig.register_for_auto_class()
GPTModel.register_for_auto_class("AutoModel")
GPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")
GPTForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "GPTConfig",
    "GPTForCausalLM",
    "GPTForSequenceClassification",
    "GPTModel",
    "GPTPreTrainedModel",
    "train_tokenizer",
]


def _configure_logging() -> None:
    """Give the `hf_llm` loggers a handler: they sit outside transformers' logger tree, so without one their
    info messages (examples truncated or dropped, tokens/s) would vanish. `HF_LLM_VERBOSITY` sets the level."""
    logger = _logging.getLogger("hf_llm")
    if logger.handlers:
        return
    handler = _logging.StreamHandler()
    handler.setFormatter(_logging.Formatter("[hf_llm] %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    level = _os.environ.get("HF_LLM_VERBOSITY", "INFO").upper()
    logger.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO")
    logger.propagate = False


def _hide_bitsandbytes_kernels_warning() -> None:
    """On CPUs with AVX512-BF16, importing bitsandbytes (transformers' Trainer imports it through peft) warns that
    its optional 4-bit kernel could not be fetched from the Hub with the `kernels` package. It then uses its own
    CPU kernel and QLoRA works, so the warning is only noise at the top of every command; other bitsandbytes
    messages are kept. (Scripts that import transformers before hf_llm still print it once, into their log.)"""

    def keep(record: _logging.LogRecord) -> bool:
        return "from kernels-community" not in str(record.msg)

    _logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(keep)


_configure_logging()
_hide_bitsandbytes_kernels_warning()
