"""The run tail every training stage shares, and the rank-0 tokenizer preparation at its start.

Every stage script trains and finishes the same way: log the trainable parameters, add hf_llm's callbacks and train
([`train_with_callbacks`]); take the final evaluation, reusing the one the trainer just ran at the last step
([`final_eval_metrics`]); save model + tokenizer + `recipe.yaml` + `data_fingerprint.json`, write hf_llm's model card,
push once, and merge a LoRA adapter when `--merge_adapter` asks ([`save_and_push`]). So a stage's `main` reads as
TRL's `sft.py` does:

```python
train_metrics = train_with_callbacks(trainer, [PerplexityCallback()], resume_from_checkpoint=resume_checkpoint)
metrics = {**train_metrics, **final_eval_metrics(trainer)}
save_and_push(
    trainer, "sft", (model_args, data_args, training_args), raw, metrics, base_model=model_args.model_name_or_path
)
```
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging

from hf_llm.data import DataArguments, save_data_fingerprint
from hf_llm.errors import UsageError, one_line
from hf_llm.hub import create_model_card, push_output_dir
from hf_llm.loading import is_adapter, merge_trained_adapter, tokenizer_from_pretrained

from .arguments import ModelArguments
from .callbacks import NonFiniteGuardCallback, ThroughputCallback, add_callbacks
from .finetuning import count_trainable_parameters
from .pretraining import load_or_train_tokenizer, tokenizer_needs_training
from .recipes import recipe_dict, save_recipe

logger = logging.get_logger(__name__)

# What a checkpoint's `generation_config.json` says about decoding, as Hub models ship it (Llama: do_sample,
# temperature 0.6, top_p 0.9). Without `do_sample`, `transformers serve` and `pipeline()` decode greedily whatever
# `temperature` a request sends; a request's `temperature: 0` (or `generate(do_sample=False)`) still decodes greedily.
SAMPLING_DEFAULTS = {"do_sample": True, "temperature": 0.7, "top_p": 0.9}

POST_TRAINING_ERROR_NAME = "post_training_error.txt"


class EvaluationAfterSaveError(UsageError):
    """An evaluation after training failed; the model is saved. One line (exit 2) that says where it is: a rerun of
    the training would redo finished work, so the message, not a traceback, is what the user needs first."""


def prepare_tokenizer(
    model_args: ModelArguments,
    training_args: TrainingArguments,
    train_split: Dataset | None,
    *,
    resume_checkpoint: str | None = None,
) -> PreTrainedTokenizerBase:
    """
    The run's tokenizer, trained once per node: the main process trains it (when there is none to load) and saves it
    in `output_dir`; the other processes wait, then load that copy, so every rank has the same vocabulary.

    Args:
        model_args ([`ModelArguments`]): Tokenizer and model flags (see [`load_or_train_tokenizer`]).
        training_args (`TrainingArguments`): For `output_dir` and the process ranks.
        train_split (`datasets.Dataset`, *optional*): The training split with a `text` column, to train a tokenizer.
        resume_checkpoint (`str`, *optional*): A checkpoint being resumed: its tokenizer is reused.

    Returns:
        `PreTrainedTokenizerBase`: The tokenizer.
    """
    trains_tokenizer = resume_checkpoint is None and tokenizer_needs_training(model_args)
    with training_args.main_process_first(desc="preparing the tokenizer"):
        if trains_tokenizer and training_args.local_process_index != 0:
            # The node's main process went first, trained the tokenizer and saved it in output_dir.
            return tokenizer_from_pretrained(training_args.output_dir, flag="--output_dir")
        tokenizer = load_or_train_tokenizer(
            model_args,
            train_split,
            resume_checkpoint=resume_checkpoint,
            trust_remote_code=getattr(training_args, "trust_remote_code", False),
        )
        if trains_tokenizer:
            tokenizer.save_pretrained(training_args.output_dir)
    return tokenizer


def train_with_callbacks(
    trainer: Trainer,
    callbacks: Sequence[TrainerCallback] = (),
    *,
    resume_from_checkpoint: str | None = None,
    seq_length: int | None = None,
) -> dict[str, float]:
    """
    The training step of every stage script: log how many parameters train (a LoRA adapter's or all), put hf_llm's
    callbacks right after Trainer's flow control ([`~hf_llm.training.add_callbacks`]), train (resuming from
    `resume_from_checkpoint`), and log and save the train metrics (`train_results.json`).

    Every stage gets [`NonFiniteGuardCallback`] first (so no non-finite checkpoint is saved), then
    [`ThroughputCallback`] (tokens/s and MFU), then the stage's own `callbacks`.

    Args:
        trainer (`Trainer`): Any Trainer, TRL trainers included, before `train()`.
        callbacks (`Sequence[TrainerCallback]`, *optional*): The stage's own callbacks, in the order they run.
        resume_from_checkpoint (`str`, *optional*): The checkpoint to continue from (`check_stage_inputs` found it).
        seq_length (`int`, *optional*): Tokens per training sequence when every sequence has the same length (packed
            blocks), for [`ThroughputCallback`]'s FLOPs estimate.

    Returns:
        `dict[str, float]`: The train metrics (`train_loss`, `train_runtime`, ...).
    """
    trainable, total = count_trainable_parameters(trainer.model)
    what = "a LoRA adapter" if getattr(trainer.model, "peft_config", None) else "full training"
    logger.info(f"Training {trainable:,} of {total:,} parameters ({what})")
    add_callbacks(trainer, [NonFiniteGuardCallback(), ThroughputCallback(seq_length=seq_length), *callbacks])
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    return dict(train_result.metrics)


def final_eval_metrics(trainer: Trainer, metric_key_prefix: str = "eval") -> dict[str, float]:
    """
    The evaluation at the end of training: the one the trainer logged at the final step when there is one (no second
    pass over the data), else a fresh `trainer.evaluate()`. Logged and saved as `eval_results.json`.

    Args:
        trainer (`Trainer`): A trainer after `train()`; with no `eval_dataset` nothing is evaluated.
        metric_key_prefix (`str`, defaults to `"eval"`): Prefix of the metric names.

    Returns:
        `dict[str, float]`: The `eval_*` metrics, or `{}` when the trainer has no evaluation data.
    """
    if trainer.eval_dataset is None:
        return {}
    prefix = f"{metric_key_prefix}_"
    logged = [entry for entry in trainer.state.log_history if any(key.startswith(prefix) for key in entry)]
    if logged and logged[-1].get("step") == trainer.state.global_step:
        metrics = {key: value for key, value in logged[-1].items() if key.startswith(prefix)}
    else:
        metrics = trainer.evaluate(metric_key_prefix=metric_key_prefix)
    trainer.log_metrics(metric_key_prefix, metrics)
    trainer.save_metrics(metric_key_prefix, metrics)
    return metrics


def save_and_push(
    trainer: Trainer,
    stage: str,
    recipe_args: Sequence[Any],
    dataset: DatasetDict,
    metrics: dict[str, Any],
    *,
    base_model: str | None = None,
    output_dir: str | None = None,
    evaluate_saved_model: Callable[[], dict[str, float]] | None = None,
) -> str:
    """
    Save a finished run and push it once: model (or adapter) + tokenizer via `trainer.save_model`, the trainer state,
    `recipe.yaml`, `data_fingerprint.json` and hf_llm's model card; with `--push_to_hub`, one commit of all of it. A
    causal LM whose generation config does not sample gets [`SAMPLING_DEFAULTS`] in its `generation_config.json`.

    Evaluations that need the trained model but are not part of training (the held-out win rate) run only after the
    model is saved and pushed, through `evaluate_saved_model`, so their failure never costs the model: it ends in one
    line saying where the model is and what failed (the traceback goes to `post_training_error.txt` beside it). On
    success their metrics join the card (and a second push carries it).

    Trainer's own end-of-training push is skipped (`_internal_call=True`): the single push here carries the card and
    the recipe next to the weights. Last, with `--merge_adapter` ([`FineTuningOutputArguments`]), the saved adapter is
    merged into a standalone model in `OUTPUT_DIR/merged` (not pushed).

    Args:
        trainer (`Trainer`): The trainer after `train()` (any TRL trainer works).
        stage (`str`): The stage name (`hf_llm.stages.STAGE_NAMES`), a model-card tag.
        recipe_args (`Sequence`): Every parsed argument dataclass of the run, written as `recipe.yaml`; its
            [`DataArguments`] are recorded with the data fingerprint.
        dataset (`DatasetDict`): The splits the run trained and evaluated on (before tokenization).
        metrics (`dict[str, Any]`): The run's metrics; the card shows the `eval_*` ones and `train_loss`.
        base_model (`str`, *optional*): The model this run started from (a path or Hub id), named in the card.
        output_dir (`str`, *optional*): Where to save; defaults to `trainer.args.output_dir`.
        evaluate_saved_model (`Callable`, *optional*): Run on the main process after the save and push; returns
            metrics (without the `eval_` prefix, which the card adds).

    Returns:
        `str`: The output directory.

    Raises:
        [`EvaluationAfterSaveError`]: When `evaluate_saved_model` fails; the model is saved.
    """
    args = trainer.args
    output_dir = output_dir or args.output_dir
    data_args = next(arguments for arguments in recipe_args if isinstance(arguments, DataArguments))
    generation_config = getattr(trainer.model, "generation_config", None)  # None for classifiers and reward models
    if generation_config is not None and not generation_config.do_sample:
        generation_config.update(**SAMPLING_DEFAULTS)
    trainer.save_model(output_dir, _internal_call=True)
    trainer.save_state()
    if not trainer.is_world_process_zero():
        return output_dir

    def card_and_push(commit_message: str) -> None:
        create_model_card(
            output_dir,
            stage=stage,
            base_model=base_model,
            dataset_name=data_args.dataset_name,
            metrics={key: value for key, value in metrics.items() if key.startswith("eval_") or key == "train_loss"},
            recipe=recipe_dict(*recipe_args),
            hub_model_id=args.hub_model_id,
        )
        if args.push_to_hub:
            push_output_dir(
                output_dir,
                args.hub_model_id,
                private=bool(args.hub_private_repo),
                token=args.hub_token,
                commit_message=commit_message,
            )

    save_recipe(output_dir, *recipe_args)
    save_data_fingerprint(output_dir, data_args, dataset)
    card_and_push(f"End of the {stage} stage")
    logger.info(f"Saved the {stage} model to {os.path.abspath(output_dir)}")
    if evaluate_saved_model is not None:
        try:
            extra = evaluate_saved_model()
        except Exception as error:
            error_file = os.path.join(output_dir, POST_TRAINING_ERROR_NAME)
            with open(error_file, "w", encoding="utf-8") as file:
                file.write(traceback.format_exc())
            raise EvaluationAfterSaveError(
                f"the {stage} model is saved in {os.path.abspath(output_dir)}, but the evaluation after training "
                f"failed: {type(error).__name__}: {one_line(error)} (traceback in {error_file})"
            ) from error
        metrics.update({f"eval_{key}": value for key, value in extra.items()})
        card_and_push(f"{stage} stage: evaluation after training")
    if getattr(args, "merge_adapter", False):
        model_config = getattr(trainer.accelerator.unwrap_model(trainer.model), "config", None)
        merge_trained_adapter(
            output_dir,
            stage,
            trained_with_peft=is_adapter(output_dir),
            num_labels=getattr(model_config, "num_labels", None),  # a classifier or reward adapter's head
            trust_remote_code=getattr(args, "trust_remote_code", False),
        )
    return output_dir
