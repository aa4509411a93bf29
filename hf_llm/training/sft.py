"""The pieces of `train_scripts/sft.py`: its config, the data it hands TRL's `SFTTrainer`, and the generation eval.

Alpaca rows (`instruction`, `input`, `output`) become TRL's conversational prompt/completion pairs, rendered by the
tokenizer's chat template (hf_llm's Alpaca template), so the loss covers the response (and the eos the template ends
it with) and never the prompt. Chat rows (`messages`) stay conversations, trained with `assistant_only_loss`, which
the template's `{% generation %}` markers make possible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TrainerCallback
from transformers.utils import logging
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

from hf_llm.data import DataError
from hf_llm.data.formatting import alpaca_messages, split_off_answer
from hf_llm.data.validation import OverlongReport, handle_overlong_completions
from hf_llm.errors import UsageError

from .callbacks import _add_to_logs
from .checkpointing import AtomicCheckpointMixin
from .output_dir import FineTuningOutputArguments

logger = logging.get_logger(__name__)


@dataclass
class SFTConfig(FineTuningOutputArguments, TRLSFTConfig):
    """
    TRL's `SFTConfig` (every flag works unchanged), [`FineTuningOutputArguments`] (`--overwrite_output_dir`,
    `--merge_adapter`) and hf_llm's options for the `sft` stage.

    Args:
        num_generation_samples (`int`, defaults to 16):
            At every evaluation, greedy generations for the first N validation instructions are scored with BLEU
            (`eval_bleu`) and logged as TensorBoard text. 0 turns it off.
        generation_max_new_tokens (`int`, defaults to 64):
            Most new tokens per generation.
    """

    num_generation_samples: int = field(
        default=16, metadata={"help": "Validation instructions generated and scored with BLEU at each evaluation."}
    )
    generation_max_new_tokens: int = field(default=64, metadata={"help": "Most new tokens per generation."})

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("--push_to_hub needs --hub_model_id, e.g. --hub_model_id your-name/gpt-sft.")
        if self.num_generation_samples < 0:
            raise UsageError(f"--num_generation_samples must be >= 0, got {self.num_generation_samples}.")
        super().__post_init__()


def _conversational(example: dict) -> dict:
    if example.get("messages"):
        messages = list(example["messages"])
        split_off_answer(messages)  # refuses a conversation that does not end with the assistant's answer
        empty = [i for i, m in enumerate(messages) if m["role"] == "assistant" and not (m["content"] or "").strip()]
        if empty:
            raise DataError(
                f"a 'messages' example has an empty assistant message (message {empty[0]}): there is no response to "
                "train on; remove the example or fill in the answer."
            )
        return {"messages": messages}
    if not (example["output"] or "").strip():
        raise DataError(
            f"example with instruction {example['instruction'][:60]!r} has an empty 'output': there is no response to "
            "train on; remove it or fill in the answer."
        )
    return {
        "prompt": alpaca_messages(example["instruction"], example.get("input") or ""),
        "completion": [{"role": "assistant", "content": example["output"]}],
    }


def to_sft_dataset(dataset: Dataset) -> Dataset:
    """
    Turn one split of the `instruction` data format into TRL's conversational format: Alpaca rows into
    `prompt`/`completion` message lists, `messages` rows kept as they are (checked: the last message is a non-empty
    assistant answer).

    Raises:
        `DataError`: An example with no response to train on.
    """
    columns = dataset.column_names
    if "messages" in columns:
        return dataset.map(_conversational, remove_columns=[c for c in columns if c != "messages"])
    return dataset.map(_conversational, remove_columns=columns)


def prompt_lengths(dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """
    Token counts of each example's prompt (up to and including the assistant turn's opening) and of the whole
    example, as the chat template renders them.

    Returns:
        `tuple[list[int], list[int]]`: prompt lengths, full lengths.
    """
    prompts, fulls = [], []
    for example in dataset:
        if example.get("messages"):
            prompt, full = example["messages"][:-1], example["messages"]
        else:
            prompt, full = example["prompt"], example["prompt"] + example["completion"]
        prompts.append(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False))
        fulls.append(tokenizer.apply_chat_template(full, tokenize=False))
    # Rendered once, tokenized in one fast batch (the template adds no special tokens of its own beyond the text).
    count = [len(ids) for ids in tokenizer(prompts + fulls, add_special_tokens=False, verbose=False)["input_ids"]]
    return count[: len(prompts)], count[len(prompts) :]


def drop_prompts_without_room(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, *, strategy: str, split: str
) -> Dataset:
    """
    `--overlong_strategy` for SFT ([`hf_llm.data.validation.handle_overlong_completions`]): with `truncate`, examples
    longer than `max_length` are counted and train on their first `max_length` tokens, and those whose prompt leaves no
    room for a response are dropped (TRL would drop them with only a progress bar); `drop` and `error` apply to every
    over-long example.

    Args:
        dataset (`Dataset`): A split from [`to_sft_dataset`].
        tokenizer (`PreTrainedTokenizerBase`): With the chat template.
        max_length (`int`): TRL's `max_length`.
        strategy (`str`): `--overlong_strategy`.
        split (`str`): The split's name, for the messages.

    Returns:
        `Dataset`: The examples that keep at least one response token.
    """
    prompts, fulls = prompt_lengths(dataset, tokenizer)
    return handle_overlong_completions(
        dataset,
        prompts,
        fulls,
        max_length,
        strategy,
        OverlongReport(
            "examples",
            f"--max_length {max_length} tokens",
            "raise --max_length (at most the model's context) or shorten the texts",
            split,
        ),
    )


class GenerationEvalCallback(TrainerCallback):
    """
    At every evaluation, generate greedy answers for a fixed sample of held-out instructions, score them against the
    references with BLEU (`eval_bleu`, sacrebleu's 0-100 corpus BLEU from `eval/metrics/bleu`), and log the
    generations as TensorBoard text (`eval/generations`). Runs before the reporting integrations when added with
    `hf_llm.training.add_callbacks`, so `eval_bleu` reaches TensorBoard and `trainer_state.json`.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): With the chat template.
        examples (`list[dict]`): Rows of the `instruction` data format (Alpaca or `messages`).
        max_new_tokens (`int`, defaults to 64): Most new tokens per answer.
        batch_size (`int`, defaults to 8): Prompts generated together.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        examples: list[dict],
        *,
        max_new_tokens: int = 64,
        batch_size: int = 8,
    ):
        from hf_llm.data.formatting import instruction_prompt_and_reference

        pairs = [instruction_prompt_and_reference(example, tokenizer) for example in examples]
        self.tokenizer = tokenizer
        self.prompts = [prompt for prompt, _ in pairs]
        self.references = [reference for _, reference in pairs]
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self._bleu = None
        self._writer = None
        self.last_generations: list[str] = []

    def generate(self, model) -> list[str]:
        """Greedy answers of `model` for the sample's prompts."""
        from hf_llm.evaluation.inference import generate_greedy, greedy_decoding

        generation_config = greedy_decoding(self.max_new_tokens, self.tokenizer)
        was_training = model.training
        model.eval()
        try:
            generations, _ = generate_greedy(
                model,
                self.tokenizer,
                self.prompts,
                generation_config,
                self.batch_size,
                model.config.max_position_embeddings,
            )
        finally:
            model.train(was_training)
        return generations

    def bleu(self, generations: list[str]) -> float:
        """Corpus BLEU (0-100) of `generations` against the sample's references."""
        if self._bleu is None:
            from hf_llm.evaluation import load_metric

            self._bleu = load_metric("bleu")
        return self._bleu.compute(predictions=generations, references=[[r] for r in self.references])["bleu"]

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not logs or "eval_loss" not in logs or model is None or not self.prompts:
            return
        with torch.no_grad():
            generations = self.generate(model)
        self.last_generations = generations
        _add_to_logs(logs, state, {"eval_bleu": self.bleu(generations)})
        if state.is_world_process_zero and args.report_to and "tensorboard" in args.report_to:
            self._log_text(args, state.global_step, generations)

    def _log_text(self, args, step: int, generations: list[str]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # Its own TensorBoard run next to Trainer's (`runs/<date>_<host>`), which a callback cannot reach.
            log_dir = os.getenv("TENSORBOARD_LOGGING_DIR") or os.path.join(args.output_dir, "runs")
            self._writer = SummaryWriter(log_dir=os.path.join(log_dir, "generations"))
        rows = ["| # | instruction | reference | generation |", "|---|---|---|---|"]
        for i, (prompt, reference, generation) in enumerate(
            zip(self.prompts, self.references, generations, strict=True)
        ):
            instruction = prompt.split("### Instruction:\n", 1)[-1].split("\n\n### Response:", 1)[0]
            rows.append(f"| {i} | {_cell(instruction)} | {_cell(reference)} | {_cell(generation)} |")
        self._writer.add_text("eval/generations", "\n".join(rows), global_step=step)
        self._writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def completion_token_counts(dataset: Dataset) -> np.ndarray:
    """Scored tokens (labels != -100) per example of a dataset `SFTTrainer` prepared."""
    return np.array([sum(label != -100 for label in labels) for labels in dataset["labels"]])


class AtomicSFTTrainer(AtomicCheckpointMixin, SFTTrainer):
    """TRL's `SFTTrainer` with atomic checkpoints."""
