"""Throughput of `GPTForCausalLM` against transformers' `GPT2LMHeadModel` of the same dimensions.

Both models hold the same weights (ours is converted with `GPTForCausalLM.from_gpt2`), run the same batches, and are
timed in interleaved rounds (the order flips every round) so machine noise hits both alike. Every ratio printed is
the median over rounds of the ratio of two back-to-back timings in this one run:

- training tokens/s (forward + backward + AdamW step), ours / GPT-2, per attention implementation;
- cached greedy generation tokens/s, ours / GPT-2;
- our cached generation / our uncached generation (what the KV cache buys) at `--max_new_tokens`, for each of
  `--cache_batch_sizes`;
- training tokens/s of our model under `torch.compile` (inductor, what `--torch_compile true` turns on) / the same
  model eager, at the `tiny` preset's shape and at GPT-2 small's (`gpt2-124m`), with the first compiled step's time
  (the compilation) and the first step's loss difference reported beside it.

Run:

    python benchmarks/model_throughput.py                      # CPU defaults, several minutes on 2 cores
    python benchmarks/model_throughput.py --sections compile --rounds 3 --train_steps 2   # compiled vs eager only
    python benchmarks/model_throughput.py --device cuda --dtype bfloat16 --hidden_size 768 --num_layers 12 \
        --gpt2_batch_size 16 --gpt2_seq_length 1024
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_llm import GPTConfig, GPTForCausalLM
from hf_llm.training.presets import MODEL_PRESETS

# Shapes of the compiled-vs-eager section: a preset, the vocabulary its recipe trains (GPT-2's 50257 tokens plus a pad
# token, padded to a multiple of 64 as `build_gpt_config` does) and the flags holding its batch.
COMPILE_SHAPES = {
    "tiny": {"preset": "tiny", "vocab_size": 4096, "batch": ("batch_size", "seq_length")},
    "gpt2-124m": {"preset": "gpt2-124m", "vocab_size": 50304, "batch": ("gpt2_batch_size", "gpt2_seq_length")},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--vocab_size", type=int, default=4096)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_length", type=int, default=256)
    parser.add_argument("--train_steps", type=int, default=3, help="timed optimizer steps per model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt_length", type=int, default=32)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--generation_batch_size", type=int, default=1)
    parser.add_argument(
        "--cache_batch_sizes", type=int, nargs="+", default=[1, 8], help="batch sizes for cached vs uncached"
    )
    parser.add_argument("--attn_implementations", nargs="+", default=["eager", "sdpa"])
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=["vs_gpt2", "compile"],
        default=["vs_gpt2", "compile"],
        help="vs_gpt2: ours vs GPT2LMHeadModel (training, generation, KV cache); compile: compiled vs eager training",
    )
    parser.add_argument("--compile_shapes", nargs="+", choices=list(COMPILE_SHAPES), default=list(COMPILE_SHAPES))
    parser.add_argument("--gpt2_batch_size", type=int, default=1, help="compile section, gpt2-124m shape")
    parser.add_argument("--gpt2_seq_length", type=int, default=512, help="compile section, gpt2-124m shape")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--output_json", default="outputs/benchmarks/model_throughput.json")
    return parser.parse_args()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def build_pair(args: argparse.Namespace, attn_implementation: str) -> tuple[GPT2LMHeadModel, GPTForCausalLM]:
    torch.manual_seed(0)
    gpt2_config = GPT2Config(
        vocab_size=args.vocab_size,
        n_embd=args.hidden_size,
        n_layer=args.num_layers,
        n_head=args.num_heads,
        n_positions=max(args.seq_length, args.prompt_length + args.max_new_tokens),
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    gpt2_config._attn_implementation = attn_implementation
    dtype = getattr(torch, args.dtype)
    gpt2 = GPT2LMHeadModel(gpt2_config).to(args.device, dtype)
    ours = GPTForCausalLM.from_gpt2(gpt2).to(args.device, dtype)
    ours.set_attn_implementation(attn_implementation)
    gpt2.set_attn_implementation(attn_implementation)
    return gpt2, ours


def training_step_fn(model: torch.nn.Module, batch: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def generation_fn(model: torch.nn.Module, prompt: torch.Tensor, max_new_tokens: int, use_cache: bool):
    model.eval()

    @torch.inference_mode()
    def generate() -> None:
        output = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=0,
        )
        assert output.shape[1] == prompt.shape[1] + max_new_tokens

    return generate


def interleaved(candidates: dict[str, Callable[[], None]], rounds: int, device: str) -> dict[str, list[float]]:
    """Time each candidate once per round, flipping the order every round; returns seconds per round."""
    for fn in candidates.values():  # warm-up: allocator, kernels, lazy initialisation
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            seconds[name].append(timed(candidates[name], device))
    return seconds


def median_ratio(seconds: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of the speed ratio `numerator / denominator`, each taken from two back-to-back timings."""
    return statistics.median(d / n for n, d in zip(seconds[numerator], seconds[denominator], strict=True))


