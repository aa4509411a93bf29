"""A local copy of the Hub repos the `gpt2-124m` recipes read, at their real layout and schemas, built in seconds.

Every repo is small (a few hundred rows) but shaped as on the Hub, checked against the real dataset cards:

- `openai-community/gpt2` (model): `config.json` (OpenAI's), `generation_config.json`, `model.safetensors`,
  `vocab.json`, `merges.txt`, `tokenizer.json`, `tokenizer_config.json` (only `model_max_length`, as OpenAI's).
  GPT-2 small's shape (12 layers x 768, 12 heads, 1024 positions) with random weights, stored as OpenAI's file is:
  the base model's tensors without the `transformer.` prefix, the `attn.bias` mask buffers included. The tokenizer is
  a byte-level BPE trained here: 256 bytes + 50,000 merges + `<|endoftext|>` (id 50256) = 50,257 tokens.
- `HuggingFaceFW/fineweb-edu` (dataset): configs `default` (`data/*/*`) and `sample-10BT` (`sample/10BT/*`: two
  shards, `000_00000.parquet`, `001_00000.parquet`), plain parquet as datatrove writes it. Columns `text`, `id`,
  `dump`, `url`, `file_path`, `language` (string), `language_score` (float64), `token_count` (int64), `score`
  (float64), `int_score` (int64). Only a `train` split.
- `ucirvine/sms_spam` (dataset): config `plain_text`, `plain_text/train-00000-of-00001.parquet`, only a `train`
  split; `sms` (string), `label` (ClassLabel `ham`/`spam`), about 13% spam.
- `yahma/alpaca-cleaned` (dataset): one JSON array, `alpaca_data_cleaned.json`, only a `train` split; `output`,
  `input` (often empty), `instruction` (strings).
- `trl-lib/ultrafeedback_binarized` (dataset): `data/{train,test}-00000-of-00001.parquet`; `chosen` and `rejected`
  (lists of `{content, role}`: the user's turn, then the assistant's), `score_chosen`, `score_rejected` (float64).

The text is English prose from the running Python's own documentation (`pydoc_data.topics`), so nothing is
downloaded. The dataset cards carry the real `configs` and `dataset_info` (split sizes set to this copy's rows, as
`datasets` checks them).

    python tests/make_local_hub.py OUTPUT_DIR            # write the repos: OUTPUT_DIR/{model,dataset}/<repo id>/
    python tests/make_local_hub.py OUTPUT_DIR --serve    # ... and serve them on 127.0.0.1 (prints the environment)

In tests: `serve_local_hub(server, build_local_hub(path))` (the `local_hub` fixture in conftest.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import threading
import time
from pathlib import Path

GPT2_REPO = "openai-community/gpt2"
FINEWEB_REPO = "HuggingFaceFW/fineweb-edu"
SMS_SPAM_REPO = "ucirvine/sms_spam"
ALPACA_REPO = "yahma/alpaca-cleaned"
ULTRAFEEDBACK_REPO = "trl-lib/ultrafeedback_binarized"
REPOS = {
    GPT2_REPO: "model",
    FINEWEB_REPO: "dataset",
    SMS_SPAM_REPO: "dataset",
    ALPACA_REPO: "dataset",
    ULTRAFEEDBACK_REPO: "dataset",
}
GPT2_VOCAB_SIZE = 50257  # 50,000 merges + 256 bytes + <|endoftext|>
BUILT_MARKER = ".local_hub_built"


# ---------------------------------------------------------------------------------------------------------------
# Text: paragraphs of the Python documentation


def paragraphs() -> list[tuple[str, str]]:
    """`(topic, paragraph)` pairs of English prose from `pydoc_data.topics` (no code listings, no tables)."""
    from pydoc_data.topics import topics

    found = []
    for topic, text in sorted(topics.items()):
        for block in re.split(r"\n\s*\n", text):
            block = " ".join(line.strip() for line in block.splitlines())
            if 120 <= len(block) <= 1200 and block[0].isupper() and block.endswith(".") and "***" not in block:
                found.append((topic, block))
    return found


# ---------------------------------------------------------------------------------------------------------------
# openai-community/gpt2


def train_gpt2_tokenizer(texts: list[str]):
    """A byte-level BPE with GPT-2's format: 256 byte symbols + 50,000 merges, then `<|endoftext|>` as id 50256.

    The documentation alone has too few distinct words for 50,000 merges, so made-up words (syllables in a fixed
    random order) fill the rest; the first merges still come from English.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    rng = random.Random(0)
    onsets = ["", *"bcdfghjklmnprstvwz", "br", "ch", "cl", "dr", "gr", "pl", "pr", "sh", "st", "th", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ie", "ou", "oo"]
    codas = ["", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "rk", "ck"]
    syllables = [o + v + c for o in onsets for v in vowels for c in codas]
    made_up = set()
    while len(made_up) < 120_000:
        made_up.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    made_up = sorted(made_up)

    def corpus():
        yield from texts * 3  # weigh real English above the made-up words
        for start in range(0, len(made_up), 1000):
            chunk = made_up[start : start + 1000]
            yield " ".join(chunk) + " " + " ".join(word.capitalize() for word in chunk[:200])

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=GPT2_VOCAB_SIZE - 1,
        min_frequency=0,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    tokenizer.add_special_tokens(["<|endoftext|>"])
    if tokenizer.get_vocab_size() != GPT2_VOCAB_SIZE:
        raise RuntimeError(f"trained {tokenizer.get_vocab_size()} tokens, not GPT-2's {GPT2_VOCAB_SIZE}")
    return tokenizer


def build_gpt2(folder: Path, texts: list[str]) -> None:
    """GPT-2 small with random weights, saved as `openai-community/gpt2` stores OpenAI's."""
    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = train_gpt2_tokenizer(texts)
    tokenizer.save(str(folder / "tokenizer.json"))
    vocab = dict(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    lines = ["#version: 0.2", *(" ".join(m) if isinstance(m, list) else m for m in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))

    config = GPT2Config(vocab_size=GPT2_VOCAB_SIZE, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    (folder / "config.json").write_text(json.dumps(OPENAI_GPT2_CONFIG, indent=2))
    (folder / "generation_config.json").write_text(
        json.dumps({"_from_model_config": True, "bos_token_id": 50256, "eos_token_id": 50256})
    )
    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = GPT2LMHeadModel(config).transformer.state_dict()
    # OpenAI's file: the base model's weights without the `transformer.` prefix, the causal-mask buffers included.
    state_dict = {name: torch.randn(tensor.shape) * 0.02 for name, tensor in shapes.items()}
    for name in state_dict:
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            state_dict[name] = torch.ones_like(state_dict[name])
        elif name.endswith(".bias") and "attn.bias" not in name:
            state_dict[name] = torch.zeros_like(state_dict[name])
    causal_mask = torch.tril(torch.ones(1024, 1024)).view(1, 1, 1024, 1024)
    for layer in range(config.n_layer):
        state_dict[f"h.{layer}.attn.bias"] = causal_mask.clone()
    save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "README.md").write_text(
        "---\nlanguage: en\ntags:\n- exbert\nlicense: mit\n---\n\n# GPT-2\n\n"
        "A local stand-in for OpenAI's GPT-2 small: the same shape and files, random weights.\n"
    )


OPENAI_GPT2_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}


# ---------------------------------------------------------------------------------------------------------------
# Datasets


def card(front_matter: str, title: str) -> str:
    return f"---\n{front_matter.strip()}\n---\n\n# {title}\n\nA small local copy with the real repo's schema.\n"


def split_info(name: str, dataset) -> str:
    return f"  - name: {name}\n    num_bytes: {dataset.data.nbytes}\n    num_examples: {len(dataset)}\n"


def build_fineweb_edu(folder: Path, docs: list[tuple[str, str]], rows_per_shard: int) -> None:
    """FineWeb-Edu: plain parquet shards (datatrove writes them with pyarrow, no `datasets` metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(1)

    def shard(count: int, dump: str) -> pa.Table:
        rows = []
        for _ in range(count):
            picked = rng.sample(docs, rng.randint(2, 6))
            text = "\n\n".join(paragraph for _, paragraph in picked)
            score = round(rng.uniform(2.5, 4.8), 6)
            segment = f"{rng.randint(1700000000000, 1709999999999)}.{rng.randint(10, 99)}"
            rows.append(
                {
                    "text": text,
                    "id": f"<urn:uuid:{rng.getrandbits(128):032x}>",
                    "dump": dump,
                    "url": f"https://docs.python.org/3/reference/{picked[0][0]}.html",
                    "file_path": f"s3://commoncrawl/crawl-data/{dump}/segments/{segment}/warc/{dump}-{segment}.warc.gz",
                    "language": "en",
                    "language_score": round(rng.uniform(0.85, 0.99), 6),
                    "token_count": int(len(text.split()) * 1.3),
                    "score": score,
                    "int_score": int(round(score)),
                }
            )
        schema = pa.schema(
            [
                ("text", pa.string()),
                ("id", pa.string()),
                ("dump", pa.string()),
                ("url", pa.string()),
                ("file_path", pa.string()),
                ("language", pa.string()),
                ("language_score", pa.float64()),
                ("token_count", pa.int64()),
                ("score", pa.float64()),
                ("int_score", pa.int64()),
            ]
        )
        return pa.Table.from_pylist(rows, schema=schema)

    for index in range(2):
        path = folder / "sample" / "10BT" / f"{index:03d}_00000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(shard(rows_per_shard, "CC-MAIN-2024-10"), path)
    path = folder / "data" / "CC-MAIN-2024-10" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(shard(rows_per_shard // 2, "CC-MAIN-2024-10"), path)
    front_matter = """
license: odc-by
task_categories:
- text-generation
language:
- en
pretty_name: FineWeb-Edu
size_categories:
- n>1T
configs:
- config_name: default
  data_files:
  - split: train
    path: data/*/*
- config_name: sample-10BT
  data_files:
  - split: train
    path: sample/10BT/*
- config_name: CC-MAIN-2024-10
  data_files:
  - split: train
    path: data/CC-MAIN-2024-10/*
"""
    (folder / "README.md").write_text(card(front_matter, "📚 FineWeb-Edu"))


SPAM = [
    "WINNER!! You have been selected to receive a {n} prize reward! To claim call 0906{d} now. Valid 12 hours only.",
    "URGENT! Your mobile number has won {n} cash. Text CLAIM to 8{d} to collect. T&Cs apply, 18+ only.",
    "FREE entry in a weekly competition to win FA Cup final tickets. Text FA to 8{d} to receive the entry question.",
    "Congratulations! You are awarded a {n} bonus. Call 0800{d} from a landline. Opt out: reply STOP.",
    "Your free ringtone is waiting to be collected. Simply text the password MIX to 8{d} to verify. {n} per week.",
]
HAM = [
    "Ok lar... I'll be there by {h}, wait for me at the station.",
    "Sorry, I'll call you later. In a meeting until {h}.",
    "Did you finish reading about {topic}? I still don't get it.",
    "Hey, are we still on for dinner tonight? Let me know by {h}.",
    "I'm going home now, traffic is bad. See you tomorrow.",
    "Can you bring the notes on {topic} to class?",
    "Haha that's so funny. Ok see you at {h} then.",
    "Mum says dinner is at {h}, don't be late again.",
]


def build_sms_spam(folder: Path, topics: list[str], rows: int) -> None:
    """SMS Spam Collection: config `plain_text`, one `train` parquet shard written by `datasets` (ClassLabel kept)."""
    from datasets import ClassLabel, Dataset, Features, Value

    rng = random.Random(2)
    sms, labels = [], []
    for _ in range(rows):
        spam = rng.random() < 0.134
        template = rng.choice(SPAM if spam else HAM)
        values = dict(n=f"£{rng.choice([100, 250, 500, 1000, 2000])}", d=rng.randint(10000, 99999))
        values.update(h=f"{rng.randint(1, 12)}{rng.choice(['am', 'pm'])}", topic=rng.choice(topics))
        sms.append(template.format(**values))
        labels.append(int(spam))
    features = Features({"sms": Value("string"), "label": ClassLabel(names=["ham", "spam"])})
    dataset = Dataset.from_dict({"sms": sms, "label": labels}, features=features)
    path = folder / "plain_text" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    dataset.to_parquet(str(path))
    front_matter = f"""
annotations_creators:
- crowdsourced
- found
language_creators:
- crowdsourced
- found
language:
- en
license:
- unknown
multilinguality:
- monolingual
size_categories:
- 1K<n<10K
source_datasets:
- extended|other-nus-sms-corpus
task_categories:
- text-classification
task_ids:
- intent-classification
paperswithcode_id: sms-spam-collection-data-set
pretty_name: SMS Spam Collection Data Set
dataset_info:
  config_name: plain_text
  features:
  - name: sms
    dtype: string
  - name: label
    dtype:
      class_label:
        names:
          '0': ham
          '1': spam
  splits:
{split_info("train", dataset)}  download_size: {path.stat().st_size}
  dataset_size: {dataset.data.nbytes}
configs:
- config_name: plain_text
  data_files:
  - split: train
    path: plain_text/train-*
  default: true
"""
    (folder / "README.md").write_text(card(front_matter, "Dataset Card for SMS Spam Collection Data Set"))


INSTRUCTIONS_WITH_INPUT = [
    "Summarize the following passage in one sentence.",
    "Rewrite the following text so that a beginner can understand it.",
    "What is the main idea of this paragraph?",
]
INSTRUCTIONS_ALONE = [
    "Explain what the Python documentation says about {topic}.",
    "Describe {topic} in Python.",
    "Give a short explanation of {topic}.",
]


def build_alpaca_cleaned(folder: Path, docs: list[tuple[str, str]], rows: int) -> None:
    """Alpaca-cleaned: one JSON array of `{output, input, instruction}` (key order as in the real file)."""
    rng = random.Random(3)
    records = []
    for _ in range(rows):
        topic, paragraph = rng.choice(docs)
        topic = topic.replace("-", " ")
        sentences = re.split(r"(?<=[.!?])\s", paragraph)
        if rng.random() < 0.4 and len(paragraph) < 500:  # most Alpaca inputs and answers are a few sentences
            instruction, input_text, output = rng.choice(INSTRUCTIONS_WITH_INPUT), paragraph, sentences[0]
        else:
            output = " ".join(sentences[: rng.randint(1, 3)])
            instruction, input_text = rng.choice(INSTRUCTIONS_ALONE).format(topic=topic), ""
        records.append({"output": output, "input": input_text, "instruction": instruction})
    (folder / "alpaca_data_cleaned.json").write_text(json.dumps(records, indent=4, ensure_ascii=False))
    front_matter = """
license: cc-by-4.0
language:
- en
tags:
- instruction-finetuning
pretty_name: Alpaca-Cleaned
task_categories:
- text-generation
"""
    (folder / "README.md").write_text(card(front_matter, "Dataset Card for Alpaca-Cleaned"))


def build_ultrafeedback_binarized(folder: Path, docs: list[tuple[str, str]], rows: dict[str, int]) -> None:
    """UltraFeedback binarized (TRL's copy): conversational `chosen`/`rejected`, scores, `train` and `test`."""
    from datasets import Dataset, Features, List, Value

    rng = random.Random(4)
    message = {"content": Value("string"), "role": Value("string")}
    features = Features(
        {
            "chosen": List(message),
            "rejected": List(message),
            "score_chosen": Value("float64"),
            "score_rejected": Value("float64"),
        }
    )
    splits = {}
    for split, count in rows.items():
        columns = {name: [] for name in features}
        for _ in range(count):
            topic, paragraph = rng.choice(docs)
            prompt = rng.choice(INSTRUCTIONS_ALONE).format(topic=topic.replace("-", " "))
            words = paragraph.split()
            rng.shuffle(words)
            rejected = " ".join(words[: rng.randint(5, max(6, len(words)))])
            columns["chosen"].append(
                [{"content": prompt, "role": "user"}, {"content": paragraph, "role": "assistant"}]
            )
            columns["rejected"].append(
                [{"content": prompt, "role": "user"}, {"content": rejected, "role": "assistant"}]
            )
            score_chosen = float(rng.choice([7.0, 7.5, 8.0, 8.5, 9.0, 10.0]))
            columns["score_chosen"].append(score_chosen)
            columns["score_rejected"].append(score_chosen - float(rng.choice([1.0, 2.5, 4.0, 5.5])))
        dataset = Dataset.from_dict(columns, features=features)
        path = folder / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(path))
        splits[split] = dataset
    download_size = sum(path.stat().st_size for path in (folder / "data").iterdir())
    front_matter = f"""
dataset_info:
  features:
  - name: chosen
    list:
    - name: content
      dtype: string
    - name: role
      dtype: string
  - name: rejected
    list:
    - name: content
      dtype: string
    - name: role
      dtype: string
  - name: score_chosen
    dtype: float64
  - name: score_rejected
    dtype: float64
  splits:
{"".join(split_info(name, dataset) for name, dataset in splits.items())}  download_size: {download_size}
  dataset_size: {sum(dataset.data.nbytes for dataset in splits.values())}
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
"""
    (folder / "README.md").write_text(card(front_matter, "UltraFeedback - Binarized"))


# ---------------------------------------------------------------------------------------------------------------
# Build and serve


def repo_folder(root: Path, repo_id: str) -> Path:
    return Path(root) / REPOS[repo_id] / repo_id


def build_local_hub(root: str | os.PathLike, rows: int = 300) -> Path:
    """Write every repo under `root/{model,dataset}/<repo id>/` (skipped when `root` was built before).

    Args:
        root: the folder to write into.
        rows: rows per dataset split (FineWeb-Edu's `sample-10BT`: two shards of `rows // 2`; UltraFeedback's test
            split: `rows // 5`).

    Returns:
        `Path`: `root`.
    """
    from datasets.utils.logging import disable_progress_bar

    root = Path(root)
    if (root / BUILT_MARKER).is_file():
        return root
    disable_progress_bar()
    docs = paragraphs()
    texts = [paragraph for _, paragraph in docs]
    for repo_id in REPOS:
        repo_folder(root, repo_id).mkdir(parents=True, exist_ok=True)
    build_gpt2(repo_folder(root, GPT2_REPO), texts)
    build_fineweb_edu(repo_folder(root, FINEWEB_REPO), docs, rows // 2)
    build_sms_spam(repo_folder(root, SMS_SPAM_REPO), sorted({topic for topic, _ in docs}), rows)
    build_alpaca_cleaned(repo_folder(root, ALPACA_REPO), docs, rows)
    build_ultrafeedback_binarized(repo_folder(root, ULTRAFEEDBACK_REPO), docs, {"train": rows, "test": rows // 5})
    (root / BUILT_MARKER).write_text(json.dumps({"rows": rows, "built": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    return root


def serve_local_hub(server, root: str | os.PathLike) -> None:
    """Add every repo built under `root` to a running `hub_server.HubServer`, under its real name."""
    for repo_id, repo_type in REPOS.items():
        folder = repo_folder(Path(root), repo_id)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        server.add_repo(repo_type, repo_id, files)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="where the repos are written (reused when built before)")
    parser.add_argument("--rows", type=int, default=300, help="rows per dataset split")
    parser.add_argument("--serve", action="store_true", help="then serve them on 127.0.0.1 until killed")
    parser.add_argument("--port", type=int, default=0, help="with --serve: the port (default: a free one)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    root = build_local_hub(args.output_dir, rows=args.rows)
    print(f"local Hub repos in {root} ({time.monotonic() - start:.1f} s)", flush=True)
    if not args.serve:
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hub_server import HubServer

    with HubServer(port=args.port) as server:
        serve_local_hub(server, root)
        env = server.env(str(Path(args.output_dir).resolve() / "hf_home"))
        print(" ".join(f"{key}={value}" for key, value in env.items()), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
