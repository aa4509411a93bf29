"""The `win_rate` evaluation: how a policy's greedy answers to held-out prompts score under a reward model, alone and
against another policy's (usually the SFT model it was aligned from).

```python
from hf_llm.evaluation.win_rate import compare_policies

metrics, samples = compare_policies(ppo_policy, sft_model, reward_model, tokenizer, held_out_rows, max_new_tokens=64)
metrics["mean_reward"], metrics["reference_mean_reward"], metrics["win_rate"]
```

Each prompt is rendered with the chat template the policy was trained with (`hf_llm.data.formatting.chat_prompt`),
both policies answer greedily (so the comparison is deterministic), and each answer is scored as the reward model was
trained: the whole conversation, prompt and answer, rendered by the chat template (answers end with eos). A win is a
higher reward; a tie counts one half, so two identical policies score exactly 0.5.

`ppo.py` and `dpo.py` report it before and after training, `hf-llm eval --task win_rate` computes it for any two
checkpoints, and the pipeline report shows it.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hf_llm.errors import UsageError

from ..data.formatting import chat_prompt, instruction_messages, preference_conversation
from .inference import generate_greedy, greedy_decoding, score_sequences
from .perplexity import model_max_length


def scored_text(example: dict, response: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The text a reward model scores for `response` to `example`'s prompt: the conversation, rendered with the chat
    template as `RewardTrainer` rendered `prompt + chosen` (a plain-text prompt with no template: prompt + response +
    eos)."""
    if "chosen" in example:
        prompt = preference_conversation(example)["prompt"]
    else:
        prompt, _ = instruction_messages(example)
    if isinstance(prompt, str):
        return prompt + response + tokenizer.eos_token
    messages = [*prompt, {"role": "assistant", "content": response}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


@torch.no_grad()
def score_responses(
    reward_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict],
    responses: list[str],
    *,
    batch_size: int = 16,
) -> np.ndarray:
    """
    The reward of each response to its example's prompt.

    Args:
        reward_model (`PreTrainedModel`): A sequence classifier with one output (a `reward.py` output).
        tokenizer (`PreTrainedTokenizerBase`): The tokenizer both policies and the reward model share.
        examples (`list[dict]`): `instruction` or `preference` rows (their prompts).
        responses (`list[str]`): One answer per example.
        batch_size (`int`, defaults to 16): Sequences per forward pass.

    Returns:
        `np.ndarray`: `(N,)` rewards. Texts longer than the reward model's context keep their end (its pooled token).
    """
    texts = [scored_text(example, response, tokenizer) for example, response in zip(examples, responses, strict=True)]
    rewards, _ = score_sequences(reward_model, tokenizer, texts, batch_size, model_max_length(reward_model))
    return rewards[:, 0]


def compare_policies(
    policy: PreTrainedModel,
    reference: PreTrainedModel | None,
    reward_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
) -> tuple[dict, list[dict]]:
    """
    Mean reward of `policy`'s greedy answers to the prompts of `examples` and, with a `reference` policy, the win rate
    of `policy` over it under `reward_model`.

    Args:
        policy (`PreTrainedModel`): The causal LM evaluated.
        reference (`PreTrainedModel`, *optional*): The causal LM it is compared with (e.g. the SFT model).
        reward_model (`PreTrainedModel`): The judge: a sequence classifier with one output.
        tokenizer (`PreTrainedTokenizerBase`): Shared by the three models (same vocabulary and chat template).
        examples (`list[dict]`): Held-out `instruction` or `preference` rows.
        max_new_tokens (`int`, defaults to 64): Most tokens per answer.
        batch_size (`int`, defaults to 16): Prompts per batch.

    Returns:
        `tuple[dict, list[dict]]`: metrics (`mean_reward`, `response_length`, and with a reference
        `reference_mean_reward`, `reference_response_length`, `mean_reward_margin`, `win_rate`, `num_ties`), and one
        sample per prompt (`prompt`, `response`, `reward`, and `reference_response`, `reference_reward`).
    """
    if not examples:
        raise UsageError("no held-out prompts to compare the policies on; pass a dataset with a validation split.")
    prompts = [chat_prompt(example, tokenizer) for example in examples]
    generation_config = greedy_decoding(max_new_tokens, tokenizer)

    def answer(model: PreTrainedModel) -> tuple[list[str], dict]:
        responses, truncated = generate_greedy(
            model, tokenizer, prompts, generation_config, batch_size, model_max_length(model)
        )
        lengths = [len(ids) for ids in tokenizer(responses, add_special_tokens=False, verbose=False)["input_ids"]]
        return responses, {"response_length": float(np.mean(lengths)), "num_prompts_truncated": truncated}

    responses, stats = answer(policy)
    rewards = score_responses(reward_model, tokenizer, examples, responses, batch_size=batch_size)
    metrics = {"mean_reward": float(rewards.mean()), **stats, "num_prompts": len(examples)}
    samples = [
        {"prompt": prompt, "response": response, "reward": float(reward)}
        for prompt, response, reward in zip(prompts, responses, rewards, strict=True)
    ]
    if reference is not None:
        reference_responses, reference_stats = answer(reference)
        reference_rewards = score_responses(
            reward_model, tokenizer, examples, reference_responses, batch_size=batch_size
        )
        margins = rewards - reference_rewards
        ties = int((margins == 0).sum())
        metrics.update(
            reference_mean_reward=float(reference_rewards.mean()),
            reference_response_length=reference_stats["response_length"],
            mean_reward_margin=float(margins.mean()),
            win_rate=float(((margins > 0).sum() + 0.5 * ties) / len(margins)),
            num_ties=ties,
        )
        for sample, response, reward in zip(samples, reference_responses, reference_rewards, strict=True):
            sample.update(reference_response=response, reference_reward=float(reward))
    return metrics, samples
