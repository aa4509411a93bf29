"""Streaming pretraining (`--streaming true`): documents read as a stream, tokenized and packed on the fly.

What is proved, on a local folder of JSON Lines files and on a parquet dataset served by the test Hub:

- The blocks are the documents' tokens (eos after each) in source order, cut every `block_size` tokens: nothing is
  skipped or repeated within a pass; a new pass is logged before any example repeats.
- A stream given the position saved after any recent block yields exactly the blocks that followed (across a pass
  boundary too), and a training run resumed from `checkpoint-N` trains on exactly the token ids, and logs exactly the
  losses, of the uninterrupted run: after a copy of the checkpoint, after a real SIGKILL, and on 2 processes, each
  reading its own share of the files.
- Two processes read disjoint shares that together cover every document, by whole files or by every other document.
- Without a validation split, the documents held out for validation (by content hash) never reach training, and the
  evaluation set is a fixed number of blocks (`--streaming_eval_blocks`).
- Flags a stream cannot honour fail in one line naming the flag.
"""

import functools
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PRETRAIN_SCRIPT, REPO_ROOT, TINY_CORPUS, TINY_PRETRAIN_ARGS
from datasets import load_dataset
from datasets.distributed import split_dataset_by_node
from hub_server import patch_hub_env

from hf_llm import GPTForCausalLM
from hf_llm.data import DataArguments, load_pydocs
from hf_llm.data.loading import load_text_stream
from hf_llm.data.packing import PackedBlockStream, is_held_out
from hf_llm.errors import UsageError
from hf_llm.training.pretraining import stream_for_pretraining

BLOCK = 16  # TINY_PRETRAIN_ARGS' --block_size
BATCH = 4  # TINY_PRETRAIN_ARGS' --per_device_train_batch_size
SENTENCES = sorted({s.strip() for text in TINY_CORPUS[:5] for s in text.replace("\n", " ").split(". ") if s.strip()})
HUB_REPO = "tester/streamed-corpus"
HUB_CONFIG = "sample-10BT"


