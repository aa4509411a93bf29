"""Instruction-tune a pretrained GPT with TRL's `SFTTrainer` (stage 3b), with LoRA, QLoRA or in full.

Alpaca data (`instruction`, `input`, `output`) is rendered through the tokenizer's chat template (hf_llm's Alpaca
prompt) as prompt/completion pairs, so the loss covers the response and its eos, never the prompt; chat data
(`messages`) trains on the assistant turns only (`assistant_only_loss`, from the template's `{% generation %}`
markers). Examples whose prompt leaves no room for a response are counted and dropped (or refused with
`--overlong_strategy error`), never in silence. Each evaluation reports the response loss, its perplexity
(`eval_perplexity`), and `eval_bleu` of greedy answers to a fixed sample of validation instructions, whose
generations go to TensorBoard as text. `--packing` packs padding-free: on hf_llm's GPT, restarting `position_ids` keep
packed examples apart (TRL's warning that this needs Flash Attention does not apply to it).

Usage:

    # 2 CPU cores, a few minutes: the tiny pretraining output, LoRA on pydocs' instructions
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/sft.py \
        --config train_scripts/configs/sft/tiny.yaml \
        --model_name_or_path outputs/pretrain-tiny --output_dir outputs/sft-tiny

    # QLoRA (4-bit base + LoRA) on CPU
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/sft.py \
        --config train_scripts/configs/sft/tiny-qlora.yaml \
        --model_name_or_path outputs/pretrain-tiny --output_dir outputs/sft-tiny-qlora

    # An Alpaca-format JSON file, LoRA on GPT-2 (124M) on a GPU
    accelerate launch --config_file accelerate_configs/single_gpu.yaml train_scripts/sft.py \
        --config train_scripts/configs/sft/gpt2-124m.yaml --dataset_name data/alpaca.json --output_dir outputs/sft-gpt2

Any recipe key can be overridden on the command line, e.g. `--max_steps 200 --packing true`.
"""

from __future__ import annotations

from transformers.utils import logging
from trl import ModelConfig

import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)
from hf_llm.data import DataArguments, load_dataset_from_args
from hf_llm.errors import UsageError, exit_on_user_error
from hf_llm.loading import (
    load_model_for_stage,
    load_tokenizer_for_stage,
)
from hf_llm.training import (
    PerplexityCallback,
    RecipeParser,
    check_checkpoint_matches_model,
    final_eval_metrics,
    save_and_push,
    train_with_callbacks,
)
from hf_llm.training.finetuning import apply_cpu_safe_defaults, fit_max_length_to_model, get_stage_peft_config
from hf_llm.training.preflight import start_stage
from hf_llm.training.sft import (
    AtomicSFTTrainer,
    GenerationEvalCallback,
    SFTConfig,
    drop_prompts_without_room,
    to_sft_dataset,
)

logger = logging.get_logger("hf_llm.sft")


def main(model_args: ModelConfig, data_args: DataArguments, training_args: SFTConfig) -> dict[str, float]:
    """Run supervised fine-tuning; returns the final train, validation and test metrics."""
    resume_checkpoint = start_stage("sft", model_args, data_args, training_args)

    ###################
    # Model & tokenizer
    ###################
    with training_args.main_process_first(desc="preparing the base model"):
        tokenizer = load_tokenizer_for_stage(model_args, "sft", trust_remote_code=training_args.trust_remote_code)
        model = load_model_for_stage(
            model_args,
            "sft",
            tokenizer,
            trust_remote_code=training_args.trust_remote_code,
            gradient_checkpointing=training_args.gradient_checkpointing,
        )
    check_checkpoint_matches_model(resume_checkpoint, model)
    if tokenizer.chat_template is None:
        raise UsageError(
            f"the tokenizer of {model_args.model_name_or_path} has no chat template to render instructions with; "
            "start from a model trained with hf_llm (Alpaca template) or set tokenizer.chat_template and save it."
        )
    fit_max_length_to_model(training_args, model)
    peft_config = get_stage_peft_config(model_args, "sft")

    ###################
    # Dataset
    ###################
    with training_args.main_process_first(desc="loading the dataset"):
        raw = load_dataset_from_args(data_args, "instruction", seed=training_args.seed)
        splits = {
            split: drop_prompts_without_room(
                to_sft_dataset(dataset),
                tokenizer,
                training_args.max_length,
                strategy=data_args.overlong_strategy,
                split=split,
            )
            for split, dataset in raw.items()
        }
    if "messages" in splits["train"].column_names and not training_args.assistant_only_loss:
        logger.info("Chat data: training on the assistant turns only (assistant_only_loss)")
        training_args.assistant_only_loss = True
    if training_args.packing:
        logger.info(
            "Packing padding-free: hf_llm's GPT keeps packed examples apart through restarting position_ids on every "
            "attention kernel (TRL's Flash Attention warning below does not apply to it)."
        )
    eval_dataset = splits.get("validation") if training_args.eval_strategy != "no" else None

    ###################
    # Training
    ###################
    trainer = AtomicSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    callbacks = [PerplexityCallback()]
    if eval_dataset is not None and training_args.num_generation_samples > 0:
        sample = raw["validation"].select(range(min(training_args.num_generation_samples, len(raw["validation"]))))
        callbacks.append(
            GenerationEvalCallback(
                tokenizer,
                list(sample),
                max_new_tokens=training_args.generation_max_new_tokens,
                batch_size=training_args.per_device_eval_batch_size,
            )
        )
    train_metrics = train_with_callbacks(trainer, callbacks, resume_from_checkpoint=resume_checkpoint)
    metrics = {**train_metrics, **final_eval_metrics(trainer)}
    if "test" in splits:
        test_metrics = trainer.evaluate(splits["test"], metric_key_prefix="test")
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
        metrics.update(test_metrics)

    ###################
    # Save and push
    ###################
    save_and_push(
        trainer, "sft", (model_args, data_args, training_args), raw, metrics, base_model=model_args.model_name_or_path
    )
    return metrics


def make_parser() -> RecipeParser:
    """The script's parser: CPU-safe defaults, and LoRA unless `--use_peft false` (full fine-tuning)."""
    parser = RecipeParser((ModelConfig, DataArguments, SFTConfig))
    apply_cpu_safe_defaults(parser)
    parser.set_defaults_with_config(use_peft=True)
    return parser


if __name__ == "__main__":
    with exit_on_user_error("sft.py"):
        main(*make_parser().parse_args_and_config())
