"""Named GPT shapes and the helper that turns model arguments plus a tokenizer into a `GPTConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:
    from hf_llm.models.gpt import GPTConfig

    from .arguments import ModelArguments

# Shapes only: the vocabulary comes from the tokenizer, everything else from GPTConfig's defaults.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # 0.75M parameters (0.34M without embeddings) with a 4k vocabulary: minutes on 2 CPU cores (`tiny` recipe).
    "tiny": {
        "hidden_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
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


def padded_vocab_size(num_tokens: int, multiple_of: int = 64) -> int:
    """
    Round a vocabulary size up to a multiple of `multiple_of` (tensor-core-friendly embedding and LM-head shapes).

    Args:
        num_tokens (`int`): `len(tokenizer)`.
        multiple_of (`int`, defaults to 64): Rounding multiple; 1 keeps `num_tokens`.

    Returns:
        `int`: The padded vocabulary size.
    """
    return -(-num_tokens // multiple_of) * multiple_of


def build_gpt_config(
    model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, vocab_multiple_of: int = 64
) -> GPTConfig:
    """
    A `GPTConfig` for a new model: the preset's shape, then the explicit size flags, then the tokenizer's vocabulary
    and special tokens.

    Args:
        model_args ([`ModelArguments`]): `model_preset` and the size overrides.
        tokenizer (`PreTrainedTokenizerBase`): Sets `vocab_size` (`len(tokenizer)` rounded up to
            `vocab_multiple_of`) and `bos/eos/pad_token_id`.
        vocab_multiple_of (`int`, defaults to 64): See [`padded_vocab_size`].

    Returns:
        `GPTConfig`: The configuration of the model to build.

    Raises:
        `ValueError`: If neither a preset nor the four core sizes are given, or the tokenizer lacks eos/pad tokens.
    """
    from hf_llm.models.gpt import GPTConfig

    kwargs: dict[str, Any] = dict(MODEL_PRESETS[model_args.model_preset]) if model_args.model_preset else {}
    kwargs.update(model_args.config_overrides())
    missing = [name for name in ("hidden_size", "num_hidden_layers", "num_attention_heads") if name not in kwargs]
    if missing:
        raise ValueError(
            f"a new model needs its shape: pass --model_preset (one of {sorted(MODEL_PRESETS)}) or "
            f"{', '.join('--' + name for name in missing)}; or pass --model_name_or_path to continue from a model."
        )
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} needs an eos and a pad token (eos={tokenizer.eos_token!r}, "
            f"pad={tokenizer.pad_token!r}); use hf_llm.tokenizer.train_tokenizer or add them with "
            "tokenizer.add_special_tokens."
        )
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} uses the same token for pad and eos ({tokenizer.eos_token!r}); "
            "sequence classification, reward models and PPO need them distinct: add a '<|pad|>' token."
        )
    kwargs["vocab_size"] = padded_vocab_size(len(tokenizer), vocab_multiple_of)
    kwargs["eos_token_id"] = tokenizer.eos_token_id
    kwargs["pad_token_id"] = tokenizer.pad_token_id
    kwargs["bos_token_id"] = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return GPTConfig(**kwargs)