def documents(count: int, tag: str) -> list[str]:
    """`count` distinct short documents (a tag, then three sentences of the tiny corpus)."""
    return [f"[{tag}.{i}] " + ". ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(3)) for i in range(count)]


def write_jsonl_folder(path, files: dict[str, list[str]]):
    path.mkdir(parents=True, exist_ok=True)
    for name, texts in files.items():
        with open(path / name, "w", encoding="utf-8") as file:
            for i, text in enumerate(texts):
                file.write(json.dumps({"id": i, "text": text}) + "\n")
    return path


def token_stream(tokenizer, texts: list[str]) -> list[int]:
    """The documents as one token stream, eos after each: what a pass over them must yield."""
    eos = [tokenizer.eos_token_id]
    return [t for text in texts for t in tokenizer(text, add_special_tokens=False)["input_ids"] + eos]


def blocks_of(stream: PackedBlockStream, count: int) -> list[list[int]]:
    return [block["input_ids"] for block in itertools.islice(iter(stream), count)]


def json_round_trip(state: dict) -> dict:
    return json.loads(json.dumps(state))


def jsonl_documents(folder, split="train"):
    files = sorted(str(p) for p in folder.glob(f"{split}*.jsonl"))
    return load_dataset("json", data_files={split: files}, split=split, streaming=True)


@pytest.fixture(scope="module")
def tokenizer_dir(tiny_tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("stream_tokenizer")
    tiny_tokenizer.save_pretrained(path)
    return str(path)


# ---------------------------------------------------------------------------------------------------------------
# The stream itself


def test_blocks_are_every_document_once_in_source_order_and_a_new_pass_is_announced(tiny_tokenizer, tmp_path, caplog):
    texts = {"train-0.jsonl": documents(5, "a"), "train-1.jsonl": documents(4, "b")}
    folder = write_jsonl_folder(tmp_path / "corpus", texts)
    one_pass = token_stream(tiny_tokenizer, texts["train-0.jsonl"] + texts["train-1.jsonl"])
    stream = PackedBlockStream(jsonl_documents(folder), tiny_tokenizer, BLOCK)
    count = 2 * len(one_pass) // BLOCK + 3  # into the third pass
    with caplog.at_level(logging.WARNING, logger="hf_llm.data.packing"):
        seen = [t for block in blocks_of(stream, count) for t in block]
    # The leftover tokens of a pass wait for the next one: blocks cut the repeated stream, nothing dropped.
    assert seen == (one_pass * 3)[: count * BLOCK]
    assert caplog.text.count("examples repeat from here on") == 2
    assert "Finished pass 1 over the streamed documents: 9 documents" in caplog.text
    position = stream.state_dict()
    assert position["passes"] == 2 and position["blocks"] == count


def test_a_stream_resumed_at_any_recent_block_yields_exactly_the_blocks_that_followed(tiny_tokenizer, tmp_path):
    texts = {f"train-{f}.jsonl": documents(4, str(f)) for f in range(3)}
    folder = write_jsonl_folder(tmp_path / "corpus", texts)
    straight = PackedBlockStream(jsonl_documents(folder), tiny_tokenizer, BLOCK)
    total = len(token_stream(tiny_tokenizer, sum(texts.values(), []))) // BLOCK + 6  # crosses a pass boundary
    expected = blocks_of(straight, total)
    for stop in [1, 2, 5, 9, total - 7, total - 5, total - 1]:
        reader = PackedBlockStream(jsonl_documents(folder), tiny_tokenizer, BLOCK, tokenize_batch_size=3)
        read = blocks_of(reader, stop + BATCH)  # a dataloader reads ahead of what was trained on
        resumed = PackedBlockStream(jsonl_documents(folder), tiny_tokenizer, BLOCK)
        resumed.load_state_dict(json_round_trip(reader.state_after(stop)))
        assert read[:stop] + blocks_of(resumed, total - stop) == expected, f"resumed after block {stop}"


def test_a_position_older_than_the_history_is_refused(tiny_tokenizer, tmp_path):
    folder = write_jsonl_folder(tmp_path / "corpus", {"train.jsonl": documents(20, "a")})
    stream = PackedBlockStream(jsonl_documents(folder), tiny_tokenizer, BLOCK, history=4)
    blocks_of(stream, 10)
    assert stream.state_after(7)["blocks"] == 7
    with pytest.raises(ValueError, match="position after block 5 is not known: it has yielded 10 blocks"):
        stream.state_after(5)


@pytest.mark.parametrize("num_files, share", [(2, "whole files"), (3, "every other document")])
def test_two_ranks_read_disjoint_shares_that_cover_every_document(tiny_tokenizer, tmp_path, num_files, share):
    texts = {f"train-{f}.jsonl": documents(6, str(f)) for f in range(num_files)}
    folder = write_jsonl_folder(tmp_path / "corpus", texts)
    every_document = sum(texts.values(), [])
    shares = []
    for rank in (0, 1):
        rank_documents = split_dataset_by_node(jsonl_documents(folder), rank=rank, world_size=2)
        shares.append([example["text"] for example in rank_documents])
        # The rank's blocks are its own documents' tokens, in order (a stream starts from a dataset not yet read).
        rank_documents = split_dataset_by_node(jsonl_documents(folder), rank=rank, world_size=2)
        stream = PackedBlockStream(rank_documents, tiny_tokenizer, BLOCK, repeat=False)
        seen = [t for block in iter(stream) for t in block["input_ids"]]
        expected = token_stream(tiny_tokenizer, shares[rank])
        assert seen == expected[: len(expected) // BLOCK * BLOCK]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(every_document)
    if share == "whole files":
        assert shares == [texts["train-0.jsonl"], texts["train-1.jsonl"]]
    else:
        assert shares == [every_document[0::2], every_document[1::2]]


def test_documents_held_out_for_validation_never_reach_training(tiny_tokenizer, tmp_path):
    texts = documents(200, "a")
    folder = write_jsonl_folder(tmp_path / "corpus", {"train.jsonl": texts})
    data_args = DataArguments(
        dataset_name=str(folder), streaming=True, validation_split_percentage=20, block_size=BLOCK,
        streaming_eval_blocks=6,
    )  # fmt: skip
    stream = load_text_stream(data_args)
    assert stream.splits == {"train": "train"} and stream.hold_out_percentage == 20
    train, validation = stream_for_pretraining(stream, tiny_tokenizer, data_args, max_length=32)

    held_out = [text for text in texts if is_held_out(text, 20)]
    kept = [text for text in texts if not is_held_out(text, 20)]
    assert 20 < len(held_out) < 60  # about 20% of 200
    assert len(validation) == 6  # --streaming_eval_blocks
    assert [t for row in validation["input_ids"] for t in row] == token_stream(tiny_tokenizer, held_out)[: 6 * BLOCK]
    one_pass = token_stream(tiny_tokenizer, kept)
    count = len(one_pass) // BLOCK
    assert [t for block in blocks_of(train, count) for t in block] == one_pass[: count * BLOCK]
    position = train.state_dict()
    consumed = texts[: position["documents_read"] + position["documents_held_out"]]
    assert position["documents_held_out"] == sum(is_held_out(text, 20) for text in consumed) > 0


def test_streams_a_parquet_dataset_from_the_hub_by_config(hub_parquet, tiny_tokenizer, monkeypatch):
    url, env, texts, sha = hub_parquet
    patch_hub_env(monkeypatch, env)
    data_args = DataArguments(dataset_name=HUB_REPO, dataset_config_name=HUB_CONFIG, streaming=True)
    stream = load_text_stream(data_args)
    assert stream.splits == {"train": "train"}  # the repo has no validation split: documents are held out
    assert len(stream.data_files["train"]) == 2
    assert all(f"{HUB_REPO}@{sha}/" in path for path in stream.data_files["train"])  # pinned to the commit read
    documents_read = [example["text"] for example in stream.documents("train")]
    assert documents_read == texts  # both shards, in order; the metadata columns are ignored
    two_ranks = [[e["text"] for e in split_dataset_by_node(stream.documents("train"), rank, 2)] for rank in (0, 1)]
    assert two_ranks == [texts[: len(texts) // 2], texts[len(texts) // 2 :]]  # one parquet file each


# ---------------------------------------------------------------------------------------------------------------
# Training on a stream


def streaming_argv(dataset, tokenizer_dir, output_dir, *extra) -> list:
    return [
        "--dataset_name", dataset, "--streaming", "true", "--tokenizer_name_or_path", tokenizer_dir,
        "--output_dir", output_dir, *TINY_PRETRAIN_ARGS, "--max_steps", "8", "--save_steps", "4",
        "--eval_strategy", "steps", "--eval_steps", "4", "--streaming_eval_blocks", "4", *extra,
    ]  # fmt: skip


def losses(output_dir) -> dict[int, float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def record_training_batches(monkeypatch) -> list[list[int]]:
    """Every `input_ids` row the model trains on (not evaluation), in order, from now on in this process."""
    rows = []
    forward = GPTForCausalLM.forward

    @functools.wraps(forward)  # Trainer reads the signature to pick the dataset columns
    def recording_forward(self, *args, **kwargs):
        if self.training:
            rows.extend(kwargs["input_ids"].tolist())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GPTForCausalLM, "forward", recording_forward)
    return rows


TRAIN_TEXTS = {"train-0.jsonl": documents(2, "a"), "train-1.jsonl": documents(2, "b")}
VALIDATION_TEXTS = {"validation.jsonl": documents(8, "v")}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """A folder of 2 training files (about 26 blocks of 16: 8 steps of 4 blocks cross into a second pass) and a
    validation file."""
    return write_jsonl_folder(tmp_path_factory.mktemp("small_corpus"), {**TRAIN_TEXTS, **VALIDATION_TEXTS})


@pytest.fixture(scope="module")
def straight_streaming_run(small_corpus, tokenizer_dir, run_pretrain, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("straight_stream") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        rows = record_training_batches(monkeypatch)
        run_pretrain(streaming_argv(small_corpus, tokenizer_dir, output_dir))
    return output_dir, rows


def test_a_streaming_run_trains_on_every_token_once_in_order_and_evaluates_fixed_blocks(
    straight_streaming_run, tiny_tokenizer
):
    output_dir, rows = straight_streaming_run
    one_pass = token_stream(tiny_tokenizer, TRAIN_TEXTS["train-0.jsonl"] + TRAIN_TEXTS["train-1.jsonl"])
    assert len(rows) == 8 * BATCH
    assert [t for row in rows for t in row] == (one_pass * 3)[: 8 * BATCH * BLOCK]
    assert len(one_pass) < 8 * BATCH * BLOCK  # the run did cross into a second pass
    state = json.loads((output_dir / "trainer_state.json").read_text())
    evals = [entry for entry in state["log_history"] if "eval_loss" in entry]
    assert [entry["step"] for entry in evals] == [4, 8] and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    position = json.loads((output_dir / "checkpoint-4" / "stream_state_0.json").read_text())
    assert position["num_processes"] == 1 and position["stream"]["blocks"] == 4 * BATCH
    fingerprint = json.loads((output_dir / "data_fingerprint.json").read_text())
    assert fingerprint["streaming"] is True and set(fingerprint["splits"]) == {"train", "validation"}


def test_resume_from_a_checkpoint_trains_on_the_same_tokens_with_the_same_losses(
    straight_streaming_run, small_corpus, tokenizer_dir, run_pretrain, monkeypatch, tmp_path
):
    straight_dir, straight_rows = straight_streaming_run
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight_dir / "checkpoint-4", resumed / "checkpoint-4")  # a job that stopped after step 4
    rows = record_training_batches(monkeypatch)
    run_pretrain([*streaming_argv(small_corpus, tokenizer_dir, resumed), "--resume_from_checkpoint", "latest"])

    assert rows == straight_rows[4 * BATCH :]  # not re-read, not skipped: the blocks of steps 5..8
    expected, got = losses(straight_dir), losses(resumed)
    for step in range(5, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"


def test_resume_with_another_batch_size_is_refused(
    straight_streaming_run, small_corpus, tokenizer_dir, run_pretrain, tmp_path
):
    straight_dir, _ = straight_streaming_run
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight_dir / "checkpoint-4", resumed / "checkpoint-4")
    argv = [*streaming_argv(small_corpus, tokenizer_dir, resumed), "--resume_from_checkpoint", "latest"]
    with pytest.raises(
        UsageError, match="stream was saved after 16 blocks, but this run resumes after 4 batches of 2"
    ):
        run_pretrain([*argv, "--per_device_train_batch_size", "2"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max_steps", "-1"], "--streaming needs --max_steps"),
        (["--dataloader_num_workers", "2"], "--dataloader_num_workers 2 does not apply with --streaming"),
        (["--packing", "padding_free"], "--packing padding_free does not apply with --streaming"),
        (["--max_train_samples", "10"], "--max_train_samples does not apply with --streaming"),
        (["--max_eval_samples", "10"], "--streaming_eval_blocks sets the size of the validation set"),
        (["--text_column", "body"], "column 'body' not found in the streamed dataset; columns are"),
    ],
)
def test_flags_a_stream_cannot_honour_are_refused_in_one_line(
    extra, message, small_corpus, tokenizer_dir, run_pretrain, tmp_path
):
    with pytest.raises(UsageError, match=message):
        run_pretrain([*streaming_argv(small_corpus, tokenizer_dir, tmp_path / "run"), *extra])


def test_streaming_needs_a_tokenizer(small_corpus, tokenizer_dir, run_pretrain, tmp_path):
    argv = streaming_argv(small_corpus, tokenizer_dir, tmp_path / "run")
    at = argv.index("--tokenizer_name_or_path")
    with pytest.raises(UsageError, match="--streaming needs an existing tokenizer"):
        run_pretrain(argv[:at] + argv[at + 2 :])


def test_the_bundled_pydocs_corpus_streams_from_memory_in_order():
    stream = load_text_stream(DataArguments(dataset_name="pydocs", streaming=True))
    corpus = load_pydocs("text")
    assert stream.splits == {"train": "train", "validation": "validation"} and stream.hold_out_percentage == 0
    for split in stream.splits:
        head = [example["text"] for example in itertools.islice(stream.documents(split), 50)]
        assert head == corpus[split]["text"][:50]


def test_a_streaming_run_on_a_hub_parquet_dataset_evaluates_held_out_blocks(
    hub_parquet, tokenizer_dir, run_pretrain, monkeypatch, tmp_path
):
    url, env, texts, sha = hub_parquet
    patch_hub_env(monkeypatch, env)
    output_dir = tmp_path / "run"
    argv = streaming_argv(HUB_REPO, tokenizer_dir, output_dir, "--dataset_config_name", HUB_CONFIG)
    metrics = run_pretrain([*argv, "--max_steps", "4", "--validation_split_percentage", "30"])
    assert metrics["eval_perplexity"] > 1
    fingerprint = json.loads((output_dir / "data_fingerprint.json").read_text())
    assert fingerprint["streaming"] is True and fingerprint["dataset_config_name"] == HUB_CONFIG
    assert all(f"@{sha}/" in path for path in fingerprint["splits"]["train"]["data_files"])


# ---------------------------------------------------------------------------------------------------------------
# Killed runs and 2 processes (subprocesses)

# Runs a script as `python script args...` would, recording the token ids every rank trains on and, with KILL_AT_STEP,
# SIGKILLing the process right after the checkpoint of that step is complete.
DRIVER = textwrap.dedent(
    """
    import functools, json, os, runpy, signal, sys
    from hf_llm import GPTForCausalLM
    from hf_llm.training import AtomicCheckpointMixin

    record = os.path.join(os.environ["RECORD_DIR"], f"tokens_{os.environ.get('RANK', '0')}.jsonl")
    forward = GPTForCausalLM.forward

    @functools.wraps(forward)
    def recording_forward(self, *args, **kwargs):
        if self.training:
            with open(record, "a") as file:
                file.write(json.dumps(kwargs["input_ids"].tolist()) + "\\n")
        return forward(self, *args, **kwargs)

    GPTForCausalLM.forward = recording_forward
    kill_at = int(os.environ.get("KILL_AT_STEP", "0"))
    save_checkpoint = AtomicCheckpointMixin._save_checkpoint

    def save_then_die(self, model, trial):
        save_checkpoint(self, model, trial)
        if self.state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    AtomicCheckpointMixin._save_checkpoint = save_then_die
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
    """
)


def recorded_rows(record_dir, rank: int = 0) -> list[list[int]]:
    path = record_dir / f"tokens_{rank}.jsonl"
    return [row for line in path.read_text().splitlines() for row in json.loads(line)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_driver(tmp_path, argv, *, record_dir, processes: int = 1, kill_at: int = 0) -> subprocess.CompletedProcess:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    record_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ, "RECORD_DIR": str(record_dir), "KILL_AT_STEP": str(kill_at), "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    }  # fmt: skip
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        launcher += ["--master_port", str(free_port())]
    command = [*launcher, str(driver), PRETRAIN_SCRIPT, *map(str, argv)]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_killed_streaming_run_resumes_on_the_same_tokens_with_the_same_losses(
    straight_streaming_run, small_corpus, tokenizer_dir, run_pretrain, monkeypatch, tmp_path
):
    straight_dir, straight_rows = straight_streaming_run
    output_dir = tmp_path / "killed"
    argv = streaming_argv(small_corpus, tokenizer_dir, output_dir, "--save_steps", "2")
    killed = run_driver(tmp_path, argv, record_dir=tmp_path / "killed_tokens", kill_at=6)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert recorded_rows(tmp_path / "killed_tokens") == straight_rows[: 6 * BATCH]

    rows = record_training_batches(monkeypatch)
    run_pretrain([*argv, "--resume_from_checkpoint", "latest"])
    assert rows == straight_rows[6 * BATCH :]
    expected, got = losses(straight_dir), losses(output_dir)
    assert sorted(got) == list(range(1, 9))
    for step in range(1, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"


@pytest.mark.slow
def test_two_processes_read_their_own_files_and_resume_exactly(tokenizer_dir, tiny_tokenizer, run_pretrain, tmp_path):
    texts = {f"train-{f}.jsonl": documents(6, str(f)) for f in range(4)}
    corpus = write_jsonl_folder(tmp_path / "corpus", {**texts, **VALIDATION_TEXTS})
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    steps = ["--max_steps", "6", "--save_steps", "3", "--eval_steps", "3"]
    argv = streaming_argv(corpus, tokenizer_dir, straight, *steps)
    result = run_driver(tmp_path, argv, record_dir=tmp_path / "straight_tokens", processes=2)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    # Each rank trained on its own files (0 and 2, or 1 and 3), in order.
    for rank in (0, 1):
        rows = recorded_rows(tmp_path / "straight_tokens", rank)
        own = token_stream(tiny_tokenizer, texts[f"train-{rank}.jsonl"] + texts[f"train-{rank + 2}.jsonl"])
        assert [t for row in rows for t in row] == (own * 2)[: 6 * BATCH * BLOCK], f"rank {rank}"
    checkpoint = straight / "checkpoint-3"
    assert {"stream_state_0.json", "stream_state_1.json"} <= {p.name for p in checkpoint.iterdir()}

    resumed.mkdir()
    shutil.copytree(checkpoint, resumed / "checkpoint-3")
    argv = [*streaming_argv(corpus, tokenizer_dir, resumed, *steps), "--resume_from_checkpoint", "latest"]
    result = run_driver(tmp_path, argv, record_dir=tmp_path / "resumed_tokens", processes=2)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    for rank in (0, 1):
        straight_rows = recorded_rows(tmp_path / "straight_tokens", rank)
        assert recorded_rows(tmp_path / "resumed_tokens", rank) == straight_rows[3 * BATCH :], f"rank {rank}"
    expected, got = losses(straight), losses(resumed)
    for step in range(4, 7):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"

    # One process cannot take over the streams of two.
    one = tmp_path / "one_process"
    one.mkdir()
    shutil.copytree(checkpoint, one / "checkpoint-3")
    argv = [*streaming_argv(corpus, tokenizer_dir, one, *steps), "--resume_from_checkpoint", "latest"]
    with pytest.raises(UsageError, match="was saved by 2 processes, each reading its own share of the stream"):
        run_pretrain(argv)


# ---------------------------------------------------------------------------------------------------------------
# A parquet dataset on the test Hub, laid out as FineWeb-Edu's sample configs are


@pytest.fixture(scope="module")
def hub_parquet(hub_server):
    """`(url, env, texts, sha)`: HUB_REPO with config HUB_CONFIG, two parquet shards under `sample/10BT/` with a
    `text` column and FineWeb-Edu-like metadata columns, and no validation split."""
    import io

    from huggingface_hub import HfApi

    url, env = hub_server
    texts = documents(24, "hub")
    readme = textwrap.dedent(
        f"""\
        ---
        configs:
        - config_name: {HUB_CONFIG}
          data_files:
          - split: train
            path: sample/10BT/*
        ---
        A streamed corpus for tests.
        """
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        patch_hub_env(monkeypatch, env)
        api = HfApi(endpoint=url, token="dummy")
        api.create_repo(HUB_REPO, repo_type="dataset", exist_ok=True)
        api.upload_file(
            path_or_fileobj=readme.encode(), path_in_repo="README.md", repo_id=HUB_REPO, repo_type="dataset"
        )
        half = len(texts) // 2
        for shard, shard_texts in enumerate([texts[:half], texts[half:]]):
            table = pa.table(
                {
                    "text": shard_texts,
                    "id": [f"<urn:uuid:{shard}-{i}>" for i in range(len(shard_texts))],
                    "url": [f"https://example.com/{shard}/{i}" for i in range(len(shard_texts))],
                    "token_count": pa.array([len(t.split()) for t in shard_texts], pa.int64()),
                    "score": pa.array([3.0] * len(shard_texts), pa.float64()),
                }
            )
            buffer = io.BytesIO()
            pq.write_table(table, buffer, row_group_size=5)
            commit = api.upload_file(
                path_or_fileobj=buffer.getvalue(),
                path_in_repo=f"sample/10BT/00{shard}_00000.parquet",
                repo_id=HUB_REPO,
                repo_type="dataset",
            )
    return url, env, texts, commit.oid
