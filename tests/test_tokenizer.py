"""Byte-level BPE training, special tokens, the Alpaca chat template, and the train_tokenizer script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import script_main
from transformers import AutoTokenizer

from hf_llm.data import DataArguments, DataError
from hf_llm.errors import UsageError
from hf_llm.tokenizer import (
    ALPACA_PREAMBLE,
    EOS_TOKEN,
    PAD_TOKEN,
    TokenizerArguments,
    alpaca_messages,
    format_alpaca_prompt,
    train_tokenizer,
)

REPO = Path(__file__).resolve().parents[1]


def test_special_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    assert len(tok) == 300
    assert tok.eos_token == tok.bos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.unk_token is None
    assert tok.encode(EOS_TOKEN) == [tok.eos_token_id]  # one token, never split


@pytest.mark.parametrize("text", ["def add(a, b):\n    return a + b", "  two  spaces\ttab", "café ✓ 日本", "x" * 50])
def test_round_trip_is_lossless(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text
    assert all(0 <= i < len(tiny_tokenizer) for i in ids)


def test_merges_are_learned(tiny_tokenizer):
    text = "Python is a programming language"
    assert len(tiny_tokenizer(text)["input_ids"]) < len(text.encode())


def test_chat_template_renders_the_alpaca_prompt(tiny_tokenizer):
    prompt = tiny_tokenizer.apply_chat_template(
        alpaca_messages("Explain `with`.", "x = 1"), add_generation_prompt=True, tokenize=False
    )
    assert prompt == format_alpaca_prompt("Explain `with`.", "x = 1")
    assert prompt == f"{ALPACA_PREAMBLE}\n\n### Instruction:\nExplain `with`.\n\n### Input:\nx = 1\n\n### Response:\n"
    no_input = tiny_tokenizer.apply_chat_template(
        alpaca_messages("Say hi."), add_generation_prompt=False, tokenize=False
    )
    assert "### Input:" not in no_input and not no_input.endswith("### Response:\n")
    system = [{"role": "system", "content": "Be brief."}, *alpaca_messages("Say hi.")]
    assert tiny_tokenizer.apply_chat_template(system, tokenize=False).startswith("Be brief.\n\n### Instruction:")


def test_assistant_mask_covers_the_response_and_eos(tiny_tokenizer):
    out = tiny_tokenizer.apply_chat_template(
        alpaca_messages("Say hi.", "", "Hello there."), return_dict=True, return_assistant_tokens_mask=True
    )
    answer = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tiny_tokenizer.decode(answer) == "Hello there." + EOS_TOKEN
    full = tiny_tokenizer.decode(out["input_ids"])
    assert full == format_alpaca_prompt("Say hi.", response="Hello there.") + EOS_TOKEN


def test_save_and_autotokenizer_load(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert (loaded.eos_token, loaded.pad_token) == (EOS_TOKEN, PAD_TOKEN)
    assert loaded.chat_template == tiny_tokenizer.chat_template
    text = "Return the number of items."
    assert loaded(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]


def test_bad_arguments():
    with pytest.raises(DataError, match="--vocab_size 100 is smaller than the 258 base tokens"):
        train_tokenizer(["abc"], vocab_size=100)
    with pytest.raises(DataError, match="got no text"):
        train_tokenizer([], vocab_size=300)
    with pytest.raises(TypeError, match="not a single string"):
        train_tokenizer("abc", vocab_size=300)


def test_script_trains_on_a_local_file_and_records_its_recipe(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"body": f"line {i} of some text about Python"}) + "\n" for i in range(50)))
    main = script_main("train_tokenizer")
    out = tmp_path / "tok"
    data_args = DataArguments(dataset_name=str(corpus), text_column="body")
    main(data_args, TokenizerArguments(output_dir=str(out), vocab_size=280, min_frequency=1))
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 280 and tok.pad_token != tok.eos_token
    recipe = (out / "recipe.yaml").read_text()
    assert "text_column: body" in recipe and "vocab_size: 280" in recipe
    fingerprint = json.loads((out / "data_fingerprint.json").read_text())
    assert fingerprint["dataset_name"] == str(corpus) and len(fingerprint["fingerprint"]) == 16


@pytest.mark.slow
def test_cli_on_pydocs_and_one_clear_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_LLM_CACHE": str(tmp_path / "cache")}
    script = str(REPO / "train_scripts/train_tokenizer.py")
    out = tmp_path / "tok"
    cmd = [sys.executable, script, "--dataset_name", "pydocs", "--vocab_size", "4096", "--output_dir", str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 4096 and tok.pad_token != tok.eos_token
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\n")
    result = subprocess.run(
        [sys.executable, script, "--dataset_name", str(bad), "--output_dir", str(tmp_path / "x")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2  # argparse's exit code for a user's mistake (hf_llm.errors.exit_on_user_error)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("train_tokenizer.py: error: ")
    assert "bad.txt is not valid UTF-8: byte 0xff at byte offset 5" in result.stderr


def test_script_never_writes_over_a_users_files_or_into_the_data(tmp_path):
    """The output-directory rule of every command: a re-run replaces its own earlier tokenizer, a directory with
    other files needs --overwrite_output_dir, and the data's own folder is refused whatever the flag says."""
    main = script_main("train_tokenizer")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(
        "".join(json.dumps({"text": f"line {i} about Python"}) + "\n" for i in range(40))
    )
    data_args = DataArguments(dataset_name=str(data))

    def train(output_dir, **flags):
        main(data_args, TokenizerArguments(output_dir=str(output_dir), vocab_size=270, min_frequency=1, **flags))

    with pytest.raises(UsageError, match=r"--output_dir .* is inside the input --dataset_name .*-tokenizer"):
        train(data / "tok", overwrite_output_dir=True)
    assert sorted(p.name for p in data.iterdir()) == ["train.jsonl"]

    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already holds notes.txt"):
        train(users)
    assert (users / "notes.txt").read_text() == "mine"

    out = tmp_path / "tok"
    train(out)
    first = (out / "tokenizer.json").read_text()
    train(out)  # its own earlier tokenizer: replaced, byte for byte the same training
    assert (out / "tokenizer.json").read_text() == first
    train(users, overwrite_output_dir=True)
    assert not (users / "notes.txt").exists() and AutoTokenizer.from_pretrained(users).vocab_size <= 270