def compiled_vs_eager(args: argparse.Namespace, shape: str) -> dict:
    """Training tokens/s of `torch.compile(model)` vs the same model eager (same weights, batches and optimizer)."""
    spec = COMPILE_SHAPES[shape]
    batch_size, seq_length = (getattr(args, name) for name in spec["batch"])
    torch.manual_seed(0)
    config = GPTConfig(
        **MODEL_PRESETS[spec["preset"]],
        vocab_size=spec["vocab_size"],
        embedding_dropout=0.0,
        attention_dropout=0.0,
        residual_dropout=0.0,
    )
    dtype = getattr(torch, args.dtype)
    eager = GPTForCausalLM(config).to(args.device, dtype)
    twin = GPTForCausalLM(config).to(args.device, dtype)
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin)  # inductor, as Trainer's --torch_compile true
    generator = torch.Generator().manual_seed(1)
    batch = torch.randint(0, config.vocab_size, (batch_size, seq_length), generator=generator).to(args.device)
    eager.train(), compiled.train()
    start = time.perf_counter()
    compiled_loss = compiled(input_ids=batch, labels=batch, use_cache=False).loss.item()  # compiles the forward
    forward_compile_seconds = time.perf_counter() - start
    loss_difference = abs(compiled_loss - eager(input_ids=batch, labels=batch, use_cache=False).loss.item())
    steps = {"eager": training_step_fn(eager, batch), "compiled": training_step_fn(compiled, batch)}
    # The first training step compiles the backward (the forward graph is reused).
    compile_seconds = forward_compile_seconds + timed(steps["compiled"], args.device)

    def repeat(step: Callable[[], None]) -> Callable[[], None]:
        return lambda: [step() for _ in range(args.train_steps)]

    seconds = interleaved({name: repeat(step) for name, step in steps.items()}, args.rounds, args.device)
    tokens = batch_size * seq_length * args.train_steps
    return {
        "shape": {**MODEL_PRESETS[spec["preset"]], "vocab_size": config.vocab_size},
        "parameters": eager.num_parameters(),
        "batch": [batch_size, seq_length],
        "train_tokens_per_s": {name: tokens / statistics.median(s) for name, s in seconds.items()},
        "compiled_vs_eager": median_ratio(seconds, "compiled", "eager"),
        "first_compiled_step_s": compile_seconds,
        "first_loss_abs_difference": loss_difference,
    }


