"""Shared test set-up: everything runs offline, on CPU, with tiny models."""

import os
import subprocess
import sys

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


# ---- pretraining fixtures (train_scripts/pretrain.py, hf_llm.training) ----
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_SCRIPT = os.path.join(REPO_ROOT, "train_scripts", "pretrain.py")

# A tiny GPT trained from its own 300-token BPE: seconds per run on 2 CPU cores.
TINY_PRETRAIN_ARGS = [
    "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "4",
    "--max_position_embeddings", "32", "--block_size", "16", "--tokenizer_vocab_size", "300",
    "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
    "--learning_rate", "3e-3", "--warmup_steps", "2", "--logging_steps", "1",
    "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true", "--dataloader_num_workers", "0",
    "--seed", "7",
]  # fmt: skip


@pytest.fixture(scope="session")
def pretrain_text_file(tmp_path_factory):
    """A small `.txt` corpus (blank-line separated paragraphs) for pretraining runs."""
    import random

    rng = random.Random(0)
    sentences = [s.strip() for text in TINY_CORPUS[:5] for s in text.replace("\n", " ").split(". ") if s.strip()]
    paragraphs = [". ".join(rng.sample(sentences, 4)) + "." for _ in range(160)]
    path = tmp_path_factory.mktemp("pretrain_data") / "corpus.txt"
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def run_pretrain():
    """`run_pretrain(argv) -> metrics`: parse `argv` as `train_scripts/pretrain.py` does and run its `main` here."""
    from trl import TrlParser

    from hf_llm.data import DataArguments
    from hf_llm.training import ModelArguments, PretrainConfig

    main = script_main("pretrain")

    def run(argv: list[str]) -> dict:
        parser = TrlParser((ModelArguments, DataArguments, PretrainConfig))
        return main(*parser.parse_args_and_config([str(a) for a in argv]))

    return run


# ---- Hub fixtures (tests/hub_server.py: a Hub-compatible server on 127.0.0.1) ----
@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """`(url, env)` of a Hub-compatible server running for the session. `env` holds HF_ENDPOINT, HF_TOKEN=dummy,
    HF_HUB_OFFLINE=0, HF_HUB_DISABLE_XET=1, ... and a fresh HF_HOME: pass `{**os.environ, **env}` to a subprocess, or
    call `hub_server.patch_hub_env(monkeypatch, env)` in-process (huggingface_hub reads them at import time)."""
    from hub_server import HubServer

    with HubServer() as server:
        yield server.url, server.env(str(tmp_path_factory.mktemp("hf_home")))


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory):
    """`(url, env)` of a Hub-compatible server holding the repos the `gpt2-124m` recipes read, under their real names
    and schemas (`tests/make_local_hub.py`: `openai-community/gpt2`, FineWeb-Edu, SMS spam, Alpaca-cleaned,
    UltraFeedback). `env` is `hub_server`'s plus a fresh `HF_LLM_CACHE` (where `from_gpt2` caches its conversion)."""
    from hub_server import HubServer
    from make_local_hub import build_local_hub, serve_local_hub

    root = build_local_hub(tmp_path_factory.mktemp("local_hub"))
    with HubServer() as server:
        serve_local_hub(server, root)
        env = server.env(str(tmp_path_factory.mktemp("local_hub_hf_home")))
        yield server.url, {**env, "HF_LLM_CACHE": str(tmp_path_factory.mktemp("local_hub_hf_llm_cache"))}


# ---- remote code: run Python where hf_llm cannot be imported ----
BLOCK_HF_LLM = """
import importlib.abc, sys

class BlockHfLlm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_llm" or name.startswith("hf_llm."):
            raise ImportError("hf_llm is blocked in this process")

sys.meta_path.insert(0, BlockHfLlm())
try:
    import hf_llm
    raise SystemExit("hf_llm was importable")
except ImportError:
    pass
"""


def run_without_hf_llm(script: str, env: dict, cwd) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter where `import hf_llm` fails, as on a machine without it installed."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_HF_LLM + script], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


# ---- tiny GPT models ----
def tiny_gpt_config(tokenizer, **overrides):
    """A 2-layer, 32-wide `GPTConfig` whose vocabulary and special tokens match `tokenizer`."""
    from hf_llm import GPTConfig

    values = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPTConfig(**{**values, **overrides})


