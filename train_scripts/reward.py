"""Train a reward model on preference pairs (stage reward, the first half of RLHF).

Starts from the SFT model (`sft.py`'s output: a merged model or a LoRA adapter, merged here once), puts a one-output
`score` head on its last non-pad token (`AutoModelForSequenceClassification`, `num_labels=1`), and trains it with
TRL's `RewardTrainer` to score `prompt + chosen` above `prompt + rejected`. Plain-text prompts are rendered as the user
turn of the SFT model's chat template, so the reward model reads prompts exactly as the policy will write after them.
Pairwise accuracy and margin on the held-out pairs are logged at every evaluation (`eval_accuracy`, `eval_margin`).
Pairs longer than `--max_length` (default: the model's context) are counted and reported, then truncated (keeping the
end the head reads) or dropped by `--overlong_strategy`; never dropped in silence. LoRA (`--use_peft true`, task type
`SEQ_CLS`, so the new head is trained and saved) or full fine-tuning; `--merge_adapter` also writes
`OUTPUT_DIR/merged`.

Usage:

    # 2 CPU cores, a few minutes, on pydocs from the tiny SFT output
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/reward.py \
        --config train_scripts/configs/reward/tiny.yaml \
        --model_name_or_path outputs/sft-tiny --output_dir outputs/reward-tiny

    # Your own preference file (JSON Lines with prompt/chosen/rejected, or chosen/rejected conversations)
    accelerate launch --config_file accelerate_configs/single_gpu.yaml train_scripts/reward.py \
        --config train_scripts/configs/reward/gpt2-124m.yaml --model_name_or_path outputs/sft-gpt2 \
        --dataset_name data/prefs.jsonl --prompt_column question --chosen_column good --rejected_column bad \
        --output_dir outputs/reward-gpt2

Any recipe key can be overridden on the command line, e.g. `--max_steps 200 --learning_rate 1e-4`.
"""

from __future__ import annotations

from transformers.utils import logging
from trl import ModelConfig

import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)
from hf_llm.data import DataArguments, load_dataset_from_args
from hf_llm.errors import exit_on_user_error
from hf_llm.loading import load_sft_model_for_stage
from hf_llm.training import (
    RecipeParser,
    check_checkpoint_matches_model,
    final_eval_metrics,
    save_and_push,
    train_with_callbacks,
)
from hf_llm.training.alignment import prepare_preference_dataset, tokenize_reward_pairs
from hf_llm.training.finetuning import apply_cpu_safe_defaults, fit_max_length_to_model, get_stage_peft_config
from hf_llm.training.preflight import start_stage
from hf_llm.training.reward import AtomicRewardTrainer, RewardConfig

logger = logging.get_logger("hf_llm.reward")


def main(model_args: ModelConfig, data_args: DataArguments, training_args: RewardConfig) -> dict[str, float]:
    """Train a reward model; returns the final train and held-out metrics (`eval_accuracy`, `eval_margin`)."""
    resume_checkpoint = start_stage("reward", model_args, data_args, training_args)

    ###################
    # Dataset
    ###################
    with training_args.main_process_first(desc="loading the dataset"):
        raw = load_dataset_from_args(data_args, "preference", seed=training_args.seed)
        pairs = prepare_preference_dataset(raw, data_args.dataset_name)

    ###################
    # Model & tokenizer
    ###################
    with training_args.main_process_first(desc="preparing the SFT model"):
        sft_path, tokenizer, model = load_sft_model_for_stage(
            model_args,
            "reward",
            trust_remote_code=training_args.trust_remote_code,
            gradient_checkpointing=training_args.gradient_checkpointing,
            num_labels=1,
        )
    check_checkpoint_matches_model(resume_checkpoint, model)
    fit_max_length_to_model(training_args, model)
    peft_config = get_stage_peft_config(model_args, "reward")

    with training_args.main_process_first(desc="tokenizing"):
        splits = {
            split: tokenize_reward_pairs(
                rows,
                tokenizer,
                max_length=training_args.max_length,
                strategy=data_args.overlong_strategy,
                split=split,
            )
            for split, rows in pairs.items()
        }
    eval_dataset = splits.get("validation") if training_args.eval_strategy != "no" else None

    ###################
    # Training
    ###################
    trainer = AtomicRewardTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    train_metrics = train_with_callbacks(trainer, resume_from_checkpoint=resume_checkpoint)
    metrics = {**train_metrics, **final_eval_metrics(trainer)}

    ###################
    # Save and push
    ###################
    save_and_push(
        trainer,
        "reward",
        (model_args, data_args, training_args),
        raw,
        metrics,
        base_model=model_args.model_name_or_path,
    )
    return metrics


if __name__ == "__main__":
    parser = RecipeParser((ModelConfig, DataArguments, RewardConfig))
    apply_cpu_safe_defaults(parser)
    with exit_on_user_error("reward.py"):
        main(*parser.parse_args_and_config())
