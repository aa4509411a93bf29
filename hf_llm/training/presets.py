"""Named GPT shapes (`--model_preset`): data only. `hf_llm.training.build_gpt_config` turns one into a `GPTConfig`."""

from typing import Any

# Shapes only: the vocabulary comes from the tokenizer, everything else from GPTConfig's defaults.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # 0.75M parameters (0.34M without embeddings) with a 4k vocabulary: minutes on 2 CPU cores (`tiny` recipe).
    # Head sizes are multiples of 32, which common attention kernels (vLLM's CPU attention among them) require.
    "tiny": {
        "hidden_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 3,
        "intermediate_size": 384,
        "max_position_embeddings": 256,
    },
    # 10.6M parameters without embeddings: minutes on a GPU, an hour or so on a laptop CPU.
    "small": {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
        "max_position_embeddings": 512,
    },
    # GPT-2 small: 124M parameters with GPT-2's 50257-token vocabulary.
    "gpt2-124m": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 1024,
    },
}
