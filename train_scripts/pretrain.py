"""Pretrain a GPT with next-token prediction on unlabeled text (stage 2).

Builds a `GPTForCausalLM` from a preset (or continues `--model_name_or_path`), trains it with `transformers.Trainer`
on any text dataset, evaluates `eval_loss` / `eval_perplexity` on the validation split, and saves model, tokenizer
and the resolved recipe (`recipe.yaml`) in `--output_dir`. Checkpoints are atomic, a NaN/Inf stops the run before
anything non-finite is saved, and `--resume_from_checkpoint latest` picks the newest complete checkpoint.

Usage:

    # 2 CPU cores, a few minutes, on the bundled pydocs corpus
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/pretrain.py \
        --config train_scripts/configs/pretrain/tiny.yaml --output_dir outputs/pretrain-tiny

    # GPT-2 small on 8 GPUs
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml train_scripts/pretrain.py \
        --config train_scripts/configs/pretrain/gpt2-124m.yaml --output_dir outputs/gpt2-124m

Any recipe key can be overridden on the command line, e.g. `--max_steps 100 --learning_rate 3e-4`.
"""

from __future__ import annotations

import logging as std_logging
import sys

from transformers import AutoTokenizer, set_seed
from transformers.utils import logging
from trl import TrlParser

import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)
from hf_llm.data import DataArguments, load_dataset_from_args, save_data_fingerprint
from hf_llm.evaluation.trainer_metrics import compute_causal_lm_metrics, preprocess_logits_for_causal_lm_metrics
from hf_llm.hub import create_model_card, push_output_dir
from hf_llm.training import (
    AtomicCheckpointTrainer,
    ModelArguments,
    NonFiniteError,
    NonFiniteGuardCallback,
    PerplexityCallback,
    PretrainConfig,
    ThroughputCallback,
    add_callbacks,
    recipe_dict,
    resolve_resume_checkpoint,
    save_recipe,
)
from hf_llm.training.pretraining import (
    build_or_load_causal_lm,
    load_or_train_tokenizer,
    pack_for_pretraining,
    tokenizer_needs_training,
)

logger = logging.get_logger("hf_llm.pretrain")


def main(model_args: ModelArguments, data_args: DataArguments, training_args: PretrainConfig) -> dict[str, float]:
    """Run pretraining; returns the final train and eval metrics."""
    if data_args.dataset_name is None:
        raise ValueError("no training data: pass --dataset_name (a Hub id, a local file or folder, or 'pydocs').")
    set_seed(training_args.seed)
    # hf_llm's own loggers follow --log_level / --log_level_replica like transformers' (info on the main process only).
    std_logging.getLogger("hf_llm").setLevel(training_args.get_process_log_level())
    resume_checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)

    ###################
    # Dataset
    ###################
    with training_args.main_process_first(desc="loading the dataset"):
        raw = load_dataset_from_args(data_args, "pretrain", seed=training_args.seed)

    ###################
    # Model & tokenizer
    ###################
    trains_tokenizer = resume_checkpoint is None and tokenizer_needs_training(model_args)
    with training_args.main_process_first(desc="preparing the tokenizer"):
        if trains_tokenizer and training_args.local_process_index != 0:
            # The node's main process went first, trained the tokenizer and saved it in output_dir.
            tokenizer = AutoTokenizer.from_pretrained(training_args.output_dir)
        else:
            tokenizer = load_or_train_tokenizer(model_args, raw["train"], resume_checkpoint=resume_checkpoint)
            if trains_tokenizer:
                tokenizer.save_pretrained(training_args.output_dir)
    model = build_or_load_causal_lm(model_args, tokenizer)
    max_length = model.config.max_position_embeddings
    logger.info(
        f"Model: {model.num_parameters():,} parameters ({model.num_parameters(exclude_embeddings=True):,} "
        f"without embeddings), context {max_length}, vocabulary {model.config.vocab_size}"
    )

    with training_args.main_process_first(desc="tokenizing and packing"):
        splits, collator = pack_for_pretraining(
            raw, tokenizer, data_args, max_length=max_length, packing=training_args.packing
        )
    eval_dataset = splits.get("validation") if training_args.eval_strategy != "no" else None

    ###################
    # Training
    ###################
    trainer = AtomicCheckpointTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_causal_lm_metrics if eval_dataset is not None else None,
        preprocess_logits_for_metrics=preprocess_logits_for_causal_lm_metrics if eval_dataset is not None else None,
    )
    seq_length = (data_args.block_size or max_length) if training_args.packing == "blocks" else None
    add_callbacks(trainer, [NonFiniteGuardCallback(), ThroughputCallback(seq_length=seq_length), PerplexityCallback()])
    train_result = trainer.train(resume_from_checkpoint=resume_checkpoint)
    metrics = dict(train_result.metrics)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)

    if eval_dataset is not None:
        evaluated_now = [e for e in trainer.state.log_history if "eval_loss" in e]
        if evaluated_now and evaluated_now[-1].get("step") == trainer.state.global_step:
            eval_metrics = {k: v for k, v in evaluated_now[-1].items() if k.startswith("eval_")}
        else:
            eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)

    ###################
    # Save and push
    ###################
    # Model + tokenizer. `_internal_call=True` stops Trainer's own push here: the one final push below carries
    # hf_llm's model card and the recipe.
    trainer.save_model(training_args.output_dir, _internal_call=True)
    trainer.save_state()
    if trainer.is_world_process_zero():
        save_recipe(training_args.output_dir, model_args, data_args, training_args)
        save_data_fingerprint(training_args.output_dir, data_args, raw)
        create_model_card(
            training_args.output_dir,
            stage="pretraining",
            base_model=model_args.model_name_or_path,
            dataset_name=data_args.dataset_name,
            metrics={k: v for k, v in metrics.items() if k.startswith("eval_") or k == "train_loss"},
            recipe=recipe_dict(model_args, data_args, training_args),
            hub_model_id=training_args.hub_model_id,
        )
        if training_args.push_to_hub:
            # One final commit with hf_llm's model card (remote-code snippet) and the recipe next to the model.
            push_output_dir(
                training_args.output_dir,
                training_args.hub_model_id,
                private=bool(training_args.hub_private_repo),
                token=training_args.hub_token,
                commit_message="End of pretraining",
            )
    return metrics


if __name__ == "__main__":
    parser = TrlParser((ModelArguments, DataArguments, PretrainConfig))
    try:
        model_args, data_args, training_args = parser.parse_args_and_config()
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    try:
        main(model_args, data_args, training_args)
    except (ValueError, FileNotFoundError, NonFiniteError) as err:
        print(f"pretrain.py: error: {err}", file=sys.stderr)
        sys.exit(1)
