"""Every trainer hf_llm runs (Trainer, TRL's SFT/Reward/DPO trainers and PPO) with atomic checkpoints, the NaN guard
and the throughput callback: complete `checkpoint-N`, no staging folder left, tokens (or episodes) per second logged,
and a run at lr=1e30 stopped by the guard before a non-finite checkpoint is written."""

import copy
import os

import pytest
import torch
from conftest import tiny_gpt_config
from datasets import Dataset
from safetensors.torch import load_file
from trl import SFTConfig

from hf_llm import GPTForCausalLM, GPTForSequenceClassification
from hf_llm.training import (
    AtomicCheckpointTrainer,
    NonFiniteError,
    NonFiniteGuardCallback,
    PretrainConfig,
    ThroughputCallback,
    add_callbacks,
    is_complete_checkpoint,
)
from hf_llm.training.dpo import AtomicDPOTrainer, DPOConfig
from hf_llm.training.ppo import AtomicPPOTrainer, PPOConfig
from hf_llm.training.reward import AtomicRewardTrainer, RewardConfig
from hf_llm.training.sft import AtomicSFTTrainer

BATCH = 4


def conversations(n: int = 8) -> tuple[list, list, list]:
    prompts = [[{"role": "user", "content": f"What does item {i} do?"}] for i in range(n)]
    good = [[{"role": "assistant", "content": "It returns the number of items."}] for _ in range(n)]
    bad = [[{"role": "assistant", "content": "dog lazy the over"}] for _ in range(n)]
    return prompts, good, bad


def common_args(output_dir: str, learning_rate: float) -> dict:
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=BATCH,
        learning_rate=learning_rate,
        save_strategy="steps",
        save_steps=1,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )


def build_trainer(kind: str, tokenizer, output_dir: str, learning_rate: float):
    torch.manual_seed(0)
    policy = GPTForCausalLM(tiny_gpt_config(tokenizer))
    args = common_args(output_dir, learning_rate)
    trl_args = dict(args, bf16=False, activation_checkpointing=False, max_steps=3, include_num_input_tokens_seen=True)
    prompts, good, bad = conversations()
    if kind == "trainer":
        ids = torch.randint(2, len(tokenizer), (16, 16), generator=torch.Generator().manual_seed(0)).tolist()
        config = PretrainConfig(**args, max_steps=3, include_num_input_tokens_seen="all")
        return AtomicCheckpointTrainer(
            model=policy, args=config, train_dataset=Dataset.from_dict({"input_ids": ids, "labels": ids})
        )
    if kind == "sft":
        data = Dataset.from_dict({"prompt": prompts, "completion": good})
        return AtomicSFTTrainer(
            model=policy, args=SFTConfig(**trl_args, max_length=128), train_dataset=data, processing_class=tokenizer
        )
    pairs = Dataset.from_dict({"prompt": prompts, "chosen": good, "rejected": bad})
    if kind == "reward":
        reward_model = GPTForSequenceClassification(tiny_gpt_config(tokenizer, num_labels=1))
        return AtomicRewardTrainer(
            model=reward_model,
            args=RewardConfig(**trl_args, max_length=128),
            train_dataset=pairs,
            processing_class=tokenizer,
        )
    if kind == "dpo":
        return AtomicDPOTrainer(
            model=policy,
            ref_model=copy.deepcopy(policy),
            args=DPOConfig(**trl_args, max_length=128),
            train_dataset=pairs,
            processing_class=tokenizer,
        )
    from hf_llm.training.alignment import LeftPaddingCollator

    ids = [tokenizer.apply_chat_template(p, add_generation_prompt=True) for p in prompts]
    ids = [row["input_ids"] if isinstance(row, dict) or hasattr(row, "keys") else row for row in ids]
    data = Dataset.from_dict({"input_ids": ids})
    config = PPOConfig(
        **args,
        bf16=False,
        activation_checkpointing=False,
        total_episodes=3 * BATCH,
        num_ppo_epochs=2,
        response_length=4,
        num_sample_generations=0,
        reward_model_path="unused",
    )
    return AtomicPPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=copy.deepcopy(policy),
        reward_model=GPTForSequenceClassification(tiny_gpt_config(tokenizer, num_labels=1)),
        value_model=GPTForSequenceClassification(tiny_gpt_config(tokenizer, num_labels=1)),
        train_dataset=data,
        eval_dataset=data,
        data_collator=LeftPaddingCollator(tokenizer),
    )


def checkpoints(output_dir: str) -> list[str]:
    return sorted(name for name in os.listdir(output_dir) if name.startswith("checkpoint-"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["trainer", "sft", "reward", "dpo", "ppo"])
def test_atomic_checkpoints_throughput_and_nan_guard(kind, tiny_tokenizer, tmp_path):
    # A normal run: a complete checkpoint at every step, nothing staged left behind, throughput in the logs.
    trainer = build_trainer(kind, tiny_tokenizer, str(tmp_path / "ok"), learning_rate=1e-3)
    add_callbacks(trainer, [NonFiniteGuardCallback(), ThroughputCallback()])
    trainer.train()
    output_dir = trainer.args.output_dir
    assert checkpoints(output_dir) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    for name in checkpoints(output_dir):
        path = os.path.join(output_dir, name)
        assert is_complete_checkpoint(path)
        assert os.path.isfile(os.path.join(path, "model.safetensors"))
        assert os.path.isfile(os.path.join(path, "optimizer.pt"))
    assert not [name for name in os.listdir(output_dir) if name.startswith("_tmp-")]
    rate_key = "episodes_per_second" if kind == "ppo" else "tokens_per_second"
    train_logs = [log for log in trainer.state.log_history if "loss" in log or "loss/policy_avg" in log]
    assert len(train_logs) == 3 and all(log[rate_key] > 0 for log in train_logs)

    # lr=1e30: the guard stops the run; whatever was saved before is finite.
    trainer = build_trainer(kind, tiny_tokenizer, str(tmp_path / "nan"), learning_rate=1e30)
    add_callbacks(trainer, [NonFiniteGuardCallback(), ThroughputCallback()])
    with pytest.raises(NonFiniteError, match="Training stopped at step"):
        trainer.train()
    output_dir = trainer.args.output_dir
    assert len(checkpoints(output_dir)) < 3
    assert not [name for name in os.listdir(output_dir) if name.startswith("_tmp-")]
    for name in checkpoints(output_dir):
        weights = load_file(os.path.join(output_dir, name, "model.safetensors"))
        assert all(torch.isfinite(tensor).all() for tensor in weights.values()), name
