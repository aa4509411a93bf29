"""Token-weighted perplexity of a causal LM over a corpus, batched, with a sliding window for long texts.

Shared by the `eval/metrics/perplexity` `evaluate` module and `hf-llm eval`, so both count tokens the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from hf_llm.errors import UsageError

logger = logging.get_logger(__name__)


def perplexity_from_loss(loss: float) -> float:
    """
    Perplexity of a mean token cross-entropy (natural log): `exp(loss)`, `inf` on overflow, `nan` for a NaN loss.

    Args:
        loss (`float`): Mean negative log-likelihood per token, in nats.

    Returns:
        `float`: The perplexity.
    """
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def model_max_length(model: PreTrainedModel) -> int:
    """The longest sequence `model` can attend to, read from its config.

    Args:
        model (`PreTrainedModel`): a causal LM (a PEFT model is unwrapped through `.config`).

    Returns:
        `int`: `max_position_embeddings` (or GPT-2's `n_positions`).
    """
    config = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise UsageError(
        f"cannot tell the context length of {type(model).__name__}: its config has no `max_position_embeddings`; "
        "pass `max_length` explicitly."
    )


def _windows(num_tokens: int, first_scored: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows `(begin, end, score_from)` over one token sequence.

    Every position `t >= max(first_scored, 1)` is scored exactly once, by the first window whose `end` passes it,
    with up to `max_length - stride` tokens of context kept from the previous window.
    """
    windows = []
    scored_until = max(first_scored, 1)  # position 0 has nothing to its left to predict it from
    begin = 0
    while scored_until < num_tokens:
        end = min(begin + max_length, num_tokens)
        if end > scored_until:
            windows.append((begin, end, scored_until))
            scored_until = end
        begin += stride
    return windows


@torch.no_grad()
def compute_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    contexts: list[str] | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    stride: int | None = None,
    add_start_token: bool | None = None,
) -> dict:
    """Perplexity of `model` on `texts`, token-weighted over the corpus.

    Each text is tokenized without special tokens; with `add_start_token` the tokenizer's BOS token is put in
    front so the first token is scored too. A text longer than `max_length` tokens is cut into windows that advance
    by `stride` tokens; each token is scored once, with the previous `max_length - stride` tokens as context.
    Windows from all texts are batched together (right padding), so short corpora need a single forward pass.

    Args:
        model (`PreTrainedModel`): a causal LM (or a PEFT model wrapping one); put in eval mode by this function.
        tokenizer (`PreTrainedTokenizerBase`): the model's tokenizer.
        texts (`list[str]`): the texts to score.
        contexts (`list[str]`, *optional*): one conditioning text per entry of `texts` (e.g. a prompt), tokenized
            and put before it but not scored, so the result is the perplexity of `texts` given `contexts`.
        batch_size (`int`, defaults to 8): windows per forward pass.
        max_length (`int`, *optional*): window length in tokens; defaults to the model's context length.
        stride (`int`, *optional*): how far each window moves; defaults to `max_length // 2`.
        add_start_token (`bool`, *optional*): prepend the BOS token; defaults to `True` when the tokenizer has one.

    Returns:
        `dict` with `perplexity` (exp of the corpus-level mean token NLL), `perplexities` (one per text),
        `mean_perplexity` (their mean), `nll_sum` (summed NLL in nats) and `num_tokens` (scored tokens).
    """
    if len(texts) == 0:
        raise UsageError("perplexity got no texts; pass at least one non-empty text to score.")
    if contexts is not None and len(contexts) != len(texts):
        raise UsageError(f"perplexity got {len(contexts)} `contexts` for {len(texts)} texts; pass one per text.")
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise TypeError(f"perplexity expects strings; texts at positions {bad[:10]} are not.")
    max_length = max_length or model_max_length(model)
    stride = stride or max(max_length // 2, 1)
    if not 0 < stride < max_length:
        # stride == max_length would leave the first token of every window without context, so it would go unscored.
        raise UsageError(f"perplexity needs 0 < stride < max_length; got stride={stride}, max_length={max_length}.")
    if add_start_token is None:
        add_start_token = tokenizer.bos_token_id is not None
    if add_start_token and tokenizer.bos_token_id is None:
        raise UsageError(
            f"add_start_token=True but tokenizer {type(tokenizer).__name__} has no BOS token; "
            "pass add_start_token=False."
        )
    if max_length < 2:
        raise UsageError(f"perplexity needs max_length >= 2 to score anything; got {max_length}.")

    # Tokenize: sequences[i] is the full token list, first_scored[i] the first position that counts for text i.
    prefix = [tokenizer.bos_token_id] if add_start_token else []
    # verbose=False: texts longer than the context are expected here (the sliding window scores them), so the
    # tokenizer's "will result in indexing errors" warning would be wrong.
    text_ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    context_ids = (
        tokenizer(list(contexts), add_special_tokens=False, verbose=False)["input_ids"]
        if contexts
        else [[] for _ in texts]
    )
    sequences = [prefix + ctx + ids for ctx, ids in zip(context_ids, text_ids, strict=True)]
    first_scored = [len(prefix) + len(ctx) for ctx in context_ids]

    # One work item per window, across all texts; longest first so each batch pads little.
    items = []
    for index, (ids, first) in enumerate(zip(sequences, first_scored, strict=True)):
        windows = _windows(len(ids), first, max_length, stride)
        if not windows:
            raise UsageError(
                f"text {index} ({texts[index][:40]!r}) has no token to score: it tokenizes to {len(ids) - first} "
                "token(s) and the first token of a sequence has no context. Drop empty texts, or pass "
                "add_start_token=True with a tokenizer that has a BOS token."
            )
        items.extend((index, begin, end, score_from) for begin, end, score_from in windows)
    items.sort(key=lambda item: item[2] - item[1], reverse=True)
    if any(len(ids) > max_length for ids in sequences):
        logger.info(f"Scoring texts longer than {max_length} tokens with a sliding window (stride {stride}).")

    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll_per_text = [0.0] * len(texts)
    tokens_per_text = [0] * len(texts)
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        width = max(end - begin for _, begin, end, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        scored = torch.zeros((len(batch), width), dtype=torch.bool)  # positions whose token is a target
        for row, (index, begin, end, score_from) in enumerate(batch):
            input_ids[row, : end - begin] = torch.tensor(sequences[index][begin:end])
            attention_mask[row, : end - begin] = 1
            scored[row, score_from - begin : end - begin] = True
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # (B, T, V)
        # Position t predicts token t + 1.
        # Half-precision logits are upcast so the log-softmax is exact enough; float64 stays float64.
        logits = logits if logits.dtype == torch.float64 else logits.float()
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none")  # (B, T - 1)
        target_mask = scored[:, 1:].to(nll.device)
        nll_sums = (nll * target_mask).sum(dim=1).tolist()
        counts = target_mask.sum(dim=1).tolist()
        for (index, *_), nll_sum, count in zip(batch, nll_sums, counts, strict=True):
            nll_per_text[index] += nll_sum
            tokens_per_text[index] += int(count)

    perplexities = [perplexity_from_loss(n / c) for n, c in zip(nll_per_text, tokens_per_text, strict=True)]
    nll_sum = math.fsum(nll_per_text)
    num_tokens = sum(tokens_per_text)
    return {
        "perplexity": perplexity_from_loss(nll_sum / num_tokens),
        "perplexities": perplexities,
        "mean_perplexity": math.fsum(perplexities) / len(perplexities),
        "nll_sum": nll_sum,
        "num_tokens": num_tokens,
    }
