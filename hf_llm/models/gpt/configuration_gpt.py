"""Configuration of the hf_llm GPT family."""

from transformers import PreTrainedConfig

POSITION_EMBEDDING_TYPES = ("learned", "rope")


class GPTConfig(PreTrainedConfig):
    r"""
    Configuration of a GPT decoder ([`GPTModel`], [`GPTForCausalLM`], [`GPTForSequenceClassification`]).

    The defaults give the shape of GPT-2 small (124M parameters). GPT-2's own argument names (`n_embd`, `n_layer`,
    `n_head`, `n_positions`, `n_inner`) are accepted as aliases of the standard transformers names.

    Args:
        vocab_size (`int`, *optional*, defaults to 50257):
            Number of tokens the embedding table holds. Must be at least `len(tokenizer)`.
        hidden_size (`int`, *optional*, defaults to 768):
            Width of the residual stream (GPT-2: `n_embd`).
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of transformer blocks (GPT-2: `n_layer`).
        num_attention_heads (`int`, *optional*, defaults to 12):
            Number of attention heads; must divide `hidden_size` (GPT-2: `n_head`).
        intermediate_size (`int`, *optional*):
            Width of the MLP. Defaults to `4 * hidden_size` (GPT-2: `n_inner`).
        max_position_embeddings (`int`, *optional*, defaults to 1024):
            Longest sequence the model accepts; the size of the learned position table (GPT-2: `n_positions`).
        hidden_act (`str`, *optional*, defaults to `"gelu_pytorch_tanh"`):
            MLP activation, any key of `transformers.activations.ACT2FN`. The default is GPT-2's tanh GELU
            (`"gelu_new"`) computed by PyTorch's fused kernel.
        embedding_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the summed token and position embeddings (GPT-2: `embd_pdrop`).
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities (GPT-2: `attn_pdrop`).
        residual_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention and MLP outputs before they join the residual stream (GPT-2: `resid_pdrop`).
        bias (`bool`, *optional*, defaults to `True`):
            Whether linear layers and layer norms carry a bias, as in GPT-2.
        layer_norm_epsilon (`float`, *optional*, defaults to 1e-5):
            Epsilon of the layer norms.
        position_embedding_type (`str`, *optional*, defaults to `"learned"`):
            `"learned"` for GPT-2's absolute position table, `"rope"` for rotary embeddings.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the rotary frequencies; used only with `position_embedding_type="rope"`.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation. Residual output projections are further scaled by
            `1 / sqrt(2 * num_hidden_layers)`, as in GPT-2.
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Whether the language-model head shares its weight with the token embedding.
        use_cache (`bool`, *optional*, defaults to `True`):
            Whether inference returns the key/value cache.
        bos_token_id (`int`, *optional*), eos_token_id (`int`, *optional*), pad_token_id (`int`, *optional*):
            Special token ids. Sequence classification needs `pad_token_id` (distinct from `eos_token_id`) to find
            the last real token of each row.

    Example:

    ```python
    >>> from hf_llm import GPTConfig, GPTForCausalLM

    >>> config = GPTConfig(vocab_size=4096, hidden_size=128, num_hidden_layers=4, num_attention_heads=4)
    >>> model = GPTForCausalLM(config)
    ```"""

    model_type = "hf_llm_gpt"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {
        "n_embd": "hidden_size",
        "n_layer": "num_hidden_layers",
        "n_head": "num_attention_heads",
        "n_positions": "max_position_embeddings",
        "n_inner": "intermediate_size",
    }

    def __init__(
        self,
        vocab_size: int = 50257,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 1024,
        hidden_act: str = "gelu_pytorch_tanh",
        embedding_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        bias: bool = True,
        layer_norm_epsilon: float = 1e-5,
        position_embedding_type: str = "learned",
        rope_theta: float = 10000.0,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        use_cache: bool = True,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_act = hidden_act
        self.embedding_dropout = embedding_dropout
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.bias = bias
        self.layer_norm_epsilon = layer_norm_epsilon
        self.position_embedding_type = position_embedding_type
        self.rope_theta = rope_theta
        self.initializer_range = initializer_range
        self.tie_word_embeddings = tie_word_embeddings
        self.use_cache = use_cache
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        # GPT-2 spellings (n_embd, n_layer, ...) arrive in **kwargs; attribute_map routes them to the standard names.
        for alias in self.attribute_map:
            if alias in kwargs:
                setattr(self, alias, kwargs.pop(alias))
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        self._validate_gpt_fields()
        super().__init__(**kwargs)

    def _validate_gpt_fields(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"GPTConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); choose e.g. num_attention_heads="
                f"{max(h for h in range(1, self.num_attention_heads + 1) if self.hidden_size % h == 0)}."
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"GPTConfig.position_embedding_type must be one of {POSITION_EMBEDDING_TYPES}, "
                f"got {self.position_embedding_type!r}."
            )
        if self.position_embedding_type == "rope" and self.head_dim % 2 != 0:
            raise ValueError(
                f"GPTConfig: rotary embeddings need an even head size, got hidden_size / num_attention_heads = "
                f"{self.head_dim}; change hidden_size or num_attention_heads."
            )
        for name in ("embedding_dropout", "attention_dropout", "residual_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"GPTConfig.{name} must be in [0, 1), got {value!r}.")
        if self.layer_norm_epsilon <= 0:
            raise ValueError(f"GPTConfig.layer_norm_epsilon must be positive, got {self.layer_norm_epsilon!r}.")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


__all__ = ["GPTConfig"]
