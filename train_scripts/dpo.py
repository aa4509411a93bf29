"""Align the SFT model with Direct Preference Optimization (stage dpo, the offline alternative to reward + PPO).

Trains the SFT model (`sft.py`'s output: a merged model or a LoRA adapter, merged here once) with TRL's `DPOTrainer`
on the same preference pairs as `reward.py`, prompts rendered with the SFT model's chat template. With LoRA
(`--use_peft true`) the reference is the policy with its adapter disabled; in full fine-tuning it is an explicit frozen
copy of the SFT model. DPO's implicit-reward accuracy and margins (`rewards/accuracies`, `rewards/margins`) are logged
at every evaluation. After training, greedy answers of the SFT model (before) and of the DPO policy (after) to held-out
prompts are scored with `--reward_model_path` (a `reward.py` output): mean reward before and after, and the win rate
over the SFT model (`win_rate_results.json`, `win_rate_samples.jsonl`), the same table PPO reports.

Pairs longer than `--max_length` (default: the model's context) are counted and reported: with the default
`--overlong_strategy truncate` DPO trains on their first `max_length` tokens (pairs whose prompt leaves no room for an
answer are dropped, and counted); `drop` removes them; `error` refuses the data.

Usage:

    # 2 CPU cores, a few minutes, on pydocs from the tiny SFT output
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/dpo.py \
        --config train_scripts/configs/dpo/tiny.yaml --model_name_or_path outputs/sft-tiny \
        --reward_model_path outputs/reward-tiny --output_dir outputs/dpo-tiny

Any recipe key can be overridden on the command line, e.g. `--beta 0.05 --use_peft true`.
"""

from __future__ import annotations

import os

from transformers.utils import logging
from trl import ModelConfig

import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)
from hf_llm.data import DataArguments, load_dataset_from_args
from hf_llm.errors import exit_on_user_error
from hf_llm.loading import load_reference_model, load_reward_model, load_sft_model_for_stage
from hf_llm.training import (
    RecipeParser,
    check_checkpoint_matches_model,
    final_eval_metrics,
    save_and_push,
    train_with_callbacks,
)
from hf_llm.training.alignment import count_overlong_dpo_pairs, held_out_win_rate, prepare_preference_dataset
from hf_llm.training.dpo import AtomicDPOTrainer, DPOConfig
from hf_llm.training.finetuning import apply_cpu_safe_defaults, fit_max_length_to_model, get_stage_peft_config
from hf_llm.training.preflight import start_stage

logger = logging.get_logger("hf_llm.dpo")


def main(model_args: ModelConfig, data_args: DataArguments, training_args: DPOConfig) -> dict[str, float]:
    """Run DPO; returns the final train, held-out and win-rate metrics."""
    resume_checkpoint = start_stage(
        "dpo", model_args, data_args, training_args, {"--reward_model_path": training_args.reward_model_path}
    )

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
            "dpo",
            trust_remote_code=training_args.trust_remote_code,
            gradient_checkpointing=training_args.gradient_checkpointing,
        )
        peft_config = get_stage_peft_config(model_args, "dpo")
        ref_model = load_reference_model(model_args, "dpo", tokenizer, sft_path, uses_peft=peft_config is not None)
        reward_model = None
        if training_args.reward_model_path and training_args.win_rate_samples > 0:
            reward_model = load_reward_model(training_args.reward_model_path)
    check_checkpoint_matches_model(resume_checkpoint, model)
    fit_max_length_to_model(training_args, model)
    with training_args.main_process_first(desc="counting over-long pairs"):
        splits = {
            split: count_overlong_dpo_pairs(
                rows,
                tokenizer,
                max_length=training_args.max_length,
                strategy=data_args.overlong_strategy,
                split=split,
            )
            for split, rows in pairs.items()
        }
    eval_dataset = splits.get("validation") if training_args.eval_strategy != "no" else None
    held_out = list(splits.get("validation", [])) if reward_model is not None else []
    held_out = held_out[: training_args.win_rate_samples]

    ###################
    # Training
    ###################
    trainer = AtomicDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    train_metrics = train_with_callbacks(trainer, resume_from_checkpoint=resume_checkpoint)
    metrics = {**train_metrics, **final_eval_metrics(trainer)}

    def score_win_rate() -> dict[str, float]:
        # Greedy answers of the SFT model (before) and the DPO policy (after), scored by the reward model.
        win_rate = held_out_win_rate(
            trainer.accelerator.unwrap_model(trainer.model),
            sft_path,
            reward_model,
            tokenizer,
            held_out,
            max_new_tokens=training_args.win_rate_max_new_tokens,
            batch_size=training_args.per_device_eval_batch_size,
            samples_file=os.path.join(training_args.output_dir, "win_rate_samples.jsonl"),
        )
        trainer.log_metrics("win_rate", win_rate)
        trainer.save_metrics("win_rate", win_rate)
        return win_rate

    ###################
    # Save and push
    ###################
    save_and_push(
        trainer,
        "dpo",
        (model_args, data_args, training_args),
        raw,
        metrics,
        base_model=model_args.model_name_or_path,
        evaluate_saved_model=score_win_rate if held_out else None,
    )
    return metrics


if __name__ == "__main__":
    parser = RecipeParser((ModelConfig, DataArguments, DPOConfig))
    apply_cpu_safe_defaults(parser)
    with exit_on_user_error("dpo.py"):
        main(*parser.parse_args_and_config())
