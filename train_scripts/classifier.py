"""Fine-tune a pretrained GPT into a text classifier (stage 3a), with LoRA, QLoRA or in full.

Loads `--model_name_or_path` (a `pretrain.py` output, a Hub repo id, or a GPT-2 checkpoint such as
`openai-community/gpt2`, converted to hf_llm's GPT) as `AutoModelForSequenceClassification` with a new `score` head
on the last non-pad token; classes come from the dataset (`ClassLabel` names, sorted string labels, or
`--class_names`). Trains with `transformers.Trainer`, reports accuracy and macro-F1 on the validation split at every
evaluation, keeps the best checkpoint, and evaluates the test split at the end, beside a majority-class and a TF-IDF +
logistic-regression baseline fitted on the same train split (`test_tfidf_accuracy`, `test_accuracy_minus_tfidf`, and a
warning when the classifier does not beat TF-IDF). LoRA (TRL's `ModelConfig`:
`--use_peft true --lora_r 8 ...`) saves an adapter with its `score` head; `--merge_adapter` adds a standalone merged
model in `OUTPUT_DIR/merged`.

Usage:

    # 2 CPU cores, a few minutes: the tiny pretraining output, fine-tuned in full on pydocs' 6 topics
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/classifier.py \
        --config train_scripts/configs/classifier/tiny.yaml \
        --model_name_or_path outputs/pretrain-tiny --output_dir outputs/classifier-tiny

    # QLoRA (4-bit base + LoRA) on CPU
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/classifier.py \
        --config train_scripts/configs/classifier/tiny-qlora.yaml \
        --model_name_or_path outputs/pretrain-tiny --output_dir outputs/classifier-tiny-qlora

    # Your own CSV with `text` and `label` columns, LoRA on GPT-2 (124M) on a GPU
    accelerate launch --config_file accelerate_configs/single_gpu.yaml train_scripts/classifier.py \
        --config train_scripts/configs/classifier/gpt2-124m.yaml --dataset_name data/reviews.csv \
        --text_column review --label_column stars --output_dir outputs/reviews-gpt2

Any recipe key can be overridden on the command line, e.g. `--num_train_epochs 5 --class_weights balanced`.
"""

from __future__ import annotations

from transformers import DataCollatorWithPadding, EarlyStoppingCallback
from transformers.utils import logging
from trl import ModelConfig

import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)
from hf_llm.data import DataArguments, load_dataset_from_args
from hf_llm.errors import UsageError, exit_on_user_error
from hf_llm.evaluation.trainer_metrics import compute_classification_metrics, preprocess_logits_for_classification
from hf_llm.loading import (
    load_model_for_stage,
    load_tokenizer_for_stage,
)
from hf_llm.training import (
    AtomicCheckpointTrainer,
    RecipeParser,
    check_checkpoint_matches_model,
    final_eval_metrics,
    save_and_push,
    train_with_callbacks,
)
from hf_llm.training.classifier import (
    ClassificationBaselines,
    ClassifierConfig,
    balanced_class_weights,
    save_labels,
    tokenize_for_classification,
    weighted_cross_entropy,
)
from hf_llm.training.finetuning import apply_cpu_safe_defaults, get_stage_peft_config
from hf_llm.training.preflight import start_stage

logger = logging.get_logger("hf_llm.classifier")


