"""What the alignment stages (`reward`, `ppo`, `dpo`) share: preference data checks, the SFT model they start from,
token budgets, reward models, and PPO's monitoring.

```python
model_path = resolve_sft_checkpoint(model_args.model_name_or_path)     # an SFT adapter is merged once
dataset = prepare_preference_dataset(raw, source)                       # checked, prompts as chat turns
pairs = tokenize_reward_pairs(dataset["train"], tokenizer, max_length=..., strategy=..., split="train")
```

Facts these helpers encode (versions in docs/upstream-facts.md):

- `RewardTrainer` silently drops pairs longer than `max_length` and `DPOTrainer` silently drops examples whose prompt
  fills it: here they are counted and reported, truncated (keeping the end a reward model pools) or refused by
  `--overlong_strategy`.
- The reward model and PPO find padding as `input_ids != pad_token_id`: pad must differ from eos.
- PPO's reward and value models must be sequence classifiers with a `score` head
  (`hf_llm.loading.load_reward_model` refuses anything else).
- PPO rollouts continue the last column of a batch: prompts must be padded on the left ([`LeftPaddingCollator`]).
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.utils import logging

from hf_llm.data.formatting import chat_prompt, preference_conversation, preference_texts
from hf_llm.data.validation import OverlongReport, handle_overlong, handle_overlong_completions
from hf_llm.errors import UsageError

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# The SFT model the alignment stages start from
# ----------------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------------
# Preference data
# ----------------------------------------------------------------------------------------------------------------


def prepare_preference_dataset(dataset: DatasetDict, source: str) -> DatasetDict:
    """
    Give each preference pair an explicit prompt in chat form (`hf_llm.data.formatting.preference_conversation`):
    the reward model, DPO and PPO then render prompts with the chat template the SFT model was trained with, and
    evaluation scores the same texts. The rows were checked as they loaded (`hf_llm.data.check_preference_pairs`, with
    the file's own line numbers), so a conversation pair whose prompts differ cannot reach this point.

    Args:
        dataset (`DatasetDict`): The `preference` splits, from `hf_llm.data.load_dataset_from_args`.
        source (`str`): `--dataset_name`, for error messages.

    Returns:
        `DatasetDict`: `prompt`, `chosen`, `rejected` per split (messages, or strings for implicit-prompt text data).
    """
    columns = {split: rows.column_names for split, rows in dataset.items()}
    return dataset.map(
        preference_conversation,
        remove_columns=[c for c in next(iter(columns.values())) if c not in ("prompt", "chosen", "rejected")],
        desc="Rendering prompts as chat turns",
    )


def _overlong_pairs_report(max_length: int, split: str) -> OverlongReport:
    """How the reward and DPO stages name their over-long preference pairs."""
    return OverlongReport(
        "preference pairs",
        f"--max_length {max_length} tokens",
        "raise --max_length (up to the model's context) or shorten the texts",
        split,
    )


def tokenize_reward_pairs(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    strategy: str,
    split: str,
) -> Dataset:
    """
    Tokenize preference pairs as `RewardTrainer` scores them (`prompt + chosen`, `prompt + rejected`, rendered with the
    chat template, ending with eos) into its pre-tokenized columns `chosen_ids` and `rejected_ids`.

    `RewardTrainer` would drop pairs longer than `max_length` without a word; here they are counted and reported, and
    `strategy` decides: `"truncate"` keeps each sequence's last `max_length` tokens (the answer and the eos the reward
    head reads; the prompt's start is cut), `"drop"` removes the pair, `"error"` refuses the data.

    Args:
        dataset (`datasets.Dataset`): One split from [`prepare_preference_dataset`].
        tokenizer (`PreTrainedTokenizerBase`): The reward model's tokenizer (with the policy's chat template).
        max_length (`int`): Most tokens in one sequence (the model's context at most).
        strategy (`str`): `--overlong_strategy`: `"truncate"`, `"drop"` or `"error"`.
        split (`str`): The split's name, for messages.

    Returns:
        `datasets.Dataset`: `chosen_ids` and `rejected_ids`.
    """

    def tokenize(example: dict) -> dict:
        chosen, rejected = preference_texts(example, tokenizer)
        ids = tokenizer([chosen, rejected], add_special_tokens=False, verbose=False)["input_ids"]
        return {"chosen_ids": ids[0], "rejected_ids": ids[1]}

    tokenized = dataset.map(tokenize, remove_columns=dataset.column_names, desc=f"Tokenizing {split} pairs")
    lengths = [max(len(c), len(r)) for c, r in zip(tokenized["chosen_ids"], tokenized["rejected_ids"], strict=True)]

    def keep_the_end(rows: Dataset) -> Dataset:
        return rows.map(
            lambda b: {key: [ids[-max_length:] for ids in b[key]] for key in ("chosen_ids", "rejected_ids")},
            batched=True,
        )

    return handle_overlong(
        tokenized,
        lengths,
        max_length,
        strategy,
        _overlong_pairs_report(max_length, split),
        truncate=keep_the_end,
        kept="their last tokens (the answer and eos the reward head reads)",
    )


def count_overlong_dpo_pairs(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, *, max_length: int, strategy: str, split: str
) -> Dataset:
    """
    Count and report the pairs `DPOTrainer` would cut or silently drop at `max_length`: with `"truncate"` TRL keeps
    each sequence's first `max_length` tokens (cutting the answer's end) and drops pairs whose prompt alone fills
    `max_length`, which are dropped here with a report; `"drop"` removes every over-long pair; `"error"` refuses them.

    Args:
        dataset (`datasets.Dataset`): One split from [`prepare_preference_dataset`].
        tokenizer (`PreTrainedTokenizerBase`): The policy's tokenizer.
        max_length (`int`): TRL's `--max_length`.
        strategy (`str`): `--overlong_strategy`.
        split (`str`): The split's name, for messages.

    Returns:
        `datasets.Dataset`: The pairs DPO will train on, untokenized (TRL tokenizes them).
    """
    pairs = [preference_texts(example, tokenizer) for example in dataset]
    prompts = [chat_prompt(example, tokenizer) for example in dataset]
    lengths = [
        max(len(ids) for ids in tokenizer(list(pair), add_special_tokens=False, verbose=False)["input_ids"])
        for pair in pairs
    ]
    prompt_lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False, verbose=False)["input_ids"]]
    return handle_overlong_completions(
        dataset,
        prompt_lengths,
        lengths,
        max_length,
        strategy,
        _overlong_pairs_report(max_length, split),
    )


def tokenize_prompts(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_prompt_length: int,
    strategy: str,
    split: str,
) -> Dataset:
    """
    The prompts of `instruction` or `preference` rows, rendered with the chat template as the policy sees them
    (`hf_llm.data.formatting.chat_prompt`) and tokenized into `input_ids`, PPO's dataset.

    Prompts longer than `max_prompt_length` (the context minus the response length) are counted and reported;
    `"truncate"` keeps their last tokens (the end the policy continues), `"drop"` removes them, `"error"` refuses.

    Args:
        dataset (`datasets.Dataset`): One split with `prompt` (and `chosen`/`rejected`) or `instruction`/`input`
            (or `messages`) columns.
        tokenizer (`PreTrainedTokenizerBase`): The policy's tokenizer.
        max_prompt_length (`int`): Most tokens in a prompt.
        strategy (`str`): `--overlong_strategy`.
        split (`str`): The split's name, for messages.

    Returns:
        `datasets.Dataset`: one column, `input_ids`.
    """
    prompts = [chat_prompt(example, tokenizer) for example in dataset]
    ids = tokenizer(prompts, add_special_tokens=False, verbose=False)["input_ids"]
    from datasets import Dataset

    tokenized = Dataset.from_dict({"input_ids": ids})
    return handle_overlong(
        tokenized,
        [len(row) for row in ids],
        max_prompt_length,
        strategy,
        OverlongReport(
            "prompts",
            f"{max_prompt_length} tokens (the context minus --response_length)",
            "lower --response_length or shorten the prompts",
            split,
        ),
        truncate=lambda rows: rows.map(
            lambda b: {"input_ids": [row[-max_prompt_length:] for row in b["input_ids"]]}, batched=True
        ),
        kept="their last tokens (the end the policy continues)",
    )


def check_models_read_the_policy_tokens(tokenizer: PreTrainedTokenizerBase, models: dict[str, Any]) -> None:
    """
    Refuse, before the first rollout, a reward or value model that cannot read every token the policy can write: its
    embedding table is smaller than the policy's tokenizer (it was trained from another base), so scoring a response
    would index past the table deep inside a forward pass.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The policy's tokenizer.
        models (`dict[str, PreTrainedModel]`): Each other model by the flag that named it (`--reward_model_path`, ...).

    Raises:
        `UsageError`: Naming the flag, both sizes and the fix.
    """
    for flag, model in models.items():
        rows = model.get_input_embeddings().num_embeddings
        if len(tokenizer) > rows:
            raise UsageError(
                f"{flag}: its vocabulary has {rows} tokens, but the policy's tokenizer has {len(tokenizer)}, so it "
                "cannot read every token the policy writes; train it from the same SFT model (train_scripts/reward.py "
                "--model_name_or_path <the SFT model>)."
            )


class LeftPaddingCollator:
    """
    Batches PPO prompts padded on the left, whatever the tokenizer's `padding_side` says.

    PPO generates from a batch of prompts: with right padding every shorter prompt is continued after its pad tokens
    and the rollouts are wrong, with only a warning from transformers (KL 0.16-0.67 instead of 0.05 on a tiny model).
    TRL's default collator follows `tokenizer.padding_side`, which a saved tokenizer sets to `"right"`; this one has
    no setting to get wrong.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The policy's tokenizer (its pad token).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = [{"input_ids": feature["input_ids"]} for feature in features]
        return self.tokenizer.pad(batch, padding=True, padding_side="left", return_tensors="pt")


