"""Optimise the SFT model against the reward model with PPO (stage ppo, the second half of RLHF).

The policy is the SFT model (`sft.py`'s output: a merged model or a LoRA adapter, merged here once), trained in full
or with a new LoRA adapter; the reference is the frozen SFT model (under LoRA, the policy with its adapter disabled);
the reward model is `reward.py`'s output and the value model starts as a copy of it. Prompts come from any
`instruction` dataset (or the `prompt` column of `preference` data with `--prompt_format preference`), rendered with
the SFT model's chat template and always padded on the left (rollouts continue the last column; right padding is not
configurable). Reward, KL, entropy, clip fraction, value loss, response length and eos rate go to TensorBoard; a
warning fires when the KL goes negative, passes `--kl_alarm`, or the mean reward collapses. The policy (merged too
with `--merge_adapter`) is saved in `OUTPUT_DIR`, the value model in `OUTPUT_DIR/value_model`. After training, greedy
answers of the SFT model (before) and of the PPO policy (after) to held-out prompts are scored with the reward model:
mean reward before and after, and the win rate over the SFT model (`win_rate_results.json`), as `dpo.py` reports.

This is the only hf_llm module that imports `trl.experimental.ppo`: TRL moved `PPOTrainer` there in 1.10 and deleted it
in 1.13, so hf_llm pins `trl>=1.12,<1.13`. `PPOTrainer` runs its own loop: checkpoints are atomic here too (it calls
`Trainer._save_checkpoint`), they hold the policy and the optimizer, and TRL's PPO cannot resume from them.

Usage:

    # 2 CPU cores, a few minutes, on pydocs from the tiny SFT and reward outputs
    accelerate launch --config_file accelerate_configs/cpu.yaml train_scripts/ppo.py \
        --config train_scripts/configs/ppo/tiny.yaml --model_name_or_path outputs/sft-tiny \
        --reward_model_path outputs/reward-tiny --output_dir outputs/ppo-tiny

Any recipe key can be overridden on the command line, e.g. `--kl_coef 0.1 --total_episodes 2048`.
"""

from __future__ import annotations

import os

from accelerate import PartialState
from transformers.utils import logging
from trl import ModelConfig

import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)
from hf_llm.data import DataArguments, load_dataset_from_args
from hf_llm.errors import UsageError, exit_on_user_error
from hf_llm.loading import load_reference_model, load_reward_model, load_sft_model_for_stage
from hf_llm.training import (
    NonFiniteGuardCallback,
    RecipeParser,
    ThroughputCallback,
    add_callbacks,
    list_checkpoints,
    save_and_push,
)
from hf_llm.training.alignment import (
    LeftPaddingCollator,
    PPOMonitorCallback,
    check_models_read_the_policy_tokens,
    held_out_win_rate,
    tokenize_prompts,
)
from hf_llm.training.distributed import check_sharding
from hf_llm.training.finetuning import apply_cpu_safe_defaults, count_trainable_parameters, get_stage_peft_config
from hf_llm.training.ppo import VALUE_MODEL_DIR_NAME, AtomicPPOTrainer, PPOConfig
from hf_llm.training.preflight import start_stage

logger = logging.get_logger("hf_llm.ppo")


