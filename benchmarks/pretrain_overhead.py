"""Trainer overhead: steady-state tokens/s of `pretrain.py`'s Trainer path against a bare PyTorch loop.

Both paths train the same model (same preset, same initial weights), on the same packed pydocs blocks, with the same
batch size, AdamW settings, warmup + cosine schedule and gradient clipping. The Trainer path is exactly what
`train_scripts/pretrain.py` runs: `AtomicCheckpointTrainer` with the NaN guard, throughput and perplexity callbacks
and per-step token counting (evaluation and checkpointing are off: they are not per-step costs). The bare loop is
`for batch in DataLoader: loss.backward(); clip; step; schedule; zero_grad`.

Each round trains a fresh model on each path, in alternating order; the first `--warmup_steps` steps are not timed.
The printed figure is the median over rounds of Trainer / bare tokens/s (each round's two runs back to back), taken
in this one run.

Run:

    python benchmarks/pretrain_overhead.py                    # CPU, tiny preset, ~2 minutes on 2 cores
    python benchmarks/pretrain_overhead.py --model_preset small --block_size 512 --batch_size 16 --bf16   # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import TrainerCallback, default_data_collator, get_cosine_schedule_with_warmup, set_seed

from hf_llm.data import DataArguments, load_dataset_from_args
from hf_llm.training import (
    AtomicCheckpointTrainer,
    ModelArguments,
    NonFiniteGuardCallback,
    PerplexityCallback,
    PretrainConfig,
    ThroughputCallback,
    add_callbacks,
)
from hf_llm.training.pretraining import build_or_load_causal_lm, load_or_train_tokenizer, pack_for_pretraining


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_preset", default="tiny")
    parser.add_argument("--tokenizer_name_or_path", default=None, help="default: train a BPE on the train split")
    parser.add_argument("--tokenizer_vocab_size", type=int, default=4096)
    parser.add_argument("--dataset_name", default="pydocs")
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--warmup_steps", type=int, default=5, help="untimed steps at the start of each run")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on both paths (GPU)")
    parser.add_argument("--output_json", default="outputs/benchmarks/pretrain_overhead.json")
    return parser.parse_args()


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Wall time from the end of step `start_step` to the end of step `end_step` (full iterations, data included)."""

    def __init__(self, start_step: int, end_step: int):
        self.start_step, self.end_step = start_step, end_step
        self.start = self.end = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (self.start_step, self.end_step):
            synchronize()
            now = time.perf_counter()
            if state.global_step == self.start_step:
                self.start = now
            else:
                self.end = now


def training_args(output_dir: str, args: argparse.Namespace, max_steps: int) -> PretrainConfig:
    return PretrainConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        max_steps=max_steps,
        learning_rate=args.learning_rate,
        warmup_steps=0.1,
        logging_steps=10,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        bf16=args.bf16,
        seed=42,
    )


def run_trainer(model_args, tokenizer, train_dataset, args) -> tuple[float, float]:
    total = args.warmup_steps + args.steps
    set_seed(42)
    model = build_or_load_causal_lm(model_args, tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = AtomicCheckpointTrainer(
            model=model,
            args=training_args(tmp, args, total),
            train_dataset=train_dataset,
            processing_class=tokenizer,
            data_collator=default_data_collator,
        )
        timer = StepTimer(args.warmup_steps, total)
        add_callbacks(
            trainer,
            [NonFiniteGuardCallback(), ThroughputCallback(seq_length=args.block_size), PerplexityCallback(), timer],
        )
        trainer.train()
    tokens = args.steps * args.batch_size * args.block_size
    last_loss = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry][-1]
    return tokens / (timer.end - timer.start), last_loss


def run_bare(model_args, tokenizer, train_dataset, args) -> tuple[float, float]:
    total = args.warmup_steps + args.steps
    set_seed(42)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_or_load_causal_lm(model_args, tokenizer).to(device)
    model.train()
    reference = training_args("unused", args, total)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": reference.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=reference.learning_rate,
        betas=(reference.adam_beta1, reference.adam_beta2),
        eps=reference.adam_epsilon,
        fused=reference.optim == "adamw_torch_fused",
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, reference.get_warmup_steps(total), total)
    loader = DataLoader(
        train_dataset.with_format("torch"),
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=default_data_collator,
        drop_last=True,
        generator=torch.Generator().manual_seed(42),
    )
    step, start, losses = 0, None, []
    while step < total:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), reference.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            step += 1
            if step == args.warmup_steps:
                synchronize()
                start = time.perf_counter()
            if step == total:
                break
    synchronize()
    elapsed = time.perf_counter() - start
    return args.steps * args.batch_size * args.block_size / elapsed, float(torch.stack(losses[-10:]).mean())


def main() -> dict:
    args = parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_args = ModelArguments(
        model_preset=args.model_preset,
        tokenizer_name_or_path=args.tokenizer_name_or_path,
        tokenizer_vocab_size=args.tokenizer_vocab_size,
    )
    data_args = DataArguments(dataset_name=args.dataset_name, block_size=args.block_size)
    raw = load_dataset_from_args(data_args, "text")
    tokenizer = load_or_train_tokenizer(model_args, raw["train"])
    max_length = build_or_load_causal_lm(model_args, tokenizer).config.max_position_embeddings
    splits, _ = pack_for_pretraining(raw, tokenizer, data_args, max_length=max_length)
    train_dataset = splits["train"]

    results = {"trainer": [], "bare": []}
    losses = {}
    for round_index in range(args.rounds):
        order = ("bare", "trainer") if round_index % 2 == 0 else ("trainer", "bare")
        for path in order:
            run = run_bare if path == "bare" else run_trainer
            tokens_per_second, loss = run(model_args, tokenizer, train_dataset, args)
            results[path].append(tokens_per_second)
            losses[path] = loss
            print(f"round {round_index + 1}/{args.rounds} {path:>7}: {tokens_per_second:,.0f} tokens/s")

    trainer_tps, bare_tps = statistics.median(results["trainer"]), statistics.median(results["bare"])
    # Each round's two runs are back to back, so their ratio sees the same machine load; the median over rounds
    # discards rounds where the load changed mid-round.
    round_ratios = [t / b for t, b in zip(results["trainer"], results["bare"], strict=True)]
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(),
        "settings": vars(args),
        "tokens_per_second": results,
        "median_tokens_per_second": {"trainer": trainer_tps, "bare": bare_tps},
        "trainer_over_bare_per_round": round_ratios,
        "trainer_over_bare": statistics.median(round_ratios),
        "ratio_of_medians": trainer_tps / bare_tps,
        "final_loss": losses,
    }
    print(
        f"Trainer / bare loop tokens/s: {report['trainer_over_bare']:.3f} (median of per-round ratios "
        f"{', '.join(f'{r:.3f}' for r in round_ratios)}; median tokens/s {trainer_tps:,.0f} vs {bare_tps:,.0f})"
    )
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(report, indent=2))
    print(f"Wrote {args.output_json}")
    return report


if __name__ == "__main__":
    main()