# ----------------------------------------------------------------------------------------------------------------
# PPO monitoring
# ----------------------------------------------------------------------------------------------------------------


class PPOMonitorCallback(TrainerCallback):
    """
    Adds what TRL's `PPOTrainer` does not log and warns when a run goes wrong.

    Logged with every PPO update (before the reporters, so TensorBoard gets them; add it with `add_callbacks`):
    `ppo/response_length` (mean tokens per sampled response, eos included) and `ppo/eos_rate` (share of responses that
    ended with eos rather than at `--response_length`), measured on the update's rollouts by wrapping the policy's
    `generate`.

    Warns (once per kind) when `objective/kl` (the sampled KL estimate), averaged over the last `window`
    updates, is below `-negative_kl_tolerance` (a broken reference or padding; one small batch can dip below 0, and
    at the first update policy and reference are the same model, so it is 0 up to rounding); when one update's KL
    passes `kl_alarm`; or when the mean reward (`objective/scores`), averaged the same way since one update's batch
    mean is noisy, falls more than `reward_collapse_drop` below the best such average so far (reward collapse).

    Args:
        eos_token_id (`int`): The token that ends a response.
        kl_alarm (`float`, *optional*): Warn when the KL goes above it.
        reward_collapse_drop (`float`, *optional*): Warn when the mean reward falls this far below its best.
        window (`int`, *optional*, defaults to 8): Updates the KL and reward checks average over.
        negative_kl_tolerance (`float`, *optional*, defaults to 1e-3): How far below 0 the KL may be before a warning.
    """

    def __init__(
        self,
        eos_token_id: int,
        kl_alarm: float | None = None,
        reward_collapse_drop: float | None = None,
        window: int = 8,
        negative_kl_tolerance: float = 1e-3,
    ):
        self.eos_token_id = eos_token_id
        self.kl_alarm = kl_alarm
        self.reward_collapse_drop = reward_collapse_drop
        self.window = window
        self.negative_kl_tolerance = negative_kl_tolerance
        self.best_score = -math.inf
        self._recent_scores: deque[float] = deque(maxlen=window)
        self._recent_kls: deque[float] = deque(maxlen=window)
        self.warned: set[str] = set()
        self._lengths: list[int] = []
        self._eos: list[bool] = []
        self._policy = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        policy = getattr(kwargs.get("model"), "policy", None)
        if policy is None:
            return
        original = policy.generate

        def generate(*args, **kwargs):
            output = original(*args, **kwargs)
            prompt_width = (kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[1]
            sequences = output.sequences if hasattr(output, "sequences") else output
            self._record(sequences[:, prompt_width:])
            return output

        policy.generate = generate
        self._policy = policy

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._policy is not None:
            del self._policy.generate  # back to the class's method
            self._policy = None

    def _record(self, responses: torch.Tensor) -> None:
        is_eos = responses == self.eos_token_id
        ended = is_eos.any(dim=1)
        first_eos = is_eos.int().argmax(dim=1)
        lengths = torch.where(ended, first_eos + 1, torch.full_like(first_eos, responses.shape[1]))
        self._lengths.extend(lengths.tolist())
        self._eos.extend(ended.tolist())

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            logger.warning(message)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not logs or "objective/kl" not in logs:
            return
        if self._lengths:
            extra = {
                "ppo/response_length": sum(self._lengths) / len(self._lengths),
                "ppo/eos_rate": sum(self._eos) / len(self._eos),
            }
            logs.update(extra)
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(extra)
            self._lengths, self._eos = [], []
        kl, score = logs["objective/kl"], logs.get("objective/scores")
        self._recent_kls.append(kl)
        recent_kl = sum(self._recent_kls) / len(self._recent_kls)
        if recent_kl < -self.negative_kl_tolerance:
            self._warn(
                "negative_kl",
                f"PPO step {state.global_step}: objective/kl = {recent_kl:.4f} < 0 (averaged over the last "
                f"{len(self._recent_kls)} updates). The sampled KL estimate should stay positive: the reference "
                "differs from the policy's start or the prompts are padded on the right.",
            )
        if self.kl_alarm is not None and kl > self.kl_alarm:
            self._warn(
                "kl_alarm",
                f"PPO step {state.global_step}: objective/kl = {kl:.4f} passed --kl_alarm {self.kl_alarm}: the policy "
                "is drifting from the SFT model; raise --kl_coef or lower --learning_rate.",
            )
        if score is not None:
            self._recent_scores.append(score)
        if len(self._recent_scores) == self.window:
            recent = sum(self._recent_scores) / self.window
            self.best_score = max(self.best_score, recent)
            if self.reward_collapse_drop is not None and recent < self.best_score - self.reward_collapse_drop:
                self._warn(
                    "reward_collapse",
                    f"PPO step {state.global_step}: mean reward over the last {self.window} updates "
                    f"({recent:.3f}) fell more than {self.reward_collapse_drop} below its best "
                    f"({self.best_score:.3f}): reward collapse; lower --learning_rate or raise --kl_coef.",
                )


# ----------------------------------------------------------------------------------------------------------------
# Held-out win rate over the SFT model (ppo.py, dpo.py)
# ----------------------------------------------------------------------------------------------------------------


def held_out_win_rate(
    policy: PreTrainedModel,
    sft_model_path: str,
    reward_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict],
    *,
    max_new_tokens: int,
    batch_size: int,
    samples_file: str | None = None,
) -> dict[str, float]:
    """
    How the aligned `policy` and the SFT model it started from answer held-out prompts, under the reward model: the
    numbers `ppo.py` and `dpo.py` report in the same table (`hf_llm.evaluation.win_rate.compare_policies`).

    Args:
        policy (`PreTrainedModel`): The trained policy (a `PeftModel` under LoRA).
        sft_model_path (`str`): The SFT checkpoint, loaded fresh as the "before" policy.
        reward_model (`PreTrainedModel`): The judge (`hf_llm.evaluation.win_rate.load_reward_model`).
        tokenizer (`PreTrainedTokenizerBase`): The policy's tokenizer.
        examples (`list[dict]`): Held-out rows (their prompts).
        max_new_tokens (`int`): Most tokens per greedy answer.
        batch_size (`int`): Prompts per batch.
        samples_file (`str`, *optional*): Where to write each prompt's two answers and rewards (JSON Lines).

    Returns:
        `dict[str, float]`: `sft_mean_reward` (before), `mean_reward` (after), `mean_reward_margin`, `win_rate` (ties
        count one half), `response_length`, `sft_response_length`, `num_prompts`.
    """
    import json

    from transformers import AutoModelForCausalLM

    from hf_llm.evaluation.win_rate import compare_policies
    from hf_llm.loading import from_pretrained

    sft = from_pretrained(AutoModelForCausalLM, sft_model_path).to(next(policy.parameters()).device).eval()
    was_training = policy.training
    policy.eval()
    try:
        metrics, samples = compare_policies(
            policy, sft, reward_model, tokenizer, examples, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
    finally:
        policy.train(was_training)
    if samples_file is not None:
        with open(samples_file, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(sample, ensure_ascii=False) + "\n" for sample in samples)
    return {
        "sft_mean_reward": metrics["reference_mean_reward"],
        "mean_reward": metrics["mean_reward"],
        "mean_reward_margin": metrics["mean_reward_margin"],
        "win_rate": metrics["win_rate"],
        "response_length": metrics["response_length"],
        "sft_response_length": metrics["reference_response_length"],
        "num_prompts": metrics["num_prompts"],
    }
