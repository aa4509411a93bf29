"""Shared test set-up: everything runs offline, on CPU, with tiny models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---- data and tokenizer fixtures (hf_llm.data / hf_llm.tokenizer) ----
import pytest  # noqa: E402

TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Python is a programming language that lets you work quickly.",
    "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n    y: int = 0\n",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\nExplain the with statement.\n\n### Input:\n\n### Response:\nIt manages a context.",
    "Return the number of items in a container. The json module encodes and decodes JSON documents.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer with 300 tokens: eos/bos `<|endoftext|>` (id 0), pad `<|pad|>` (id 1), Alpaca
    chat template. Built once per session by `hf_llm.tokenizer.train_tokenizer`; don't mutate it (copy first)."""
    from hf_llm.tokenizer import train_tokenizer

    return train_tokenizer(TINY_CORPUS, vocab_size=300, min_frequency=1)
