"""Tokenize-and-pack throughput on the bundled pydocs corpus, with `num_proc` 1 and 2.

    python benchmarks/data_throughput.py --output_file outputs/benchmarks/data_throughput.json

Measures MB/s (UTF-8 bytes of input text per second) of `tokenize_texts` followed by `group_texts` (fixed blocks)
and by `split_documents` (padding-free path), with the `datasets` cache disabled so every run does the work. The
corpus can be repeated (`--corpus_repeats`) so process start-up does not dominate. Prints the ratio of
`num_proc=2` to `num_proc=1` taken in the same run (absolute numbers on shared machines are noisy; ratios less so)
and writes everything to JSON.
"""

import argparse
import json
import os
import platform
import statistics
import time

import datasets
from datasets import concatenate_datasets

from hf_llm.data import group_texts, load_pydocs, pydocs_fingerprint, split_documents, tokenize_texts
from hf_llm.tokenizer import train_tokenizer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer_name_or_path", default=None, help="Tokenizer to use; default: train one.")
    parser.add_argument("--vocab_size", type=int, default=4096, help="Vocab size of the tokenizer trained here.")
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--num_procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--corpus_repeats", type=int, default=4, help="Concatenate the corpus this many times.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per setting (the median is reported).")
    parser.add_argument("--output_file", default="outputs/benchmarks/data_throughput.json")
    return parser.parse_args()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(args: argparse.Namespace) -> dict:
    datasets.disable_caching()
    datasets.disable_progress_bars()
    pretrain = load_pydocs("text")
    corpus = concatenate_datasets([pretrain[s] for s in pretrain] * args.corpus_repeats).select_columns(["text"])
    megabytes = sum(len(t.encode("utf-8")) for t in corpus["text"]) / 1e6

    if args.tokenizer_name_or_path:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name_or_path)
    else:
        tokenizer = train_tokenizer(pretrain["train"], vocab_size=args.vocab_size)

    pipelines = {
        "tokenize+blocks": lambda n: group_texts(
            tokenize_texts(corpus, tokenizer, num_proc=n), args.block_size, num_proc=n
        ),
        "tokenize+padding_free": lambda n: split_documents(
            tokenize_texts(corpus, tokenizer, num_proc=n), args.block_size, num_proc=n
        ),
    }
    results = {}
    for name, pipeline in pipelines.items():
        results[name] = {}
        for num_proc in args.num_procs:
            n = None if num_proc == 1 else num_proc
            pipeline(n)  # warm-up: imports, worker start-up paths
            seconds = statistics.median(timed(lambda n=n, pipeline=pipeline: pipeline(n)) for _ in range(args.repeats))
            results[name][str(num_proc)] = {"seconds": seconds, "mb_per_s": megabytes / seconds}
            print(f"{name:24s} num_proc={num_proc}: {megabytes / seconds:7.2f} MB/s ({seconds:.2f} s)")
        base = results[name][str(args.num_procs[0])]["mb_per_s"]
        for num_proc in args.num_procs[1:]:
            ratio = results[name][str(num_proc)]["mb_per_s"] / base
            results[name][f"ratio_{num_proc}_vs_{args.num_procs[0]}"] = ratio
            print(f"{name:24s} num_proc={num_proc} / num_proc={args.num_procs[0]}: {ratio:.2f}x")

    report = {
        "benchmark": "data_throughput",
        "corpus": "pydocs",
        "corpus_fingerprint": pydocs_fingerprint(),
        "corpus_repeats": args.corpus_repeats,
        "megabytes": megabytes,
        "documents": len(corpus),
        "vocab_size": len(tokenizer),
        "block_size": args.block_size,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "datasets": datasets.__version__,
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output_file)), exist_ok=True)
    with open(args.output_file, "w") as f:
        json.dump(report, f, indent=2)
    print(f"Wrote {args.output_file}")
    return report


if __name__ == "__main__":
    main(parse_args())
