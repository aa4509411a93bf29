"""Callbacks shared by every stage: NaN/Inf guard, tokens/s + MFU, perplexity, callback ordering."""

import math
import os

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import DefaultFlowCallback

from hf_llm import GPTConfig, GPTForCausalLM
from hf_llm.training import (
    AtomicCheckpointTrainer,
    NonFiniteError,
    NonFiniteGuardCallback,
    PerplexityCallback,
    PretrainConfig,
    ThroughputCallback,
    add_callbacks,
    flops_per_token,
    get_peak_bf16_flops,
    list_checkpoints,
    perplexity_from_loss,
)

SEQ = 16
BATCH = 4


def tiny_model(seed: int = 0) -> GPTForCausalLM:
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=SEQ,
        eos_token_id=1,
        pad_token_id=0,
    )
    return GPTForCausalLM(config)


def block_dataset(n: int = 64, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 128, (n, SEQ), generator=g).tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def make_args(tmp_path, **overrides) -> PretrainConfig:
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        max_steps=6,
        learning_rate=1e-3,
        logging_steps=2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="all",
    )
    kwargs.update(overrides)
    return PretrainConfig(**kwargs)


class PoisonWeights(TrainerCallback):
    """Turns one weight to NaN after the optimizer step of `at_step` (1-based), like a divergent update would."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.at_step:
            with torch.no_grad():
                model.lm_head.weight[0, 0] = float("nan")


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4e12),
        ("NVIDIA H100 PCIe", 756.5e12),
        ("NVIDIA H100 NVL", 835.5e12),
        ("NVIDIA H200", 989.4e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362.05e12),
        ("NVIDIA GeForce GTX 1080", None),
        ("cpu", None),
    ],
)
def test_peak_flops_table(name, peak):
    assert get_peak_bf16_flops(name) == peak


def test_perplexity_from_loss():
    assert perplexity_from_loss(0.0) == 1.0
    assert perplexity_from_loss(math.log(50)) == pytest.approx(50)
    assert perplexity_from_loss(1e6) == math.inf
    assert math.isnan(perplexity_from_loss(float("nan")))


def test_flops_per_token_matches_formula():
    model = tiny_model()
    n = model.num_parameters(exclude_embeddings=True)
    assert flops_per_token(model, SEQ) == 6 * n + 12 * 2 * 32 * SEQ


def test_add_callbacks_runs_ours_after_flow_control_and_before_reporters(tmp_path):
    trainer = AtomicCheckpointTrainer(
        model=tiny_model(), args=make_args(tmp_path, report_to="tensorboard"), train_dataset=block_dataset()
    )
    guard, ppl = NonFiniteGuardCallback(), PerplexityCallback()
    add_callbacks(trainer, [guard, ppl])
    kinds = [type(cb) for cb in trainer.callback_handler.callbacks]
    assert kinds[0] is DefaultFlowCallback
    assert trainer.callback_handler.callbacks[1:3] == [guard, ppl]
    assert kinds.index(TensorBoardCallback) > 2


def test_guard_stops_before_a_non_finite_checkpoint(tmp_path):
    # Weights go NaN at step 3; the next save is at step 4 and no log comes before it: only the
    # pre-save check can stop it. checkpoint-2 must be there and finite, checkpoint-4 never written.
    args = make_args(tmp_path, max_steps=8, save_strategy="steps", save_steps=2, logging_steps=100)
    trainer = AtomicCheckpointTrainer(model=tiny_model(), args=args, train_dataset=block_dataset())
    add_callbacks(trainer, [NonFiniteGuardCallback()])
    trainer.add_callback(PoisonWeights(at_step=3))
    with pytest.raises(NonFiniteError, match=r"step 4: parameter '.*weight' is NaN/Inf.*--learning_rate"):
        trainer.train()
    names = sorted(os.listdir(args.output_dir))
    assert [os.path.basename(p) for p in list_checkpoints(args.output_dir)] == ["checkpoint-2"]
    assert not any(name.startswith("_tmp-") for name in names)
    weights = load_file(os.path.join(args.output_dir, "checkpoint-2", "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_guard_catches_nan_loss_in_logs_even_when_trainer_filters_it(tmp_path):
    # logging_nan_inf_filter=True replaces NaN losses in the logs; the weights check still stops the run.
    args = make_args(tmp_path, max_steps=6, logging_steps=2, logging_nan_inf_filter=True)
    trainer = AtomicCheckpointTrainer(model=tiny_model(), args=args, train_dataset=block_dataset())
    add_callbacks(trainer, [NonFiniteGuardCallback()])
    trainer.add_callback(PoisonWeights(at_step=1))
    with pytest.raises(NonFiniteError, match="step 2"):
        trainer.train()


def test_guard_on_log_values():
    guard = NonFiniteGuardCallback()
    state = type("S", (), {"global_step": 7})()
    args = make_args_stub(fp16=False)
    guard.on_log(args, state, None, logs={"loss": 2.0, "grad_norm": 1.0})  # finite: no error
    with pytest.raises(NonFiniteError, match="step 7: eval_loss is inf"):
        guard.on_log(args, state, None, logs={"eval_loss": float("inf")})
    with pytest.raises(NonFiniteError, match="grad_norm is nan"):
        guard.on_log(args, state, None, logs={"loss": 1.0, "grad_norm": float("nan")})
    # fp16 loss scaling produces Inf gradients by design: not an error.
    guard.on_log(make_args_stub(fp16=True), state, None, logs={"loss": 1.0, "grad_norm": float("inf")})


def make_args_stub(fp16: bool):
    return type("A", (), {"fp16": fp16})()


def test_throughput_logs_tokens_per_second_and_mfu(tmp_path):
    args = make_args(tmp_path, max_steps=6, logging_steps=2)
    model = tiny_model()
    trainer = AtomicCheckpointTrainer(model=model, args=args, train_dataset=block_dataset())
    peak = 1e9
    add_callbacks(trainer, [ThroughputCallback(seq_length=SEQ, peak_flops_per_device=peak)])
    trainer.train()
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(train_logs) == 3
    for entry in train_logs:
        assert entry["tokens_per_second"] > 0
        assert entry["tokens_per_second_per_device"] == entry["tokens_per_second"]  # one process
        expected_mfu = entry["tokens_per_second"] * flops_per_token(model, SEQ) / peak
        assert entry["mfu"] == pytest.approx(expected_mfu)
    assert trainer.state.num_input_tokens_seen == 6 * BATCH * SEQ


def test_throughput_reports_no_mfu_without_a_known_peak(tmp_path):
    trainer = AtomicCheckpointTrainer(
        model=tiny_model(), args=make_args(tmp_path, max_steps=2, logging_steps=1), train_dataset=block_dataset()
    )
    add_callbacks(trainer, [ThroughputCallback()])
    trainer.train()
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all("tokens_per_second" in entry and "mfu" not in entry for entry in train_logs)


def test_perplexity_callback_adds_eval_perplexity(tmp_path):
    trainer = AtomicCheckpointTrainer(
        model=tiny_model(), args=make_args(tmp_path), train_dataset=block_dataset(), eval_dataset=block_dataset(8, 1)
    )
    add_callbacks(trainer, [PerplexityCallback()])
    metrics = trainer.evaluate()
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert trainer.state.log_history[-1]["eval_perplexity"] == metrics["eval_perplexity"]
    # An untrained model over 128 tokens is close to uniform.
    assert 60 < metrics["eval_perplexity"] < 300
