from .configuration_gpt import GPTConfig
from .modeling_gpt import GPTForCausalLM, GPTForSequenceClassification, GPTModel, GPTPreTrainedModel

__all__ = ["GPTConfig", "GPTForCausalLM", "GPTForSequenceClassification", "GPTModel", "GPTPreTrainedModel"]