def main(model_args: ModelConfig, data_args: DataArguments, training_args: PPOConfig) -> dict[str, float]:
    """Run PPO; returns the last update's statistics and the held-out win rate over the SFT model."""
    if training_args.reward_model_path is None:
        raise UsageError("PPO needs a reward model: pass --reward_model_path (the output of train_scripts/reward.py).")
    # A checkpoint to resume is refused first, whatever else the output directory's checks would say: TRL's
    # PPOTrainer.train() takes none. `latest` with no checkpoint yet is a fresh start.
    if training_args.resume_from_checkpoint and (
        training_args.resume_from_checkpoint != "latest" or list_checkpoints(training_args.output_dir)
    ):
        raise UsageError(
            "TRL's PPOTrainer cannot resume from a checkpoint (its train() takes none); start again with "
            "--overwrite_output_dir, or pass a checkpoint-N directory as --model_name_or_path to continue from its "
            "policy."
        )
    start_stage(
        "ppo",
        model_args,
        data_args,
        training_args,
        {"--reward_model_path": training_args.reward_model_path, "--value_model_path": training_args.value_model_path},
    )

    ###################
    # Model & tokenizer
    ###################
    with PartialState().main_process_first():  # PPOConfig.world_size shadows main_process_first's
        sft_path, tokenizer, policy = load_sft_model_for_stage(
            model_args,
            "ppo",
            trust_remote_code=training_args.trust_remote_code,
            gradient_checkpointing=training_args.gradient_checkpointing,
        )
        peft_config = get_stage_peft_config(model_args, "ppo")
        ref_policy = load_reference_model(model_args, "ppo", tokenizer, sft_path, uses_peft=peft_config is not None)
        reward_model = load_reward_model(training_args.reward_model_path)
        value_path = training_args.value_model_path or training_args.reward_model_path
        value_model = load_reward_model(value_path, what="--value_model_path")
    check_models_read_the_policy_tokens(
        tokenizer,
        {"--reward_model_path": reward_model, "--value_model_path (default: the reward model)": value_model},
    )
    context = policy.config.max_position_embeddings
    if training_args.response_length >= context:
        raise UsageError(
            f"--response_length {training_args.response_length} leaves no room for a prompt in the policy's context "
            f"of {context} tokens; lower it."
        )

    ###################
    # Dataset
    ###################
    with PartialState().main_process_first():
        raw = load_dataset_from_args(data_args, training_args.prompt_format, seed=training_args.seed)
        prompts = {
            split: tokenize_prompts(
                rows,
                tokenizer,
                max_prompt_length=context - training_args.response_length,
                strategy=data_args.overlong_strategy,
                split=split,
            )
            for split, rows in raw.items()
        }
    eval_prompts = prompts.get("validation", prompts["train"])
    held_out = list(raw["validation"])[: training_args.win_rate_samples] if "validation" in raw else []

    ###################
    # Training
    ###################
    trainer = AtomicPPOTrainer(
        args=training_args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        train_dataset=prompts["train"],
        value_model=value_model,
        data_collator=LeftPaddingCollator(tokenizer),
        eval_dataset=eval_prompts,
        peft_config=peft_config,
    )
    # Trainer's loop (where AtomicCheckpointMixin checks it) never runs in PPO: check the sharding here.
    check_sharding(trainer.accelerator, trainer.model)
    trainable, total = count_trainable_parameters(trainer.model)
    # PPO trains whole batches of rollouts: TRL rounds total_episodes up to a multiple of one batch.
    episodes = trainer.args.num_total_batches * trainer.args.batch_size
    if episodes != trainer.args.total_episodes:
        logger.warning(
            f"--total_episodes {trainer.args.total_episodes} is not a whole number of rollout batches of "
            f"{trainer.args.batch_size} (--per_device_train_batch_size x --gradient_accumulation_steps x processes): "
            f"PPO runs {episodes} episodes."
        )
    logger.info(
        f"Training {trainable:,} of {total:,} policy + value parameters "
        f"({'LoRA policy' if peft_config else 'full fine-tuning'}) on {len(prompts['train'])} prompts, "
        f"{episodes} episodes"
    )
    monitor = PPOMonitorCallback(
        tokenizer.eos_token_id,
        kl_alarm=training_args.kl_alarm,
        reward_collapse_drop=training_args.reward_collapse_drop,
    )
    add_callbacks(trainer, [NonFiniteGuardCallback(), ThroughputCallback(), monitor])
    trainer.train()
    last_update = next((log for log in reversed(trainer.state.log_history) if "objective/kl" in log), {})
    metrics = {f"train_{key.replace('/', '_')}": value for key, value in last_update.items() if "/" in key}
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)

    def score_win_rate() -> dict[str, float]:
        # Greedy answers of the SFT model (before) and the PPO policy (after), scored by the reward model.
        win_rate = held_out_win_rate(
            unwrapped.policy,
            sft_path,
            reward_model,
            tokenizer,
            held_out,
            max_new_tokens=training_args.win_rate_max_new_tokens or training_args.response_length,
            batch_size=training_args.per_device_eval_batch_size,
            samples_file=os.path.join(training_args.output_dir, "win_rate_samples.jsonl"),
        )
        trainer.log_metrics("win_rate", win_rate)
        trainer.save_metrics("win_rate", win_rate)
        return win_rate

    ###################
    # Save and push
    ###################
    if trainer.is_world_process_zero():
        # TRL saves only the policy; the value model is what a later PPO run would continue from.
        value_dir = os.path.join(training_args.output_dir, VALUE_MODEL_DIR_NAME)
        unwrapped.value_model.save_pretrained(value_dir)
        tokenizer.save_pretrained(value_dir)
    save_and_push(
        trainer,
        "ppo",
        (model_args, data_args, training_args),
        raw,
        metrics,
        base_model=model_args.model_name_or_path,
        evaluate_saved_model=score_win_rate if held_out else None,
    )
    return metrics


if __name__ == "__main__":
    parser = RecipeParser((ModelConfig, DataArguments, PPOConfig))
    apply_cpu_safe_defaults(parser)
    with exit_on_user_error("ppo.py"):
        main(*parser.parse_args_and_config())
