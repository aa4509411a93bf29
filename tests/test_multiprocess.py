"""A real 2-process CPU run: `accelerate launch --config_file accelerate_configs/multi_cpu.yaml` (mpirun + gloo).

Checks that both ranks train (tokens counted across ranks, one RNG state per rank in the checkpoint), that gradients
are synchronised (the weights equal a 1-process run over the same global batches), and that only the main process
writes and logs.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from conftest import PRETRAIN_SCRIPT, REPO_ROOT, TINY_PRETRAIN_ARGS
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import hf_llm  # noqa: F401

STEPS = 6
PER_DEVICE_BATCH = 4
BLOCK = 16  # TINY_PRETRAIN_ARGS' --block_size

pytestmark = pytest.mark.skipif(
    shutil.which("mpirun") is None and shutil.which("mpiexec") is None,
    reason="OpenMPI is not installed (`make system-deps` or `apt-get install openmpi-bin`)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_argv(pretrain_text_file, output_dir, per_device_batch: int) -> list[str]:
    return [
        "--dataset_name", pretrain_text_file, "--output_dir", str(output_dir), *TINY_PRETRAIN_ARGS,
        "--per_device_train_batch_size", str(per_device_batch), "--max_steps", str(STEPS), "--save_steps", "3",
        "--eval_strategy", "steps", "--eval_steps", "3",
    ]  # fmt: skip


@pytest.mark.slow
def test_two_process_cpu_run_trains_syncs_and_saves_once(run_pretrain, pretrain_text_file, tmp_path):
    output_dir = tmp_path / "two_procs"
    env = {
        **os.environ,
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_rmaps_base_oversubscribe": "1",  # CI machines may show fewer slots than the hostfile's 2
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", os.path.join("accelerate_configs", "multi_cpu.yaml"), "--main_process_port", str(free_port()),
        PRETRAIN_SCRIPT, *run_argv(pretrain_text_file, output_dir, PER_DEVICE_BATCH),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    # Both ranks trained: one RNG state per rank, tokens gathered over 2 x 4 blocks of 16 per step.
    checkpoint = output_dir / f"checkpoint-{STEPS}"
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(os.listdir(checkpoint))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    assert state["log_history"][-1]["num_input_tokens_seen"] == STEPS * 2 * PER_DEVICE_BATCH * BLOCK
    evals = [e["eval_perplexity"] for e in state["log_history"] if "eval_perplexity" in e]
    assert len(evals) == 2 and evals[-1] < evals[0]

    # Only the main process logged the metrics and wrote the recipe; the model loads.
    output = result.stdout + result.stderr
    assert output.count("***** train metrics *****") == 1
    assert os.path.isfile(output_dir / "recipe.yaml")
    assert isinstance(AutoModelForCausalLM.from_pretrained(output_dir), hf_llm.GPTForCausalLM)

    # Gradients were synchronised: one process over the same global batches (2 x 4) ends at the same weights.
    reference_dir = tmp_path / "one_proc"
    run_pretrain(run_argv(pretrain_text_file, reference_dir, 2 * PER_DEVICE_BATCH))
    two, one = load_file(output_dir / "model.safetensors"), load_file(reference_dir / "model.safetensors")
    midway = load_file(output_dir / "checkpoint-3" / "model.safetensors")
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-5)
    assert any(not torch.allclose(two[name], midway[name]) for name in two)  # and steps 4-6 moved them