def main() -> None:
    args = parse_args()
    torch.set_grad_enabled(True)
    results: dict[str, dict] = {"settings": vars(args), "torch_threads": torch.get_num_threads()}
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_length), generator=generator).to(args.device)
    prompt = torch.randint(0, args.vocab_size, (args.generation_batch_size, args.prompt_length), generator=generator)
    prompt = prompt.to(args.device)
    train_tokens = args.batch_size * args.seq_length * args.train_steps
    new_tokens = args.generation_batch_size * args.max_new_tokens

    for attn_implementation in args.attn_implementations if "vs_gpt2" in args.sections else []:
        gpt2, ours = build_pair(args, attn_implementation)

        def repeat(step: Callable[[], None]) -> Callable[[], None]:
            return lambda: [step() for _ in range(args.train_steps)]

        train_seconds = interleaved(
            {
                "hf_llm": repeat(training_step_fn(ours, batch)),
                "gpt2": repeat(training_step_fn(gpt2, batch)),
            },
            args.rounds,
            args.device,
        )
        generation_seconds = interleaved(
            {
                "hf_llm": generation_fn(ours, prompt, args.max_new_tokens, use_cache=True),
                "gpt2": generation_fn(gpt2, prompt, args.max_new_tokens, use_cache=True),
            },
            args.rounds,
            args.device,
        )
        uncached_seconds = {}
        for batch_size in args.cache_batch_sizes:
            prompts = prompt[:1].repeat(batch_size, 1)
            uncached_seconds[batch_size] = interleaved(
                {
                    "hf_llm_cached": generation_fn(ours, prompts, args.max_new_tokens, use_cache=True),
                    "hf_llm_uncached": generation_fn(ours, prompts, args.max_new_tokens, use_cache=False),
                },
                max(3, args.rounds // 2),
                args.device,
            )

        def rate(tokens: int, seconds: list[float]) -> float:
            return tokens / statistics.median(seconds)

        row = {
            "train_tokens_per_s": {name: rate(train_tokens, s) for name, s in train_seconds.items()},
            "generate_tokens_per_s": {name: rate(new_tokens, s) for name, s in generation_seconds.items()},
            "generate_cache_tokens_per_s": {
                batch_size: {name: rate(batch_size * args.max_new_tokens, s) for name, s in timings.items()}
                for batch_size, timings in uncached_seconds.items()
            },
        }
        row["train_ratio_vs_gpt2"] = median_ratio(train_seconds, "hf_llm", "gpt2")
        row["generate_ratio_vs_gpt2"] = median_ratio(generation_seconds, "hf_llm", "gpt2")
        row["cached_vs_uncached"] = {
            batch_size: median_ratio(timings, "hf_llm_cached", "hf_llm_uncached")
            for batch_size, timings in uncached_seconds.items()
        }
        results[attn_implementation] = row

        print(f"\n== attn_implementation={attn_implementation} ({args.device}, {args.dtype}) ==")
        print(
            f"training   tokens/s  hf_llm {row['train_tokens_per_s']['hf_llm']:10.0f}   "
            f"GPT2LMHeadModel {row['train_tokens_per_s']['gpt2']:10.0f}   ratio {row['train_ratio_vs_gpt2']:.2f}x"
        )
        print(
            f"generation tokens/s  hf_llm {row['generate_tokens_per_s']['hf_llm']:10.1f}   "
            f"GPT2LMHeadModel {row['generate_tokens_per_s']['gpt2']:10.1f}  ratio {row['generate_ratio_vs_gpt2']:.2f}x"
        )
        for batch_size, ratio in row["cached_vs_uncached"].items():
            cache = row["generate_cache_tokens_per_s"][batch_size]
            print(
                f"KV cache, batch {batch_size}, {args.max_new_tokens} new tokens: cached "
                f"{cache['hf_llm_cached']:.1f} tokens/s, uncached {cache['hf_llm_uncached']:.1f} tokens/s, "
                f"ratio {ratio:.1f}x"
            )

    for shape in args.compile_shapes if "compile" in args.sections else []:
        row = compiled_vs_eager(args, shape)
        results.setdefault("compile", {})[shape] = row
        rates = row["train_tokens_per_s"]
        print(
            f"\n== torch.compile vs eager training, {shape} shape ({row['parameters']:,} parameters, batch "
            f"{row['batch'][0]} x {row['batch'][1]}, {args.device}, {args.dtype}) =="
        )
        print(
            f"training   tokens/s  compiled {rates['compiled']:10.0f}   eager {rates['eager']:10.0f}   "
            f"ratio {row['compiled_vs_eager']:.2f}x   (first compiled step {row['first_compiled_step_s']:.0f} s, "
            f"first-step loss difference {row['first_loss_abs_difference']:.1e})"
        )

    output = Path(args.output_json)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
