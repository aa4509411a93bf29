"""The `hf-llm` command: the end-to-end pipeline on tiny data, report writing, generation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_gpt_config

from hf_llm import GPTForCausalLM
from hf_llm.cli import main
from hf_llm.pipeline import PipelineStage, find_checkout, write_report

CHECKOUT = Path(__file__).resolve().parents[1]


def test_find_checkout_names_the_fix_when_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="--repo_dir"):
        find_checkout(str(tmp_path))
    assert find_checkout(str(CHECKOUT)) == CHECKOUT


def test_report_tabulates_perplexity_and_embeds_stage_metrics(tmp_path):
    pretrain_dir = tmp_path / "pretrain"
    pretrain_dir.mkdir()
    history = [{"step": 0, "eval_perplexity": 900.0}, {"step": 5, "loss": 5.0}, {"step": 10, "eval_perplexity": 120.5}]
    (pretrain_dir / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    eval_dir = tmp_path / "eval-pretrain"
    eval_dir.mkdir()
    (eval_dir / "metrics.md").write_text("| metric | value |\n|---|---|\n| perplexity | 118.0 |\n")
    stages = [PipelineStage("pretrain", [], pretrain_dir), PipelineStage("eval_pretrain", [], eval_dir)]

    report = write_report(tmp_path, stages, {"pretrain": 12.0, "eval_pretrain": 3.0}).read_text()

    assert "| 0 | 900.00 |" in report and "| 10 | 120.50 |" in report
    assert "| perplexity | 118.0 |" in report
    assert "| pretrain | " in report and "| 12 |" in report
    assert (tmp_path / "pretrain_perplexity.png").stat().st_size > 1000


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


@pytest.mark.slow  # runs in `make test` and CI; `make test-fast` skips it
def test_pipeline_end_to_end_on_tiny_data(tmp_path):
    """`hf-llm pipeline` trains a tokenizer and a GPT on pydocs, evaluates it, and reports falling perplexity."""
    recipe = yaml.safe_load((CHECKOUT / "train_scripts/configs/pretrain/tiny.yaml").read_text())
    recipe.update(
        tokenizer_vocab_size=512,
        max_train_samples=400,
        max_eval_samples=32,
        max_steps=12,
        warmup_steps=2,
        eval_steps=6,
        save_steps=6,
        logging_steps=3,
        report_to="none",
    )
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    output_dir = tmp_path / "pipeline"

    result = subprocess.run(
        [sys.executable, "-m", "hf_llm.cli", "pipeline", "--output_dir", str(output_dir)]
        + ["--pretrain_config", str(recipe_path), "--repo_dir", str(CHECKOUT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    history = json.loads((output_dir / "pretrain" / "trainer_state.json").read_text())["log_history"]
    perplexities = [entry["eval_perplexity"] for entry in history if "eval_perplexity" in entry]
    assert len(perplexities) >= 2 and perplexities[-1] < perplexities[0]
    metrics = json.loads((output_dir / "eval-pretrain" / "metrics.json").read_text())
    assert metrics["metrics"]["perplexity"] > 1
    report = (output_dir / "report.md").read_text()
    assert "validation perplexity" in report and "bits_per_byte" in report
