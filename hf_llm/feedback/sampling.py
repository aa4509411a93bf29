"""Sampling answers to rank, and streaming chat replies, from any causal LM through `generate()`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextIteratorStreamer

from hf_llm.errors import UsageError

from ..serving import context_length, fit_to_context


@dataclass
class SamplingConfig:
    """`generate()` settings for the answers a person ranks (and for the chat page's defaults).

    Args:
        num_samples (`int`, defaults to 2): answers sampled per prompt, shown side by side.
        max_new_tokens (`int`, defaults to 128): length limit of each answer.
        temperature (`float`, defaults to 0.8): softmax temperature; 0 means greedy (every sample identical, so
            only allowed with one sample).
        top_p (`float`, defaults to 0.95): nucleus sampling mass.
        top_k (`int`, defaults to 0): keep only the k likeliest tokens; 0 turns it off.
        repetition_penalty (`float`, defaults to 1.0): `generate()`'s repetition penalty; 1 turns it off.
        seed (`int`, defaults to 42): with the prompt's id, fixes each prompt's answers, so a restarted session
            shows the same answers for the prompt it resumes at.
    """

    num_samples: int = 2
    max_new_tokens: int = 128
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 42

    def __post_init__(self):
        if self.num_samples < 1:
            raise UsageError(f"--num_samples must be >= 1, got {self.num_samples}")
        if self.max_new_tokens < 1:
            raise UsageError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UsageError(f"--temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.num_samples > 1:
            raise UsageError(
                f"--temperature 0 is greedy decoding: all {self.num_samples} answers would be identical. Pass "
                "--temperature > 0 (e.g. 0.8) to sample different answers."
            )
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top_p must be in (0, 1], got {self.top_p}")

    def to_dict(self) -> dict:
        return asdict(self)

    def generate_kwargs(self, tokenizer: PreTrainedTokenizerBase) -> dict:
        """Keyword arguments for `model.generate` (sampling unless the temperature is 0)."""
        sample = self.temperature > 0
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": sample,
            "temperature": self.temperature if sample else None,
            "top_p": self.top_p if sample else None,
            "top_k": self.top_k if sample else None,
            "repetition_penalty": self.repetition_penalty,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }


def format_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """The text the model is given: the chat template with the assistant turn opened, or, for a tokenizer without
    a template (a base model), the last user message as plain text."""
    if tokenizer.chat_template is None:
        return messages[-1]["content"]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, model: PreTrainedModel) -> dict[str, torch.Tensor]:
    # A chat template writes its own special tokens; a plain prompt gets whatever the tokenizer adds.
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=tokenizer.chat_template is None)
    return {
        name: tensor.to(model.device) for name, tensor in inputs.items() if name in ("input_ids", "attention_mask")
    }


def prompt_seed(seed: int, prompt_id: str) -> int:
    """The seed of one prompt's samples: fixed by the session seed and the prompt, not by its position."""
    return (seed * 1_000_003 + int(prompt_id[:8], 16)) % 2**32


@torch.inference_mode()
def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    formatted_prompt: str,
    config: SamplingConfig,
    seed: int,
) -> list[str]:
    """`config.num_samples` answers to one formatted prompt, in one `generate()` call, special tokens removed."""
    inputs = _encode(tokenizer, formatted_prompt, model)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        output = model.generate(
            **inputs, num_return_sequences=config.num_samples, **config.generate_kwargs(tokenizer)
        )  # (num_samples, prompt + new tokens)
    finally:
        torch.random.set_rng_state(generator_state)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def stream_reply(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, str]],
    config: SamplingConfig,
) -> Iterator[str]:
    """Stream the assistant's reply to `messages`: yields the text so far after each decoded piece.

    A conversation that has outgrown the model's context loses its oldest exchanges first; the answer is then
    clamped to the positions left.

    Raises:
        ValueError: when the last message alone leaves no room for an answer.
    """
    context = context_length(model)
    while True:
        inputs = _encode(tokenizer, format_prompt(tokenizer, messages), model)
        prompt_length = inputs["input_ids"].shape[1]
        if context is None or prompt_length + config.max_new_tokens <= context or len(messages) <= 2:
            break
        messages = messages[2:]  # forget the oldest user/assistant exchange
    generate_kwargs = config.generate_kwargs(tokenizer)
    generate_kwargs["max_new_tokens"] = fit_to_context(model, prompt_length, config.max_new_tokens)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    kwargs = {**inputs, **generate_kwargs, "streamer": streamer}
    errors: list[BaseException] = []

    def generate() -> None:
        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as error:  # surfaced in the caller's thread below
            errors.append(error)
            streamer.end()

    thread = threading.Thread(target=generate, daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    thread.join()
    if errors:
        raise errors[0]


def answer_sampler(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: SamplingConfig):
    """A `Sampler` for `RankingSession`: formats a prompt as a single user turn and samples its answers."""

    def sample(prompt: str, prompt_id: str) -> tuple[str, list[str]]:
        formatted_prompt = format_prompt(tokenizer, [{"role": "user", "content": prompt}])
        return formatted_prompt, sample_answers(
            model, tokenizer, formatted_prompt, config, prompt_seed(config.seed, prompt_id)
        )

    return sample


def fits_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int
) -> list[bool]:
    """Whether each prompt, formatted, leaves room for `max_new_tokens` in the model's position table."""
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions is None:
        return [True] * len(prompts)
    add_special_tokens = tokenizer.chat_template is None  # as `_encode` does
    lengths = [
        len(
            tokenizer(
                format_prompt(tokenizer, [{"role": "user", "content": p}]), add_special_tokens=add_special_tokens
            ).input_ids
        )
        for p in prompts
    ]
    return [length + max_new_tokens <= max_positions for length in lengths]
