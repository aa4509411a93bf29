"""Pretrain a GPT with next-token prediction on unlabeled text (stage 2).

Builds a `GPTForCausalLM` from a preset (or continues `--model_name_or_path`), trains it with `transformers.Trainer`
on any text dataset, evaluates `eval_loss` / `eval_perplexity` on the validation split, and saves model, tokenizer
and the resolved recipe (`recipe.yaml`) in `--output_dir`. Checkpoints are atomic, a NaN/Inf stops the run before
anything non-finite is saved, and `--resume_from_checkpoint latest` picks the newest complete checkpoint.

Usage:

    # 2 CPU cores, a few minutes, on the bundled pydocs corpus
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/pretrain.py \
        --config train_scripts/configs/pretrain/tiny.yaml --output_dir outputs/pretrain-tiny

    # GPT-2 small on 8 GPUs, streaming FineWeb-Edu, compiled
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml train_scripts/pretrain.py \
        --config train_scripts/configs/pretrain/gpt2-124m.yaml --output_dir outputs/gpt2-124m

Any recipe key can be overridden on the command line, e.g. `--max_steps 100 --learning_rate 3e-4`. With
`--streaming true` the dataset is read as a stream, tokenized and packed on the fly (each process reads its own share),
and checkpoints record where the stream stands, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import logging as std_logging

from transformers import default_data_collator, set_seed
from transformers.utils import logging

import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)
from hf_llm.data import DataArguments, load_dataset_from_args
from hf_llm.data.loading import load_text_stream
from hf_llm.errors import UsageError, exit_on_user_error
from hf_llm.evaluation.trainer_metrics import compute_causal_lm_metrics, preprocess_logits_for_causal_lm_metrics
from hf_llm.training import (
    AtomicCheckpointTrainer,
    ModelArguments,
    PerplexityCallback,
    PretrainConfig,
    RecipeParser,
    check_checkpoint_matches_model,
    check_output_dir,
    final_eval_metrics,
    prepare_tokenizer,
    save_and_push,
    train_with_callbacks,
)
from hf_llm.training.pretraining import (
    StreamingPretrainTrainer,
    build_or_load_causal_lm,
    check_pretraining_data_args,
    check_streaming_args,
    pack_for_pretraining,
    stream_for_pretraining,
)

logger = logging.get_logger("hf_llm.pretrain")


def main(model_args: ModelArguments, data_args: DataArguments, training_args: PretrainConfig) -> dict[str, float]:
    """Run pretraining; returns the final train and eval metrics."""
    if data_args.dataset_name is None:
        raise UsageError("no training data: pass --dataset_name (a Hub id, a local file or folder, or 'pydocs').")
    check_pretraining_data_args(data_args)
    check_streaming_args(model_args, data_args, training_args)
    set_seed(training_args.seed)
    # hf_llm's own loggers follow --log_level / --log_level_replica like transformers' (info on the main process only).
    std_logging.getLogger("hf_llm").setLevel(training_args.get_process_log_level())
    # Refuses an --output_dir holding another run or other files, before any work; None: a fresh start.
    resume_checkpoint = check_output_dir(training_args)

    ###################
    # Dataset
    ###################
    with training_args.main_process_first(desc="loading the dataset"):
        if data_args.streaming:
            raw = load_text_stream(data_args)
        else:
            raw = load_dataset_from_args(data_args, "text", seed=training_args.seed)

    ###################
    # Model & tokenizer
    ###################
    train_texts = None if data_args.streaming else raw["train"]
    tokenizer = prepare_tokenizer(model_args, training_args, train_texts, resume_checkpoint=resume_checkpoint)
    model = build_or_load_causal_lm(model_args, tokenizer, trust_remote_code=training_args.trust_remote_code)
    check_checkpoint_matches_model(resume_checkpoint, model)
    max_length = model.config.max_position_embeddings
    logger.info(
        f"Model: {model.num_parameters():,} parameters ({model.num_parameters(exclude_embeddings=True):,} "
        f"without embeddings), context {max_length}, vocabulary {model.config.vocab_size}"
    )
    if data_args.streaming:
        # Tokenized and packed on the fly; each process reads its own share. The validation blocks are read now.
        train_dataset, eval_dataset = stream_for_pretraining(
            raw,
            tokenizer,
            data_args,
            max_length=max_length,
            process_index=training_args.process_index,
            num_processes=training_args.world_size,
            with_validation=training_args.eval_strategy != "no",
        )
        collator, trainer_class = default_data_collator, StreamingPretrainTrainer
    else:
        with training_args.main_process_first(desc="tokenizing and packing"):
            splits, collator = pack_for_pretraining(
                raw, tokenizer, data_args, max_length=max_length, packing=training_args.packing
            )
        train_dataset, trainer_class = splits["train"], AtomicCheckpointTrainer
        eval_dataset = splits.get("validation") if training_args.eval_strategy != "no" else None

    ###################
    # Training
    ###################
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_causal_lm_metrics if eval_dataset is not None else None,
        preprocess_logits_for_metrics=preprocess_logits_for_causal_lm_metrics if eval_dataset is not None else None,
    )
    seq_length = (data_args.block_size or max_length) if training_args.packing == "blocks" else None
    train_metrics = train_with_callbacks(
        trainer, [PerplexityCallback()], resume_from_checkpoint=resume_checkpoint, seq_length=seq_length
    )
    metrics = {**train_metrics, **final_eval_metrics(trainer)}

    ###################
    # Save and push
    ###################
    save_and_push(
        trainer,
        "pretrain",
        (model_args, data_args, training_args),
        raw,
        metrics,
        base_model=model_args.model_name_or_path,
    )
    return metrics


if __name__ == "__main__":
    parser = RecipeParser((ModelArguments, DataArguments, PretrainConfig))
    with exit_on_user_error("pretrain.py"):
        main(*parser.parse_args_and_config())
