"""Exact resume and crash safety of pretraining checkpoints.

- N steps + resume + N steps gives the losses (and weights) of 2N straight steps, dropout included (RNG state).
- A run SIGKILLed in the middle of writing a checkpoint leaves no `checkpoint-N` that looks complete; `latest`
  resumes from the previous complete one and the run then reproduces the straight run exactly.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import PRETRAIN_SCRIPT, REPO_ROOT, TINY_PRETRAIN_ARGS
from safetensors.torch import load_file

from hf_llm.training import find_latest_checkpoint, list_checkpoints, resolve_resume_checkpoint

MAX_STEPS = 8
DROPOUT = ["--embedding_dropout", "0.1", "--attention_dropout", "0.1", "--residual_dropout", "0.1"]


def losses(output_dir) -> dict[int, float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(path, "model.safetensors"))


def argv(pretrain_text_file, output_dir, save_steps: int) -> list:
    return [
        "--dataset_name", pretrain_text_file, "--output_dir", output_dir, *TINY_PRETRAIN_ARGS, *DROPOUT,
        "--max_steps", MAX_STEPS, "--save_steps", save_steps, "--eval_strategy", "no",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, run_pretrain, pretrain_text_file):
    output_dir = tmp_path_factory.mktemp("straight") / "run"
    run_pretrain(argv(pretrain_text_file, output_dir, save_steps=4))
    return output_dir


def test_resume_reproduces_the_straight_run(straight_run, run_pretrain, pretrain_text_file, tmp_path):
    # A job that stopped right after step 4: its output_dir holds checkpoint-4 only.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight_run / "checkpoint-4", resumed / "checkpoint-4")
    run_pretrain([*argv(pretrain_text_file, resumed, save_steps=4), "--resume_from_checkpoint", "latest"])

    expected, got = losses(straight_run), losses(resumed)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))
    for step in range(5, MAX_STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"
    final_expected, final_got = weights(straight_run), weights(resumed)
    for name, tensor in final_expected.items():
        torch.testing.assert_close(final_got[name], tensor, rtol=1e-5, atol=1e-6)
    # Training actually moved: steps 5..8 are not a repeat of steps 1..4.
    assert got[5] != pytest.approx(got[1], abs=1e-3)


KILLING_DRIVER = textwrap.dedent(
    """
    import importlib.util, os, signal, sys
    from trl import TrlParser
    from hf_llm.data import DataArguments
    from hf_llm.training import AtomicCheckpointTrainer, ModelArguments, PretrainConfig

    kill_at = int(os.environ["KILL_AT_STEP"])
    save_optimizer = AtomicCheckpointTrainer._save_optimizer_and_scheduler

    def save_optimizer_then_die(self, output_dir):
        # Weights of this checkpoint are on disk, optimizer and trainer state are not: SIGKILL now.
        if self.state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return save_optimizer(self, output_dir)

    AtomicCheckpointTrainer._save_optimizer_and_scheduler = save_optimizer_then_die
    spec = importlib.util.spec_from_file_location("pretrain", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = TrlParser((ModelArguments, DataArguments, PretrainConfig))
    module.main(*parser.parse_args_and_config(sys.argv[2:]))
    """
)


@pytest.mark.slow
def test_kill_during_save_resumes_from_last_complete_checkpoint(
    straight_run, run_pretrain, pretrain_text_file, tmp_path
):
    output_dir = tmp_path / "killed"
    driver = tmp_path / "driver.py"
    driver.write_text(KILLING_DRIVER)
    env = {**os.environ, "KILL_AT_STEP": "4", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(driver), PRETRAIN_SCRIPT, *map(str, argv(pretrain_text_file, output_dir, save_steps=2))],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]

    # Killed mid-save: the half-written checkpoint exists only under its staging name.
    assert os.path.isfile(output_dir / "_tmp-checkpoint-4" / "checkpoint-4" / "model.safetensors")
    assert not os.path.exists(output_dir / "_tmp-checkpoint-4" / "checkpoint-4" / "trainer_state.json")
    assert not os.path.exists(output_dir / "checkpoint-4")
    assert [os.path.basename(p) for p in list_checkpoints(output_dir)] == ["checkpoint-2"]
    assert resolve_resume_checkpoint("latest", output_dir) == str(output_dir / "checkpoint-2")

    run_pretrain([*argv(pretrain_text_file, output_dir, save_steps=2), "--resume_from_checkpoint", "latest"])

    expected, got = losses(straight_run), losses(output_dir)
    for step in range(3, MAX_STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"
    assert [os.path.basename(p) for p in list_checkpoints(output_dir)] == [f"checkpoint-{s}" for s in (2, 4, 6, 8)]
    assert not [name for name in os.listdir(output_dir) if name.startswith("_tmp-")]
    for name, tensor in weights(straight_run).items():
        torch.testing.assert_close(weights(output_dir)[name], tensor, rtol=1e-5, atol=1e-6)


def test_latest_skips_incomplete_and_staged_checkpoints(tmp_path):
    for step, complete in [(2, True), (4, True), (6, False)]:
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        if complete:
            (path / "trainer_state.json").write_text("{}")
    (tmp_path / "_tmp-checkpoint-8" / "checkpoint-8").mkdir(parents=True)
    (tmp_path / "_tmp-checkpoint-8" / "checkpoint-8" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-10.txt").write_text("not a checkpoint")

    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert resolve_resume_checkpoint("latest", tmp_path) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / "_tmp-checkpoint-8").exists()  # the interrupted save is cleaned up once resume has chosen
    assert resolve_resume_checkpoint(None, tmp_path) is None
    assert resolve_resume_checkpoint("latest", tmp_path / "empty") is None  # fresh start, same command
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint.*Pass 'latest'"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-6"), tmp_path)
    with pytest.raises(FileNotFoundError, match="--resume_from_checkpoint .*missing: no such directory"):
        resolve_resume_checkpoint(str(tmp_path / "missing"), tmp_path)
