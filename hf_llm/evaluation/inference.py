"""Batched model calls the evaluators share: score sequences with a classifier, decode greedily with a causal LM."""

from __future__ import annotations

import numpy as np
import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from hf_llm.errors import UsageError


def encode_keeping_the_end(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
) -> tuple[list[list[int]], int]:
    """Token ids of each text cut to its last `max_length` tokens, and how many texts were cut.

    The end is what matters: a sequence classifier pools the last token, and a prompt's end is what the model
    continues.
    """
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]  # cut just below
    return [ids[-max_length:] for ids in encoded], sum(len(ids) > max_length for ids in encoded)


@torch.no_grad()
def score_sequences(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int, max_length: int
) -> tuple[np.ndarray, int]:
    """Logits `(N, num_labels)` of a sequence-classification model on `texts`, and how many were truncated."""
    rows, truncated = encode_keeping_the_end(tokenizer, texts, max_length)
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(rows), batch_size):
        batch = tokenizer.pad({"input_ids": rows[start : start + batch_size]}, padding=True, return_tensors="pt")
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits  # (B, num_labels)
        outputs.append(logits.float().cpu().numpy())
    return np.concatenate(outputs), truncated


def greedy_decoding(max_new_tokens: int, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """Greedy decoding with the KV cache, stopping at EOS."""
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        # Neutral values, so a checkpoint's sampling defaults (generation_config.json) are not merged into a
        # greedy config, where transformers would warn that they are ignored.
        temperature=1.0,
        top_p=1.0,
        num_beams=1,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def decoding_settings(generation_config: GenerationConfig) -> dict:
    """The decoding settings a report records (those `greedy_decoding` sets)."""
    keys = ("max_new_tokens", "do_sample", "num_beams", "use_cache", "pad_token_id", "eos_token_id")
    return {key: getattr(generation_config, key) for key in keys}


@torch.no_grad()
def generate_greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    generation_config: GenerationConfig,
    batch_size: int,
    max_length: int,
) -> tuple[list[str], int]:
    """Continuations of `prompts` (batched, left-padded, KV cache), and how many prompts were truncated.

    Args:
        generation_config (`GenerationConfig`): how to decode, e.g. [`greedy_decoding`].
        max_length (`int`): the model's context; each prompt keeps its last `max_length - max_new_tokens` tokens.
    """
    max_prompt_length = max_length - generation_config.max_new_tokens
    if max_prompt_length < 1:
        raise UsageError(
            f"--max_new_tokens {generation_config.max_new_tokens} leaves no room for a prompt in a context of "
            f"{max_length} tokens; lower --max_new_tokens."
        )
    rows, truncated = encode_keeping_the_end(tokenizer, prompts, max_prompt_length)
    device = next(model.parameters()).device
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues the last column, so prompts must end there
    try:
        generations = []
        for start in range(0, len(rows), batch_size):
            batch = tokenizer.pad({"input_ids": rows[start : start + batch_size]}, padding=True, return_tensors="pt")
            output = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                generation_config=generation_config,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            generations.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
    return [text.strip() for text in generations], truncated
