"""`hf-llm serve` under load: 8 concurrent chat requests with and without `--continuous-batching`.

Two servers run side by side on the same checkpoint, one with transformers' continuous batching (paged attention, one
batch for all requests in flight) and one without (requests queue for one sequential `generate()` each). Each round
sends the same `--concurrency` chat requests (greedy, `--max_tokens` each) to one server and then to the other, in
alternating order, and times until the last answer arrives. The printed figure is the median over rounds of
sequential / continuous-batching wall time, each round's two bursts back to back, taken in this one run; tokens/s
count the completion tokens the server reports.

Without `--model_name_or_path` the model is a randomly initialised GPT (`--hidden_size` etc.) with a BPE tokenizer
trained on a few sentences: the timing does not depend on what the weights say, only on their shapes.

Run:

    pip install -e ".[serving]"
    python benchmarks/serve_concurrency.py                                   # CPU, ~2 minutes on 2 cores
    python benchmarks/serve_concurrency.py --model_name_or_path outputs/pipeline/sft --max_tokens 128
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import torch

from hf_llm import GPTConfig, GPTForCausalLM
from hf_llm.serving import serve_in_background
from hf_llm.tokenizer import train_tokenizer

QUESTIONS = [
    "What does the json module do?",
    "Explain the with statement.",
    "How do I read a file line by line?",
    "What is a list comprehension?",
    "When should I use a dataclass?",
    "What does enumerate return?",
    "How do generators save memory?",
    "What is the difference between a tuple and a list?",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", default=None, help="default: a random GPT of the shape below")
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_hidden_layers", type=int, default=4)
    parser.add_argument("--num_attention_heads", type=int, default=4)
    parser.add_argument("--max_position_embeddings", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--max_tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output_json", default="outputs/benchmarks/serve_concurrency.json")
    return parser.parse_args()


def random_checkpoint(args: argparse.Namespace, output_dir: Path) -> Path:
    """A randomly initialised GPT + BPE tokenizer (with hf_llm's chat template) saved to `output_dir`."""
    corpus = [f"Question: {q}\nAnswer: It depends on the Python version and the module you import." for q in QUESTIONS]
    tokenizer = train_tokenizer(corpus * 20, vocab_size=512, min_frequency=1)
    config = GPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        max_position_embeddings=args.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    GPTForCausalLM(config).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def burst(client: openai.OpenAI, model: str, concurrency: int, max_tokens: int) -> tuple[float, int]:
    """Send `concurrency` chat requests at once; return (seconds until the last answer, completion tokens)."""

    def ask(index: int) -> int:
        question = QUESTIONS[index % len(QUESTIONS)]
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], max_tokens=max_tokens, temperature=0
        )
        return reply.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        tokens = sum(pool.map(ask, range(concurrency)))
    return time.perf_counter() - start, tokens


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="serve_concurrency_"))
    model = args.model_name_or_path or str(random_checkpoint(args, workdir / "model"))
    modes = {"sequential": [], "continuous_batching": ["--continuous-batching"]}
    with contextlib.ExitStack() as servers:
        clients = {}
        for mode, flags in modes.items():
            url = servers.enter_context(
                serve_in_background(model, *flags, log_path=workdir / f"{mode}.log", timeout=300)
            )
            clients[mode] = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
            burst(clients[mode], model, args.concurrency, 4)  # load the model, start the batching worker
        seconds = {mode: [] for mode in modes}
        tokens = {mode: [] for mode in modes}
        for round_index in range(args.rounds):
            order = list(modes) if round_index % 2 == 0 else list(reversed(modes))
            for mode in order:
                wall, count = burst(clients[mode], model, args.concurrency, args.max_tokens)
                seconds[mode].append(wall)
                tokens[mode].append(count)
                print(f"round {round_index + 1} {mode:>20}: {wall:6.2f} s, {count / wall:7.1f} tokens/s", flush=True)

    ratios = [seq / cb for seq, cb in zip(seconds["sequential"], seconds["continuous_batching"], strict=True)]
    results = {
        "model": args.model_name_or_path or f"random GPT {args.hidden_size}x{args.num_hidden_layers}",
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({torch.get_num_threads()} threads)",
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        **{
            mode: {
                "seconds": seconds[mode],
                "median_seconds": statistics.median(seconds[mode]),
                "tokens_per_second": sum(tokens[mode]) / sum(seconds[mode]),
            }
            for mode in modes
        },
        "speedup_median": statistics.median(ratios),
    }
    print(
        f"\n{args.concurrency} concurrent requests x {args.max_tokens} tokens: sequential "
        f"{results['sequential']['median_seconds']:.2f} s, continuous batching "
        f"{results['continuous_batching']['median_seconds']:.2f} s; continuous batching is "
        f"{results['speedup_median']:.2f}x faster (median of {args.rounds} back-to-back rounds)"
    )
    output = Path(args.output_json)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