def main(model_args: ModelConfig, data_args: DataArguments, training_args: ClassifierConfig) -> dict[str, float]:
    """Fine-tune a classifier; returns the final train, validation and test metrics."""
    resume_checkpoint = start_stage("classifier", model_args, data_args, training_args)

    ###################
    # Dataset
    ###################
    with training_args.main_process_first(desc="loading the dataset"):
        raw = load_dataset_from_args(data_args, "classification", seed=training_args.seed)
    class_names = raw["train"].features["label"].names
    id2label = dict(enumerate(class_names))
    logger.info(f"{len(class_names)} classes: {class_names}")

    ###################
    # Model & tokenizer
    ###################
    with training_args.main_process_first(desc="preparing the base model"):
        tokenizer = load_tokenizer_for_stage(
            model_args, "classifier", trust_remote_code=training_args.trust_remote_code
        )
        model = load_model_for_stage(
            model_args,
            "classifier",
            tokenizer,
            trust_remote_code=training_args.trust_remote_code,
            gradient_checkpointing=training_args.gradient_checkpointing,
            num_labels=len(class_names),
            id2label=id2label,
            label2id={name: i for i, name in id2label.items()},
        )
    check_checkpoint_matches_model(resume_checkpoint, model)
    peft_config = get_stage_peft_config(model_args, "classifier")
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)

    with training_args.main_process_first(desc="tokenizing"):
        splits = tokenize_for_classification(
            raw, tokenizer, data_args, max_length=model.config.max_position_embeddings
        )
    eval_dataset = splits.get("validation") if training_args.eval_strategy != "no" else None
    if eval_dataset is None and training_args.load_best_model_at_end:
        raise UsageError(
            "--load_best_model_at_end needs a validation split: pass --dataset_validation_split or "
            "--validation_split_percentage above 0, or --load_best_model_at_end false."
        )

    ###################
    # Training
    ###################
    compute_loss_func = None
    if training_args.class_weights == "balanced":
        weights = balanced_class_weights(splits["train"]["label"], len(class_names))
        logger.info(f"Class weights: {dict(zip(class_names, weights.tolist(), strict=True))}")
        compute_loss_func = weighted_cross_entropy(weights)
    trainer = AtomicCheckpointTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_loss_func=compute_loss_func,
        compute_metrics=compute_classification_metrics,
        preprocess_logits_for_metrics=preprocess_logits_for_classification,
    )
    callbacks = []
    if training_args.early_stopping_patience is not None:
        callbacks.append(
            EarlyStoppingCallback(training_args.early_stopping_patience, training_args.early_stopping_threshold)
        )
    metrics = train_with_callbacks(trainer, callbacks, resume_from_checkpoint=resume_checkpoint)
    # Majority-class and TF-IDF baselines, fitted on the same train split, beside every evaluated split's scores.
    baselines = ClassificationBaselines(raw, seed=training_args.seed) if trainer.is_world_process_zero() else None
    if eval_dataset is not None:
        # With load_best_model_at_end the last logged evaluation may not be the reloaded best model's: evaluate again.
        eval_metrics = trainer.evaluate() if training_args.load_best_model_at_end else final_eval_metrics(trainer)
        eval_metrics.update(baselines.metrics("validation", eval_metrics, "eval") if baselines else {})
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if "test" in splits:
        test_metrics = trainer.evaluate(splits["test"], metric_key_prefix="test")
        test_metrics.update(baselines.metrics("test", test_metrics, "test") if baselines else {})
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
        metrics.update(test_metrics)
    if baselines is not None:
        baselines.log_verdict(metrics)

    ###################
    # Save and push
    ###################
    if trainer.is_world_process_zero() and peft_config is not None:
        save_labels(training_args.output_dir, id2label)  # before the push: the adapter's classes travel with it
    save_and_push(
        trainer,
        "classifier",
        (model_args, data_args, training_args),
        raw,
        metrics,
        base_model=model_args.model_name_or_path,
    )
    return metrics


def make_parser() -> RecipeParser:
    """The script's parser: CPU-safe defaults, and LoRA unless `--use_peft false` (full fine-tuning)."""
    parser = RecipeParser((ModelConfig, DataArguments, ClassifierConfig))
    apply_cpu_safe_defaults(parser)
    parser.set_defaults_with_config(use_peft=True)
    return parser


if __name__ == "__main__":
    with exit_on_user_error("classifier.py"):
        main(*make_parser().parse_args_and_config())
