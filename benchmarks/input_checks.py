"""What `GPTModel._check_inputs` (token-id and position range checks on every forward) costs during decoding.

For each model shape and batch size, one run times greedy cached `generate()` with the checks on and with them
replaced by a no-op, in interleaved rounds (the order flips every round), and prints the median over rounds of
(with checks - without) / without: the share of a decode step the checks take. It also times the check alone on a
decode-shaped input (one new token per row) against one cached decode forward, which is less noisy than whole
generations. The checks are worth gating (to prefill, or to CPU) only where they cost more than 2% of a step.

Run:

    python benchmarks/input_checks.py                    # CPU, one thread, ~3 minutes on 2 cores
    python benchmarks/input_checks.py --device cuda      # on a GPU each check also waits for the device
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from hf_llm import GPTConfig, GPTForCausalLM
from hf_llm.models.gpt.modeling_gpt import GPTModel

SHAPES = {  # hidden, layers, heads
    "tiny": (96, 3, 4),
    "small": (384, 6, 6),
    "gpt2-124m": (768, 12, 12),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["tiny", "small", "gpt2-124m"], choices=sorted(SHAPES))
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--vocab_size", type=int, default=4096)
    parser.add_argument("--prompt_length", type=int, default=32)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default); 1 is steadier when shared"
    )
    parser.add_argument("--output_json", default="outputs/benchmarks/input_checks.json")
    return parser.parse_args()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int = 1) -> float:
    """Seconds per call. On CPU, the process's CPU time: on a shared machine wall time mostly measures the wait for a
    core, which would drown a difference of a few percent."""
    clock = time.perf_counter if device.startswith("cuda") else time.process_time
    synchronize(device)
    start = clock()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (clock() - start) / repeats


def measure(model: GPTForCausalLM, batch_size: int, args: argparse.Namespace) -> dict:
    """Time `generate()` with and without the checks, one cached decode step, and the check alone."""
    checks = GPTModel._check_inputs
    prompt = torch.randint(0, args.vocab_size, (batch_size, args.prompt_length), device=args.device)

    def generate():
        model.generate(prompt, max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens, do_sample=False)

    # One decode step, and the check alone on the same decode-shaped input (one new token per row).
    cache = DynamicCache(config=model.config)
    model(prompt, cache=cache, use_cache=True)
    new_token = prompt[:, -1:]
    position = torch.full((batch_size, 1), args.prompt_length, device=args.device)

    def decode_step():
        model(new_token, cache=cache, position_ids=position, use_cache=True)
        cache.crop(-1)  # drop the decoded token: every step sees the same cache length

    def check_alone():
        checks(model.model, new_token, position, False)

    generate()  # warm-up
    ratios, step_times, check_times = [], [], []
    for round_index in range(args.rounds):
        seconds = {}
        for with_checks in (True, False) if round_index % 2 == 0 else (False, True):
            GPTModel._check_inputs = checks if with_checks else (lambda *args, **kwargs: None)
            try:
                seconds[with_checks] = timed(generate, args.device)
            finally:
                GPTModel._check_inputs = checks
        ratios.append((seconds[True] - seconds[False]) / seconds[False])
        step_times.append(timed(decode_step, args.device, repeats=50))
        check_times.append(timed(check_alone, args.device, repeats=500))
    decode_step_ms = statistics.median(step_times) * 1e3
    check_us = statistics.median(check_times) * 1e6
    return {
        "batch_size": batch_size,
        "decode_step_ms": decode_step_ms,
        "check_us": check_us,
        "check_share_of_decode_step": check_us / 1e3 / decode_step_ms,
        "generate_overhead": statistics.median(ratios),
    }


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for shape in args.shapes:
        hidden, layers, heads = SHAPES[shape]
        config = GPTConfig(
            vocab_size=args.vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=args.prompt_length + args.max_new_tokens,
            pad_token_id=0,
        )
        model = GPTForCausalLM(config).to(args.device).eval()
        for batch_size in args.batch_sizes:
            with torch.inference_mode():
                row = {"shape": shape, **measure(model, batch_size, args)}
            results.append(row)
            print(
                f"{shape:>10} batch {batch_size}: decode step {row['decode_step_ms']:.3f} ms, check "
                f"{row['check_us']:.1f} us = {100 * row['check_share_of_decode_step']:.2f}% of a step; "
                f"generate() with/without checks: {100 * row['generate_overhead']:+.2f}%",
                flush=True,
            )
    output = Path(args.output_json)
    output.parent.mkdir(parents=True, exist_ok=True)
    summary = {"device": args.device, "threads": torch.get_num_threads(), "results": results}
    output.write_text(json.dumps(summary, indent=2))
    print(f"Wrote {output}")


if __name__ == "__main__":
    main()
