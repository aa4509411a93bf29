"""`compute_metrics` / `preprocess_logits_for_metrics` hooks for `transformers.Trainer`.

Trainer gathers whatever `preprocess_logits_for_metrics` returns for the whole eval set before calling
`compute_metrics`. Full causal-LM logits are `(N, T, V)` floats, far too many to hold, so the causal-LM hook reduces
each batch to three numbers per sequence (summed NLL, scored tokens, correct argmax predictions); the
classification hook reduces `(N, num_labels)` logits to argmax labels.

Example:

```python
trainer = Trainer(
    ...,
    compute_metrics=compute_causal_lm_metrics,
    preprocess_logits_for_metrics=preprocess_logits_for_causal_lm_metrics,
)
trainer.evaluate()  # {"eval_loss": ..., "eval_perplexity": ..., "eval_token_accuracy": ...}
```
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EvalPrediction

from hf_llm.errors import UsageError

from .classification import classification_report
from .perplexity import perplexity_from_loss

IGNORE_INDEX = -100


def _first(outputs: torch.Tensor | tuple) -> torch.Tensor:
    # Models may return (logits, cache, ...) when Trainer asks for a tuple.
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def preprocess_logits_for_causal_lm_metrics(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """Reduce a batch of causal-LM logits to per-sequence `[nll_sum, num_tokens, num_correct]`.

    Labels are the unshifted `labels` the model gets (position `t` predicts label `t + 1`), with -100 on positions
    that are not scored (padding, masked prompts).

    Args:
        logits (`torch.Tensor` of shape `(batch, seq, vocab)`, or a tuple starting with it): model outputs.
        labels (`torch.Tensor` of shape `(batch, seq)`): the batch's labels.

    Returns:
        `torch.Tensor` of shape `(batch, 3)`, float64: summed token NLL (nats), scored tokens, argmax hits.
    """
    logits = _first(logits)
    shift_logits = logits[:, :-1]  # (B, T-1, V)
    if shift_logits.dtype != torch.float64:
        shift_logits = shift_logits.float()  # bf16/fp16 logits are too coarse for a log-softmax
    shift_labels = labels[:, 1:].to(shift_logits.device)  # (B, T-1)
    mask = shift_labels != IGNORE_INDEX
    nll = F.cross_entropy(
        shift_logits.transpose(1, 2), shift_labels.masked_fill(~mask, 0), reduction="none"
    )  # (B, T-1)
    correct = (shift_logits.argmax(dim=-1) == shift_labels) & mask
    return torch.stack(
        [(nll * mask).sum(dim=1).double(), mask.sum(dim=1).double(), correct.sum(dim=1).double()], dim=1
    )


def compute_causal_lm_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """Token-weighted eval perplexity and next-token accuracy from [`preprocess_logits_for_causal_lm_metrics`].

    Unlike `exp(eval_loss)`, which averages per-batch means, this weighs every scored token equally.

    Args:
        eval_pred (`EvalPrediction`): `predictions` are the `(N, 3)` rows the preprocess hook returned.

    Returns:
        `dict`: `perplexity`, `token_accuracy` and `nll` (mean token NLL in nats).
    """
    stats = np.asarray(_first(eval_pred.predictions), dtype=np.float64).reshape(-1, 3)
    nll_sum, num_tokens, num_correct = stats.sum(axis=0)
    if num_tokens == 0:
        raise UsageError("no scored tokens in the eval set: every label is -100; check the eval dataset's labels.")
    mean_nll = nll_sum / num_tokens
    return {"perplexity": perplexity_from_loss(mean_nll), "token_accuracy": num_correct / num_tokens, "nll": mean_nll}


def preprocess_logits_for_classification(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """Reduce sequence-classification logits `(batch, num_labels)` to predicted labels `(batch,)`."""
    return _first(logits).argmax(dim=-1)


def compute_classification_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro-F1 for `Trainer`, from argmax labels or raw `(N, num_labels)` logits.

    Args:
        eval_pred (`EvalPrediction`): predictions from [`preprocess_logits_for_classification`] (or logits) and
            integer labels.

    Returns:
        `dict`: `accuracy` and `macro_f1`.
    """
    predictions = np.asarray(_first(eval_pred.predictions))
    if predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    labels = np.asarray(_first(eval_pred.label_ids))
    report = classification_report(predictions, labels)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
