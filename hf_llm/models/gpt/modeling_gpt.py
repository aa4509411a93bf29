"""The hf_llm GPT: a GPT-2-style decoder written as a first-class transformers architecture.

Notable features:
- pre-LayerNorm blocks with learned absolute positions (GPT-2) or rotary embeddings (`position_embedding_type="rope"`);
- attention through transformers' attention interface: `eager`, `sdpa`, `flash_attention_2`, `flex_attention`,
  switchable at load (`attn_implementation=...`) and after (`model.set_attn_implementation(...)`);
- a `DynamicCache` KV cache for `generate()`, left-padded batches included, passed as `cache` (transformers' name
  since 5.24; the old `past_key_values` keyword is still accepted, with transformers' deprecation warning);
- padding-free packing: with no attention mask, restarting `position_ids` keep attention inside each document;
- every projection is an `nn.Linear` with the names PEFT users know (`q_proj`, `k_proj`, `v_proj`, `o_proj`,
  `up_proj`, `down_proj`), so LoRA and bitsandbytes 4/8-bit loading work unchanged;
- `GPTForCausalLM.from_gpt2(...)` imports OpenAI's GPT-2 weights from a transformers `GPT2LMHeadModel`, and
  `to_gpt2()` exports back to one (no remote code needed) with the same logits.

This file imports only torch, transformers and its own configuration, so `save_pretrained` can ship it to the Hub
and `from_pretrained(..., trust_remote_code=True)` works where hf_llm is not installed (transformers >= 5.24).
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, slice_logits_to_keep
from transformers.utils import can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_gpt import GPTConfig

logger = logging.get_logger(__name__)


class GPTRotaryEmbedding(nn.Module):
    """Rotary position embedding: turns `position_ids` into the cos/sin tables that rotate queries and keys."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.register_buffer("inv_freq", self.compute_inv_freq(config), persistent=False)

    @staticmethod
    def compute_inv_freq(config: GPTConfig) -> torch.Tensor:
        exponents = torch.arange(0, config.head_dim, 2, dtype=torch.float32) / config.head_dim
        return 1.0 / (config.rope_theta**exponents)

    @torch.no_grad()
    def forward(self, hidden_states: torch.Tensor, position_ids: torch.LongTensor) -> tuple[torch.Tensor, ...]:
        freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :].to(hidden_states.device)  # (B, T, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
        return angles.cos().to(hidden_states.dtype), angles.sin().to(hidden_states.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first_half, second_half = x.chunk(2, dim=-1)
    return torch.cat((-second_half, first_half), dim=-1)


def apply_rotary_pos_emb(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, D): broadcast over heads
    return query * cos + rotate_half(query) * sin, key * cos + rotate_half(key) * sin


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention; the reference the fused implementations are tested against."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, S)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value)  # (B, H, T, D)
    return attn_output.transpose(1, 2).contiguous(), attn_weights  # (B, T, H, D)


class GPTAttention(nn.Module):
    """Causal multi-head self-attention."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.num_key_value_groups = 1  # plain multi-head attention: one key/value head per query head
        self.attention_dropout = config.attention_dropout
        self.is_causal = True

        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.bias)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.bias)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.bias)
        self.o_proj.is_residual_projection = True  # read by GPTPreTrainedModel._init_weights
        self.residual_dropout = nn.Dropout(config.residual_dropout)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]  # (B, T)
        hidden_shape = (*input_shape, -1, self.head_dim)  # (B, T, H, D)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, T, D)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        if position_embeddings is not None:
            cos, sin = position_embeddings
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if cache is not None:
            # kwargs carry what a paged cache (continuous batching) needs to place the new keys.
            key_states, value_states = cache.update(
                key_states, value_states, self.layer_idx, kwargs=kwargs
            )  # (B, H, S, D)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()  # (B, T, C)
        return self.residual_dropout(self.o_proj(attn_output)), attn_weights


class GPTMLP(nn.Module):
    """Position-wise feed-forward network: up-projection, GELU, down-projection."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias)
        self.act_fn = ACT2FN[config.hidden_act]
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.bias)
        self.down_proj.is_residual_projection = True  # read by GPTPreTrainedModel._init_weights
        self.residual_dropout = nn.Dropout(config.residual_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.residual_dropout(self.down_proj(self.act_fn(self.up_proj(hidden_states))))


class GPTBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: `x + attn(ln(x))`, then `x + mlp(ln(x))`."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon, bias=config.bias)
        self.self_attn = GPTAttention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(
            config.hidden_size, eps=config.layer_norm_epsilon, bias=config.bias
        )
        self.mlp = GPTMLP(config)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.self_attn(
            self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + attn_output
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, attn_weights


class GPTPreTrainedModel(PreTrainedModel):
    config_class = GPTConfig
    config: GPTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPTBlock"]
    _skip_keys_device_placement = ["cache"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 initialisation: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 * layers)."""
        super()._init_weights(module)
        # The scaling is keyed on the Linear itself: transformers skips initialising parameter-free container modules
        # of models outside the library, so a rule on GPTAttention/GPTMLP would silently never run.
        if getattr(module, "is_residual_projection", False):
            std = self.config.initializer_range / (2 * self.config.num_hidden_layers) ** 0.5
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, GPTRotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq(self.config))

    def save_pretrained(self, save_directory, *args, **kwargs):
        # FSDP2 (`fully_shard`) swaps the model's class for a generated subclass, `FSDPGPTForCausalLM`, defined in a
        # torch module: saved as that class, `auto_map` would point at `_fsdp_init.FSDPGPTForCausalLM` and torch's
        # `_fsdp_*.py` files would be copied instead of this one. Save as the class the model was built as.
        own_class = next(cls for cls in type(self).__mro__ if not cls.__module__.startswith("torch."))
        if own_class is not type(self):
            wrapper_class, self.__class__ = type(self), own_class
            try:
                return self.save_pretrained(save_directory, *args, **kwargs)
            finally:
                self.__class__ = wrapper_class
        state_dict = kwargs.get("state_dict")
        tied = self._tied_weights_keys or {}
        if state_dict is not None and self.config.tie_word_embeddings:
            # A gathered state dict (FSDP full state dict, ZeRO-3 16-bit weights) holds tied weights as two copies,
            # which transformers drops only when they share memory: drop the alias as an unsharded save does.
            kwargs["state_dict"] = {
                name: tensor for name, tensor in state_dict.items() if tied.get(name) not in state_dict
            }
        # With the code files shipped (register_for_auto_class), map every Auto class, not only the saved one, so a
        # causal-LM checkpoint also loads as AutoModelForSequenceClassification (reward/value models) by remote code.
        if self._auto_class is not None:
            self.config.auto_map = {
                "AutoConfig": "configuration_gpt.GPTConfig",
                "AutoModel": "modeling_gpt.GPTModel",
                "AutoModelForCausalLM": "modeling_gpt.GPTForCausalLM",
                "AutoModelForSequenceClassification": "modeling_gpt.GPTForSequenceClassification",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)


class GPTModel(GPTPreTrainedModel):
    """The bare GPT decoder: embeddings, blocks and the final LayerNorm, returning hidden states."""

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_embedding_type == "learned":
            self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        else:
            self.rotary_emb = GPTRotaryEmbedding(config)
        self.dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList([GPTBlock(config, layer_idx) for layer_idx in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon, bias=config.bias)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def _check_inputs(
        self, input_ids: torch.LongTensor | None, position_ids: torch.LongTensor | None, positions_given: bool
    ) -> None:
        """Turn out-of-range ids into a clear error instead of an index error deep inside `nn.Embedding`.

        Skipped when compiling and when training on an accelerator, where each check would cost a device sync per
        step; training data is validated once, up front, by `hf_llm.data.check_token_ids`. Kept while decoding: on CPU
        it costs ~8 us, 1.4% of a decode step of the 0.75M-parameter `tiny` preset and under 0.2% from `small` up
        (`benchmarks/input_checks.py`), and it turns a generation past the position table into a clear error.
        """
        if torch.compiler.is_compiling() or (self.training and position_ids.device.type != "cpu"):
            return
        if input_ids is not None and input_ids.numel() > 0:
            smallest, largest = int(input_ids.min()), int(input_ids.max())
            if smallest < 0 or largest >= self.config.vocab_size:
                bad = largest if largest >= self.config.vocab_size else smallest
                raise ValueError(
                    f"input_ids contain token id {bad}, outside the embedding table of vocab_size="
                    f"{self.config.vocab_size}. The tokenizer and the model disagree: use the tokenizer the model was "
                    f"trained with, or resize with model.resize_token_embeddings(len(tokenizer))."
                )
        if self.config.position_embedding_type == "learned" and position_ids.numel() > 0:
            last_position = int(position_ids.max())
            if last_position >= self.config.max_position_embeddings:
                what = "position_ids reach" if positions_given else "the sequence (with any cached tokens) reaches"
                raise ValueError(
                    f"{what} position {last_position}, beyond the learned position table of "
                    f"max_position_embeddings={self.config.max_position_embeddings}. Truncate the input to "
                    f"{self.config.max_position_embeddings} tokens (e.g. tokenizer(..., truncation=True, "
                    f"max_length={self.config.max_position_embeddings})) or use a shorter max_new_tokens."
                )

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids. Exactly one of `input_ids` and `inputs_embeds` must be given.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real tokens, 0 for padding. Leave it `None` with restarting `position_ids` for packed batches.
            position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Position of each token. Restarting them at 0 marks document boundaries in a packed batch.
            cache (`Cache`, *optional*):
                Keys and values of earlier tokens, as returned with `use_cache=True`.
            use_cache (`bool`, *optional*):
                Return a KV cache. Defaults to `config.use_cache` at inference and to `False` in training. Packed
                documents are masked apart either way, unless a non-empty cache is passed in.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("GPTModel.forward: pass exactly one of input_ids and inputs_embeds.")
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if self.gradient_checkpointing and self.training and use_cache:
            logger.warning_once("use_cache=True is incompatible with gradient checkpointing; setting use_cache=False.")
            use_cache = False

        # An empty cache (made here, or by generate() before the prefill) changes nothing about the mask, so the mask
        # is built as if there were none: create_causal_mask derives per-document masks from restarting position_ids
        # only when it is given no cache object.
        # Continuous batching passes a paged cache, which is no `Cache` and has no sequence length of its own.
        past_length = cache.get_seq_length() if isinstance(cache, Cache) else 0
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        seq_length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        positions_given = position_ids is not None
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Count only real tokens, so a left-padded row gets the same positions (and outputs) as the unpadded one.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_length:]  # (B, T)
        elif position_ids is None:
            device = (input_ids if input_ids is not None else inputs_embeds).device
            position_ids = torch.arange(past_length, past_length + seq_length, device=device).unsqueeze(0)  # (1, T)
        self._check_inputs(input_ids, position_ids, positions_given)

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, C)
        position_embeddings = None
        if self.config.position_embedding_type == "learned":
            hidden_states = inputs_embeds + self.embed_positions(position_ids)
        else:
            hidden_states = inputs_embeds
            position_embeddings = self.rotary_emb(hidden_states, position_ids)
        hidden_states = self.dropout(hidden_states)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache if past_length > 0 else None,
            position_ids=position_ids,
        )

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for block in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = block(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                position_ids=position_ids,
                **kwargs,
            )
            if output_attentions:
                all_attentions += (attn_weights,)

        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


class GPTForCausalLM(GPTPreTrainedModel, GenerationMixin):
    """GPT with a language-modelling head: next-token prediction, `generate()`, and the pretraining loss."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.model = GPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            # The tied head is never saved; naming it here lets Trainer re-tie it on resume instead of warning
            # "There were missing keys in the checkpoint model loaded: ['lm_head.weight']".
            self._keys_to_ignore_on_save = ["lm_head.weight"]
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Targets aligned with `input_ids` (the shift happens inside the loss); `-100` is ignored. Extra
                `**kwargs` such as Trainer's `num_items_in_batch` reach the loss, so gradient accumulation
                normalises by the true token count.
            logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
                Compute logits only for the last `logits_to_keep` positions (0 keeps all), as `generate()` does.

        Other arguments are those of [`GPTModel.forward`].
        """
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)  # (B, T, V)

        loss = None
        if labels is not None:
            self._check_labels(labels)
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _check_labels(self, labels: torch.LongTensor) -> None:
        """Turn a label outside the vocabulary into a clear error (as `GPTModel` does for input ids) instead of an
        `IndexError` or device-side assert inside the cross-entropy. Skipped when `GPTModel` skips its input check."""
        if torch.compiler.is_compiling() or (self.training and labels.device.type != "cpu"):
            return
        valid = labels[labels != -100]
        if valid.numel() == 0:
            return
        smallest, largest = int(valid.min()), int(valid.max())
        if smallest < 0 or largest >= self.config.vocab_size:
            bad = largest if largest >= self.config.vocab_size else smallest
            raise ValueError(
                f"labels contain token id {bad}, outside the vocabulary of vocab_size={self.config.vocab_size} (-100 "
                "marks ignored positions). The labels were made with another tokenizer than the model's: use the "
                "tokenizer the model was trained with, or resize with model.resize_token_embeddings(len(tokenizer))."
            )

    @classmethod
    def from_gpt2(cls, model_or_path: GPT2LMHeadModel | str, **from_pretrained_kwargs) -> "GPTForCausalLM":
        """Convert a transformers `GPT2LMHeadModel` (e.g. OpenAI's `openai-community/gpt2`) into a `GPTForCausalLM`.

        Args:
            model_or_path (`GPT2LMHeadModel` or `str`):
                A loaded model, a local directory or a Hub repo id of a GPT-2 checkpoint.
            from_pretrained_kwargs:
                Passed to `GPT2LMHeadModel.from_pretrained` when a path or repo id is given (`revision`, `token`...).

        Returns:
            `GPTForCausalLM`: a model whose logits equal the source model's.
        """
        gpt2 = (
            model_or_path
            if isinstance(model_or_path, GPT2LMHeadModel)
            else GPT2LMHeadModel.from_pretrained(model_or_path, **from_pretrained_kwargs)
        )
        source = gpt2.config
        if source.scale_attn_by_inverse_layer_idx or source.reorder_and_upcast_attn or not source.scale_attn_weights:
            raise ValueError(
                "from_gpt2 supports GPT-2's standard attention scaling only; this checkpoint sets "
                "scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn or scale_attn_weights=False."
            )
        config = GPTConfig(
            vocab_size=source.vocab_size,
            hidden_size=source.n_embd,
            num_hidden_layers=source.n_layer,
            num_attention_heads=source.n_head,
            intermediate_size=source.n_inner,
            max_position_embeddings=source.n_positions,
            # The same tanh GELU as GPT-2's "gelu_new", from PyTorch's fused kernel instead of five elementwise ops.
            hidden_act="gelu_pytorch_tanh" if source.activation_function == "gelu_new" else source.activation_function,
            embedding_dropout=source.embd_pdrop,
            attention_dropout=source.attn_pdrop,
            residual_dropout=source.resid_pdrop,
            layer_norm_epsilon=source.layer_norm_epsilon,
            initializer_range=source.initializer_range,
            tie_word_embeddings=source.tie_word_embeddings,
            bos_token_id=source.bos_token_id,
            eos_token_id=source.eos_token_id,
            pad_token_id=source.pad_token_id,
        )
        model = cls(config).to(gpt2.dtype)
        # GPT-2 stores projections as Conv1D with (in, out) weights and a fused q|k|v; nn.Linear wants (out, in).
        state_dict = {
            "model.embed_tokens.weight": gpt2.transformer.wte.weight,
            "model.embed_positions.weight": gpt2.transformer.wpe.weight,
            "model.norm.weight": gpt2.transformer.ln_f.weight,
            "model.norm.bias": gpt2.transformer.ln_f.bias,
            "lm_head.weight": gpt2.lm_head.weight,
        }
        for index, block in enumerate(gpt2.transformer.h):
            prefix = f"model.layers.{index}"
            query, key, value = block.attn.c_attn.weight.t().chunk(3, dim=0)
            query_bias, key_bias, value_bias = block.attn.c_attn.bias.chunk(3, dim=0)
            state_dict.update(
                {
                    f"{prefix}.input_layernorm.weight": block.ln_1.weight,
                    f"{prefix}.input_layernorm.bias": block.ln_1.bias,
                    f"{prefix}.self_attn.q_proj.weight": query,
                    f"{prefix}.self_attn.q_proj.bias": query_bias,
                    f"{prefix}.self_attn.k_proj.weight": key,
                    f"{prefix}.self_attn.k_proj.bias": key_bias,
                    f"{prefix}.self_attn.v_proj.weight": value,
                    f"{prefix}.self_attn.v_proj.bias": value_bias,
                    f"{prefix}.self_attn.o_proj.weight": block.attn.c_proj.weight.t(),
                    f"{prefix}.self_attn.o_proj.bias": block.attn.c_proj.bias,
                    f"{prefix}.post_attention_layernorm.weight": block.ln_2.weight,
                    f"{prefix}.post_attention_layernorm.bias": block.ln_2.bias,
                    f"{prefix}.mlp.up_proj.weight": block.mlp.c_fc.weight.t(),
                    f"{prefix}.mlp.up_proj.bias": block.mlp.c_fc.bias,
                    f"{prefix}.mlp.down_proj.weight": block.mlp.c_proj.weight.t(),
                    f"{prefix}.mlp.down_proj.bias": block.mlp.c_proj.bias,
                }
            )
        state_dict = {name: tensor.detach().clone() for name, tensor in state_dict.items()}
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        missing = [name for name in missing if name != "lm_head.weight" or not config.tie_word_embeddings]
        if missing or unexpected:
            raise ValueError(f"from_gpt2: weights did not map cleanly (missing {missing}, unexpected {unexpected}).")
        if config.tie_word_embeddings:
            model.tie_weights()
        if gpt2.generation_config is not None:
            model.generation_config = gpt2.generation_config
        return model

    def to_gpt2(self) -> GPT2LMHeadModel:
        """Convert this model into a transformers `GPT2LMHeadModel` with the same logits: the inverse of `from_gpt2`.

        The result needs no remote code, so every tool that knows GPT-2 loads it as is: `pipeline()`,
        `transformers serve`, vLLM's native GPT-2, llama.cpp's GGUF converter.

        Returns:
            `GPT2LMHeadModel`: a model whose logits equal this model's.

        Raises:
            `ValueError`: naming the config field when GPT-2 cannot express it (rotary positions, no biases).
        """
        config = self.config
        if config.position_embedding_type != "learned":
            raise ValueError(
                f"to_gpt2: GPT-2 has learned absolute positions only, and this model sets position_embedding_type="
                f"{config.position_embedding_type!r}; a rotary model cannot be exported as GPT-2."
            )
        if not config.bias:
            raise ValueError(
                "to_gpt2: GPT-2 has a bias in every projection and LayerNorm, and this model sets bias=False."
            )
        # PyTorch's fused tanh GELU is the same function as GPT-2's "gelu_new".
        activation = "gelu_new" if config.hidden_act == "gelu_pytorch_tanh" else config.hidden_act
        gpt2_config = GPT2Config(
            vocab_size=config.vocab_size,
            n_positions=config.max_position_embeddings,
            n_embd=config.hidden_size,
            n_layer=config.num_hidden_layers,
            n_head=config.num_attention_heads,
            n_inner=config.intermediate_size,
            activation_function=activation,
            resid_pdrop=config.residual_dropout,
            embd_pdrop=config.embedding_dropout,
            attn_pdrop=config.attention_dropout,
            layer_norm_epsilon=config.layer_norm_epsilon,
            initializer_range=config.initializer_range,
            tie_word_embeddings=config.tie_word_embeddings,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )
        state = self.state_dict()
        # nn.Linear stores (out, in) weights; GPT-2's Conv1D stores (in, out), with q|k|v fused into c_attn.
        gpt2_state = {
            "transformer.wte.weight": state["model.embed_tokens.weight"],
            "transformer.wpe.weight": state["model.embed_positions.weight"],
            "transformer.ln_f.weight": state["model.norm.weight"],
            "transformer.ln_f.bias": state["model.norm.bias"],
            "lm_head.weight": state["model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"],
        }
        for index in range(config.num_hidden_layers):
            ours, theirs = f"model.layers.{index}", f"transformer.h.{index}"
            projections = [state[f"{ours}.self_attn.{name}_proj.weight"] for name in ("q", "k", "v")]
            biases = [state[f"{ours}.self_attn.{name}_proj.bias"] for name in ("q", "k", "v")]
            gpt2_state.update(
                {
                    f"{theirs}.ln_1.weight": state[f"{ours}.input_layernorm.weight"],
                    f"{theirs}.ln_1.bias": state[f"{ours}.input_layernorm.bias"],
                    f"{theirs}.attn.c_attn.weight": torch.cat(projections, dim=0).t(),
                    f"{theirs}.attn.c_attn.bias": torch.cat(biases, dim=0),
                    f"{theirs}.attn.c_proj.weight": state[f"{ours}.self_attn.o_proj.weight"].t(),
                    f"{theirs}.attn.c_proj.bias": state[f"{ours}.self_attn.o_proj.bias"],
                    f"{theirs}.ln_2.weight": state[f"{ours}.post_attention_layernorm.weight"],
                    f"{theirs}.ln_2.bias": state[f"{ours}.post_attention_layernorm.bias"],
                    f"{theirs}.mlp.c_fc.weight": state[f"{ours}.mlp.up_proj.weight"].t(),
                    f"{theirs}.mlp.c_fc.bias": state[f"{ours}.mlp.up_proj.bias"],
                    f"{theirs}.mlp.c_proj.weight": state[f"{ours}.mlp.down_proj.weight"].t(),
                    f"{theirs}.mlp.c_proj.bias": state[f"{ours}.mlp.down_proj.bias"],
                }
            )
        gpt2 = GPT2LMHeadModel(gpt2_config).to(self.dtype)
        missing, unexpected = gpt2.load_state_dict(
            {name: tensor.detach().clone().contiguous() for name, tensor in gpt2_state.items()}, strict=False
        )
        # GPT-2's causal-mask buffers are not weights; the tied head is re-tied below.
        missing = [name for name in missing if not name.endswith((".attn.bias", ".attn.masked_bias"))]
        missing = [name for name in missing if name != "lm_head.weight" or not config.tie_word_embeddings]
        if missing or unexpected:
            raise ValueError(f"to_gpt2: weights did not map cleanly (missing {missing}, unexpected {unexpected}).")
        if config.tie_word_embeddings:
            gpt2.tie_weights()
        gpt2.generation_config = self.generation_config
        return gpt2.eval() if not self.training else gpt2


class GPTForSequenceClassification(GPTPreTrainedModel):
    """GPT with a `score` head on the last non-padding token.

    With `num_labels > 1` it classifies (e.g. spam vs. not spam); with `num_labels=1` it returns one scalar per
    sequence, the shape TRL's `RewardTrainer` and `PPOTrainer` expect of reward and value models. Padding is found as
    `input_ids != pad_token_id`, so the pad token must differ from the end-of-text token.
    """

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = GPTModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Class indices (cross-entropy) or, with `num_labels=1`, regression targets (MSE).

        Other arguments are those of [`GPTModel.forward`].
        """
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        logits = self.score(outputs.last_hidden_state)  # (B, T, num_labels)
        batch_size = logits.shape[0]

        pad_token_id = self.config.pad_token_id
        token_indices = torch.arange(logits.shape[1], device=logits.device, dtype=torch.int32)
        if input_ids is not None and pad_token_id is not None:
            # The rightmost non-pad token, which handles both left and right padding.
            is_token = (input_ids != pad_token_id).to(logits.device, torch.int32)
            last_token = (token_indices * is_token).argmax(-1)
        elif attention_mask is not None:
            last_token = (token_indices * attention_mask.to(logits.device, torch.int32)).argmax(-1)
        elif batch_size == 1:
            last_token = token_indices[-1:]
        else:
            raise ValueError(
                "GPTForSequenceClassification needs config.pad_token_id (or an attention_mask) to find the last "
                "token of each padded row; set model.config.pad_token_id = tokenizer.pad_token_id."
            )
        pooled_logits = logits[torch.arange(batch_size, device=logits.device), last_token]  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=pooled_logits, config=self.config)

        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled_logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = ["GPTForCausalLM", "GPTForSequenceClassification", "GPTModel", "GPTPreTrainedModel"]
