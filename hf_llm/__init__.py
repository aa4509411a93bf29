"""hf_llm: build, pretrain, fine-tune and align a GPT on the Hugging Face stack.

Importing the package registers the GPT family with the transformers Auto classes, so
``AutoModelForCausalLM.from_pretrained(path)`` works on any checkpoint hf_llm writes.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)

from .models.gpt import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel, GPTPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register(GPTConfig.model_type, GPTConfig, exist_ok=True)
AutoModel.register(GPTConfig, GPTModel, exist_ok=True)
AutoModelForCausalLM.register(GPTConfig, GPTForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(GPTConfig, GPTForSequenceClassification, exist_ok=True)

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
]