def save_tiny_gpt(path, tokenizer, *, seed: int = 0, model_class: str = "GPTForCausalLM", **overrides) -> str:
    """Save a freshly initialised tiny GPT (`tiny_gpt_config(tokenizer, **overrides)`, weights from `seed`) and
    `tokenizer` in `path`, as a training script would leave them; returns the path."""
    import torch

    import hf_llm

    torch.manual_seed(seed)
    getattr(hf_llm, model_class)(tiny_gpt_config(tokenizer, **overrides)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# ---- alignment fixtures (train_scripts/reward.py, ppo.py, dpo.py) ----
ALIGNMENT_CONFIGS = {"reward": "RewardConfig", "ppo": "PPOConfig", "dpo": "DPOConfig"}


@pytest.fixture(scope="session")
def tiny_sft_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny `GPTForCausalLM` with the tiny tokenizer (pad != eos, Alpaca template): a stand-in SFT model."""
    return save_tiny_gpt(tmp_path_factory.mktemp("tiny_sft"), tiny_tokenizer, max_position_embeddings=256)


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny `GPTForSequenceClassification` with one output (an untrained reward model) and its tokenizer."""
    path, head = tmp_path_factory.mktemp("tiny_reward"), "GPTForSequenceClassification"
    return save_tiny_gpt(path, tiny_tokenizer, seed=1, model_class=head, num_labels=1, max_position_embeddings=256)


@pytest.fixture(scope="session")
def tiny_preference_file(tmp_path_factory):
    """`prefs.jsonl`: 32 prompt/chosen/rejected rows (prompts of 3 lengths) where chosen is fluent and rejected is
    word salad."""
    import json

    answers = ["It returns the number of items in a container.", "The json module encodes and decodes JSON."]
    path = tmp_path_factory.mktemp("prefs") / "prefs.jsonl"
    with open(path, "w") as f:
        for i in range(32):
            prompt = f"What does item {i} do?" + " Explain it." * (i % 3)  # lengths differ: batches get padded
            row = {"prompt": prompt, "chosen": answers[i % 2], "rejected": "dog lazy the over fox"}
            f.write(json.dumps(row) + "\n")
    return str(path)


def script_namespace(name: str) -> dict:
    """The globals of `train_scripts/<name>.py`, read from the file as `python train_scripts/<name>.py` runs it (the
    scripts are entry points, not a package; their configs live in `hf_llm.training`)."""
    import runpy

    return runpy.run_path(os.path.join(REPO_ROOT, "train_scripts", f"{name}.py"))


def script_main(name: str):
    """The `main` of `train_scripts/<name>.py` (see [`script_namespace`])."""
    return script_namespace(name)["main"]


def run_script(name: str, argv: list) -> dict:
    """Parse `argv` with `train_scripts/<name>.py`'s own parser (`make_parser`) and run its `main` in this process,
    inside `exit_on_user_error`, as `python train_scripts/<name>.py ARGV` does; returns the metrics."""
    from hf_llm.errors import exit_on_user_error

    script = script_namespace(name)
    with exit_on_user_error(f"{name}.py"):
        return script["main"](*script["make_parser"]().parse_args_and_config([str(a) for a in argv]))


@pytest.fixture(scope="session")
def run_alignment_script():
    """`run(name, argv)`: parse `argv` as `train_scripts/<name>.py` does (reward, ppo, dpo) and run its `main` here,
    inside `exit_on_user_error` (a user's mistake exits 2 with one line on stderr). Returns `(main, metrics)`;
    `run.main(name)` is the `main` a run uses (patch names in `main.__globals__` to plant a failure)."""
    import importlib

    from trl import ModelConfig, TrlParser

    from hf_llm.data import DataArguments
    from hf_llm.errors import exit_on_user_error
    from hf_llm.training.finetuning import apply_cpu_safe_defaults

    mains = {}

    def main_of(name):
        if name not in mains:
            mains[name] = script_main(name)
        return mains[name]

    def run(name: str, argv: list[str]):
        main = main_of(name)
        config = getattr(importlib.import_module(f"hf_llm.training.{name}"), ALIGNMENT_CONFIGS[name])
        parser = TrlParser((ModelConfig, DataArguments, config))
        apply_cpu_safe_defaults(parser)
        with exit_on_user_error(f"{name}.py"):
            return main, main(*parser.parse_args_and_config([str(a) for a in argv]))

    run.main = main_of
    return run
