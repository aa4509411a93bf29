"""The `hf-llm` command: parsing, dispatch, one-line errors, generation (the pipeline: tests/test_pipeline.py)."""

from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt_config

from hf_llm import GPTForCausalLM
from hf_llm.cli import main
from hf_llm.pipeline import find_checkout

CHECKOUT = Path(__file__).resolve().parents[1]


def test_find_checkout_names_the_fix_when_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="--repo_dir"):
        find_checkout(str(tmp_path))
    assert find_checkout(str(CHECKOUT)) == CHECKOUT


def test_generate_prints_the_greedy_continuation(tmp_path, tiny_tokenizer, capsys):
    torch.manual_seed(0)
    config = tiny_gpt_config(tiny_tokenizer)
    model = GPTForCausalLM(config).eval()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    prompt_ids = tiny_tokenizer("def f", return_tensors="pt").input_ids
    expected_ids = model.generate(prompt_ids, max_new_tokens=6, do_sample=False, pad_token_id=config.pad_token_id)
    expected = tiny_tokenizer.decode(expected_ids[0], skip_special_tokens=True)
    capsys.readouterr()  # only what `hf-llm generate` prints (DeepSpeed, when installed, logs to stdout on first use)

    assert main(["generate", "--model_name_or_path", str(tmp_path), "--prompt", "def f", "--max_new_tokens", "6"]) == 0
    assert capsys.readouterr().out.strip() == expected.strip()


def test_user_mistakes_end_in_one_line_and_exit_2(tmp_path, capsys):
    missing = str(tmp_path / "missing")
    for argv, flag in (
        (["eval", "--model_name_or_path", missing, "--task", "pretrain"], "--model_name_or_path"),
        (["eval", "--model_name_or_path", missing, "--task", "classification"], "--task"),
        (["generate", "--model_name_or_path", missing, "--prompt", "x"], "--model_name_or_path"),
        (["pipeline", "--repo_dir", missing], "--repo_dir"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--dataset_name", "pydocs", "--output_dir", str(tmp_path)] if argv[0] == "eval" else argv)
        assert exit_info.value.code == 2, argv
        stderr = capsys.readouterr().err.strip()
        assert stderr.startswith(f"hf-llm {argv[0]}: error: ") and flag in stderr, stderr
        assert len(stderr.splitlines()) == 1, stderr


def test_unknown_flags_are_refused_except_where_forwarded(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model_name_or_path", "x", "--prompt", "y", "--no_such_flag"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --no_such_flag" in capsys.readouterr().err
