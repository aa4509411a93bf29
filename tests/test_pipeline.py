"""`hf-llm pipeline`: the step table, skipping finished steps, resuming an interrupted stage, reporting a failed one,
the report, and the whole lifecycle end to end on a very small preset."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_llm.cli import build_parser
from hf_llm.errors import UsageError
from hf_llm.pipeline import build_steps, failure_summary, find_checkout
from hf_llm.pipeline_report import write_pipeline_report
from hf_llm.stages import PipelineStep

CHECKOUT = Path(__file__).resolve().parents[1]

# A very small preset: the `tiny` recipes cut to a few steps and a few dozen examples per stage.
MICRO = [
    "--max_steps",
    "2",
    "--max_eval_samples",
    "8",
    "--stage_args",
    "tokenizer=--vocab_size 400",
    "--stage_args",
    "pretrain=--max_train_samples 200 --eval_steps 1 --save_steps 1 --report_to none",
    "--stage_args",
    "classifier=--max_train_samples 64 --report_to none",
    "--stage_args",
    "sft=--max_train_samples 32 --report_to none",
    "--stage_args",
    "reward=--max_train_samples 32 --report_to none",
    "--stage_args",
    "ppo=--total_episodes 8 --per_device_train_batch_size 4 --local_rollout_forward_batch_size 4 "
    "--response_length 8 --win_rate_samples 4 --max_train_samples 16 --report_to none",
    "--stage_args",
    "dpo=--max_train_samples 16 --win_rate_samples 4 --report_to none",
]


def pipeline_args(*argv: str):
    return build_parser().parse_args(["pipeline", *argv])


def run_pipeline_process(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hf_llm.cli", "pipeline", "--repo_dir", str(CHECKOUT), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=1500, **kwargs)


def test_steps_chain_each_stage_to_the_output_it_reads(tmp_path):
    steps = build_steps(pipeline_args("--output_dir", str(tmp_path)), CHECKOUT)
    names = [step.name for step in steps]
    assert names == [
        "tokenizer",
        "pretrain",
        "eval-pretrain",
        "classifier",
        "eval-classifier",
        "eval-sft-before",
        "sft",
        "eval-sft",
        "reward",
        "eval-reward",
        "ppo",
        "eval-ppo",
        "dpo",
        "eval-dpo",
    ]
    by_name = {step.name: step.command for step in steps}

    def flag(step: str, name: str) -> str:
        command = by_name[step]
        return command[command.index(name) + 1]

    assert flag("pretrain", "--tokenizer_name_or_path") == str(tmp_path / "tokenizer")
    assert flag("sft", "--model_name_or_path") == str(tmp_path / "pretrain")
    assert flag("reward", "--model_name_or_path") == str(tmp_path / "sft")
    assert flag("ppo", "--reward_model_path") == str(tmp_path / "reward")
    assert flag("eval-dpo", "--reference_model_name_or_path") == str(tmp_path / "sft")
    assert flag("sft", "--config").endswith("train_scripts/configs/sft/tiny.yaml")
    # Every training stage resumes from its newest complete checkpoint when re-run.
    assert all(flag(name, "--resume_from_checkpoint") == "latest" for name in ("pretrain", "sft", "ppo"))


def test_stage_selection_per_stage_data_and_extra_flags(tmp_path):
    args = pipeline_args(
        "--output_dir",
        str(tmp_path),
        "--stages",
        "classifier",
        "--dataset_name",
        "classifier=sms.csv",
        "--stage_args",
        "classifier=--text_column message --num_train_epochs 2",
        "--push_to_hub",
        "--hub_namespace",
        "me",
    )
    steps = build_steps(args, CHECKOUT)
    assert [step.name for step in steps] == ["classifier", "eval-classifier"]
    command = steps[0].command
    assert command[command.index("--dataset_name") + 1] == "sms.csv"
    assert command[-4:] == ["--text_column", "message", "--num_train_epochs", "2"]
    assert command[command.index("--hub_model_id") + 1] == "me/hf-llm-classifier"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "nope"], "--preset 'nope' has no tokenizer recipe|--preset 'nope' has no pretrain recipe"),
        (["--stage_args", "--max_steps 3"], "--stage_args needs a stage"),
        (["--dataset_name", "sfx=data.csv"], "unknown stage 'sfx'"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(tmp_path, argv, message):
    with pytest.raises(UsageError, match=message):
        build_steps(pipeline_args("--output_dir", str(tmp_path), *argv), CHECKOUT)


def test_failure_summary_prefers_the_scripts_one_line_error(tmp_path):
    log = tmp_path / "sft.log"
    log.write_text("Loading...\n 10%|█ | 1/10 [00:01<00:09]\rsft.py: error: column 'output' not found in x.jsonl\n")
    assert failure_summary(log) == "sft.py: error: column 'output' not found in x.jsonl"
    log.write_text("Traceback (most recent call last):\n  ...\nRuntimeError: boom\n")
    assert failure_summary(log) == "RuntimeError: boom"


def test_report_shows_baselines_plots_and_escapes_model_output(tmp_path):
    (tmp_path / "pretrain").mkdir()
    history = [{"step": 0, "eval_perplexity": 900.0}, {"step": 5, "loss": 5.0}, {"step": 10, "eval_perplexity": 120.5}]
    (tmp_path / "pretrain" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    for name, metrics in {
        "eval-pretrain": {"perplexity": 118.0, "bits_per_byte": 1.9},
        "eval-classifier": {"accuracy": 0.8, "macro_f1": 0.7, "confusion_matrix": [[6, 1], [1, 2]]},
        "eval-sft-before": {"bleu": 0.5, "reference_perplexity": 300.0},
        "eval-sft": {"bleu": 7.5, "reference_perplexity": 40.0},
        "eval-ppo": {"mean_reward": 1.2, "reference_mean_reward": 0.4, "win_rate": 0.75},
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    steps = [
        PipelineStep(name, name.removeprefix("eval-").removesuffix("-before"), [], tmp_path / name, "x")
        for name in ("pretrain", "eval-pretrain", "classifier", "eval-classifier", "sft", "eval-sft", "ppo")
    ]
    for step in steps:
        step.log_file = tmp_path / "logs" / f"{step.name}.log"
    state = {"pretrain": {"status": "done", "seconds": 12.0}}

    report = write_pipeline_report(tmp_path, steps, state).read_text()

    assert "| validation perplexity (untrained → trained) | 900.0 | 120.5 |" in report
    assert "| test accuracy (majority class → classifier) | 0.700 | 0.800 |" in report
    assert "| test BLEU of greedy answers (pretrained → SFT) | 0.500 | 7.500 |" in report
    assert "| win rate over the SFT model (ties count ½) | 0.500 | 0.750 |" in report
    assert "| pretrain | 12 s |" in report
    assert (tmp_path / "plots" / "pretrain.png").stat().st_size > 1000
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "plots/pretrain.png" not in page  # self-contained


def test_a_stage_that_cannot_be_summarised_is_marked_and_every_other_stage_reported(tmp_path):
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 5.0}]}))
    (tmp_path / "eval-pretrain").mkdir()
    (tmp_path / "eval-pretrain" / "metrics.json").write_text(json.dumps({"metrics": {"perplexity": 118.0}}))
    (tmp_path / "eval-ppo").mkdir()
    # A trainer state of the wrong shape (a number where the log history belongs).
    (tmp_path / "ppo").mkdir()
    (tmp_path / "ppo" / "trainer_state.json").write_text(json.dumps({"log_history": 5}))
    steps = [
        PipelineStep(name, name.removeprefix("eval-"), [], tmp_path / name, "x")
        for name in ("pretrain", "eval-pretrain", "ppo", "eval-ppo")
    ]
    for step in steps:
        step.log_file = tmp_path / "logs" / f"{step.name}.log"

    report = write_pipeline_report(tmp_path, steps, {}).read_text()

    assert "*Could not summarise the ppo stage: TypeError" in report
    assert "| test perplexity |" in report or "118.0" in report  # pretraining is still reported
    assert (tmp_path / "report.html").is_file()


def test_pipeline_refuses_a_directory_of_the_users_own_files_before_any_work(tmp_path):
    users_dir = tmp_path / "mine"
    users_dir.mkdir()
    (users_dir / "report.md").write_text("my notes")
    result = run_pipeline_process("--output_dir", str(users_dir), "--stages", "pretrain")
    assert result.returncode == 2
    assert "hold files no pipeline run wrote (report.md)" in result.stderr.replace("holds", "hold")
    assert "--overwrite_output_dir" in result.stderr
    assert sorted(p.name for p in users_dir.iterdir()) == ["report.md"]
    assert (users_dir / "report.md").read_text() == "my notes"


def test_a_failed_stage_is_named_with_its_error_and_log(tmp_path):
    output_dir = tmp_path / "run"
    result = run_pipeline_process(
        "--output_dir", str(output_dir), "--stages", "tokenizer", "--stage_args", "tokenizer=--vocab_size 10"
    )
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("hf-llm pipeline: error: stage 'tokenizer' failed (exit 2): train_tokenizer.py: error:")
    assert str(output_dir / "logs" / "tokenizer.log") in error
    state = json.loads((output_dir / "pipeline_state.json").read_text())
    assert state["steps"]["tokenizer"]["status"] == "failed"


def test_a_finished_step_is_skipped_on_re_run(tmp_path):
    output_dir = tmp_path / "run"
    argv = ("--output_dir", str(output_dir), "--stages", "tokenizer", "--stage_args", "tokenizer=--vocab_size 300")
    first = run_pipeline_process(*argv)
    assert first.returncode == 0, first.stderr[-2000:]
    tokenizer_file = output_dir / "tokenizer" / "tokenizer.json"
    written = tokenizer_file.stat().st_mtime_ns

    second = run_pipeline_process(*argv)

    assert second.returncode == 0, second.stderr[-2000:]
    assert "tokenizer        done earlier, skipped" in second.stdout
    assert tokenizer_file.stat().st_mtime_ns == written


@pytest.mark.slow
def test_an_interrupted_stage_resumes_from_its_last_checkpoint(tmp_path):
    output_dir = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "hf_llm.cli",
        "pipeline",
        "--repo_dir",
        str(CHECKOUT),
        "--output_dir",
        str(output_dir),
        "--stages",
        "tokenizer",
        "pretrain",
        "--max_steps",
        "40",
        "--max_eval_samples",
        "8",
        "--stage_args",
        "tokenizer=--vocab_size 400",
        "--stage_args",
        "pretrain=--max_train_samples 200 --eval_strategy no --save_steps 2 --report_to none",
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pretrain_dir = output_dir / "pretrain"
    deadline = time.monotonic() + 600
    while not list(pretrain_dir.glob("checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(1)
    process.send_signal(signal.SIGTERM)  # a scheduler stopping the job: the whole stage stops with it
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted during pretrain" in out
    state = json.loads((output_dir / "pipeline_state.json").read_text())
    assert state["steps"]["pretrain"]["status"] == "interrupted"
    assert not (pretrain_dir / "README.md").exists()
    checkpoints = sorted(int(path.name.split("-")[1]) for path in pretrain_dir.glob("checkpoint-*"))
    assert checkpoints

    result = subprocess.run(argv, capture_output=True, text=True, timeout=900)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "tokenizer        done earlier, skipped" in result.stdout and "(resuming)" in result.stdout
    log = (output_dir / "logs" / "pretrain.log").read_text()
    assert "Resum" in log.split("$ ")[-1]  # the second attempt's output says it resumed
    trainer_state = json.loads((pretrain_dir / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == 40


@pytest.mark.slow
def test_whole_lifecycle_on_a_very_small_preset(tmp_path):
    """Every stage runs through its script and recipe, is evaluated, and lands in the report."""
    output_dir = tmp_path / "pipeline"
    result = run_pipeline_process("--output_dir", str(output_dir), *MICRO, env={**os.environ, "TQDM_MININTERVAL": "5"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    for name in ("eval-pretrain", "eval-classifier", "eval-sft-before", "eval-sft", "eval-reward", "eval-ppo"):
        assert (output_dir / name / "metrics.json").is_file(), name
    report = (output_dir / "report.md").read_text()
    for heading in ("## tokenizer", "## pretrain", "## classifier", "## sft", "## reward", "## ppo", "## dpo"):
        assert heading in report
    assert "win rate over the SFT model" in report and "test pairwise accuracy" in report
    assert "The same prompts, stage after stage" in report and "| dpo |" in report
    assert (output_dir / "report.html").stat().st_size > 10_000
    assert find_checkout(str(CHECKOUT)) == CHECKOUT


def test_push_to_hub_pushes_the_data_and_each_stage(tmp_path, hub_server):
    _, env = hub_server
    output_dir = tmp_path / "run"
    result = run_pipeline_process(
        "--output_dir",
        str(output_dir),
        "--stages",
        "tokenizer",
        "--stage_args",
        "tokenizer=--vocab_size 300",
        "--push_to_hub",
        "--hub_namespace",
        "tester",
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    script = (
        "import json; from datasets import load_dataset; from transformers import AutoTokenizer; "
        "d = load_dataset('tester/hf-llm-pydocs-classification'); "
        "t = AutoTokenizer.from_pretrained('tester/hf-llm-tokenizer'); "
        "print(json.dumps({'splits': {s: len(d[s]) for s in d}, 'columns': d['train'].column_names, 'vocab': len(t)}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    pushed = json.loads(loaded.stdout.strip().splitlines()[-1])
    from hf_llm.data import load_formatted_dataset

    local = load_formatted_dataset("pydocs", "classification")
    assert pushed["splits"] == {split: len(rows) for split, rows in local.items()}
    assert pushed["columns"] == local["train"].column_names and pushed["vocab"] == 300
