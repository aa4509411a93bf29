"""Sharded training on 2 CPU processes: FSDP2 and DeepSpeed ZeRO, checked against a 1-process run.

accelerate runs FSDP and DeepSpeed only on accelerator devices; `tests/distributed_shim.py` re-applies its selection
for CPU processes (gloo), and everything else is the real code path a GPU user takes: the configs in
`accelerate_configs/` launched as they are (with `--num_processes 2 --mixed_precision no`), accelerate's wrapping and
sharded checkpoints, `train_scripts/pretrain.py`. Each sharded run trains the tiny recipe on 2 x 4 sequences a step
and must end within 1e-5 of one process training on the same 8 sequences a step:

- FSDP2 FULL_SHARD and SHARD_GRAD_OP (`fsdp_reshard_after_forward` true / false), DeepSpeed ZeRO-2 and ZeRO-3 (ZeRO-3
  and SHARD_GRAD_OP start from the same saved weights as their reference: ZeRO-3 initialises a new model inside
  `deepspeed.zero.Init`, which draws different random weights).
- Resuming FULL_SHARD from its sharded `checkpoint-3` reproduces the straight run.
- FSDP2 and ZeRO-3 saves (final and `checkpoint-N`) load with hf_llm and with `trust_remote_code=True` where hf_llm
  cannot be imported, with tied embeddings.
- Without the shim the same FSDP launch stops before training with one line instead of running as DDP.
"""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from conftest import PRETRAIN_SCRIPT, REPO_ROOT, TINY_PRETRAIN_ARGS, run_without_hf_llm, tiny_gpt_config
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

import hf_llm
from hf_llm.errors import UsageError
from hf_llm.training.distributed import check_sharding, requested_sharding

SHIM = os.path.join(REPO_ROOT, "tests", "distributed_shim.py")
STEPS, SAVE_STEPS, PER_DEVICE_BATCH = 6, 3, 4
TOLERANCE = 1e-5
SHAPE_FLAGS = {
    "--hidden_size", "--num_hidden_layers", "--num_attention_heads", "--max_position_embeddings",
    "--tokenizer_vocab_size",
}  # fmt: skip
INPUT_IDS = [[5, 17, 42, 99, 7, 64, 3, 250]]

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed and could not be: `pip install -e '.[deepspeed]'` (make install tries it)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pretrain_argv(pretrain_text_file, output_dir, per_device_batch: int, init_dir=None) -> list[str]:
    tiny = TINY_PRETRAIN_ARGS
    if init_dir is not None:  # continue from saved weights: no shape flags
        pairs = zip(tiny[::2], tiny[1::2], strict=True)
        tiny = [item for flag, value in pairs if flag not in SHAPE_FLAGS for item in (flag, value)]
        tiny += ["--model_name_or_path", str(init_dir)]
    return [
        *tiny, "--dataset_name", pretrain_text_file, "--output_dir", str(output_dir),
        "--per_device_train_batch_size", str(per_device_batch), "--max_steps", str(STEPS),
        "--save_steps", str(SAVE_STEPS), "--eval_strategy", "steps", "--eval_steps", str(SAVE_STEPS),
        # One sequence per evaluation batch: a last batch that does not divide over the ranks is padded with repeated
        # sequences, whose share of a multi-sequence batch's mean loss would differ from one process's by ~1e-4.
        "--per_device_eval_batch_size", "1",
    ]  # fmt: skip


def launch(config: str, argv: list[str], *launch_flags: str, shim: bool = True) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file accelerate_configs/<config>` on 2 CPU processes (torchrun, gloo)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", os.path.join("accelerate_configs", config), "--num_processes", "2",
        "--mixed_precision", "no", "--main_process_port", str(free_port()), *launch_flags,
        *([SHIM] if shim else []), PRETRAIN_SCRIPT, *argv,
    ]  # fmt: skip
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=540)


def launched_run(config, argv, *launch_flags) -> None:
    result = launch(config, argv, *launch_flags)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]


def losses(output_dir, key: str = "loss") -> dict[int, float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {entry["step"]: entry[key] for entry in state["log_history"] if key in entry}


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(path, "model.safetensors"))


def assert_same_training(got_dir, expected_dir) -> None:
    """Same training and evaluation losses at every step and same final weights, within 1e-5; and the second half of
    training moved the weights."""
    got, expected = losses(got_dir), losses(expected_dir)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, abs=TOLERANCE), f"step {step}: {got[step]} vs {loss}"
    got, expected = losses(got_dir, "eval_loss"), losses(expected_dir, "eval_loss")
    assert sorted(got) == sorted(expected) == [SAVE_STEPS, STEPS]
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, abs=TOLERANCE), f"eval at step {step}: {got[step]} vs {loss}"
    got_weights, expected_weights = weights(got_dir), weights(expected_dir)
    assert got_weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(got_weights[name], tensor, rtol=0, atol=TOLERANCE, msg=name)
    midway = weights(got_dir / f"checkpoint-{SAVE_STEPS}")
    assert any(not torch.allclose(got_weights[name], midway[name]) for name in midway)


# ---- runs shared by the tests of this module ----
@pytest.fixture(scope="module")
def init_dir(tmp_path_factory, tiny_tokenizer):
    """Saved starting weights (and tokenizer) of the tiny recipe's shape."""
    path = tmp_path_factory.mktemp("init") / "model"
    torch.manual_seed(0)
    hf_llm.GPTForCausalLM(
        tiny_gpt_config(tiny_tokenizer, num_attention_heads=4, max_position_embeddings=32)
    ).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, run_pretrain, pretrain_text_file):
    """1 process, 8 sequences a step, a new model."""
    output_dir = tmp_path_factory.mktemp("one_process") / "run"
    run_pretrain(pretrain_argv(pretrain_text_file, output_dir, 2 * PER_DEVICE_BATCH))
    return output_dir


@pytest.fixture(scope="module")
def one_process_from_init(tmp_path_factory, run_pretrain, pretrain_text_file, init_dir):
    """1 process, 8 sequences a step, from `init_dir`."""
    output_dir = tmp_path_factory.mktemp("one_process_from_init") / "run"
    run_pretrain(pretrain_argv(pretrain_text_file, output_dir, 2 * PER_DEVICE_BATCH, init_dir))
    return output_dir


@pytest.fixture(scope="module")
def full_shard(tmp_path_factory, pretrain_text_file):
    """FSDP2 FULL_SHARD (accelerate_configs/fsdp.yaml as it is), 2 processes x 4 sequences, a new model."""
    output_dir = tmp_path_factory.mktemp("full_shard") / "run"
    launched_run("fsdp.yaml", pretrain_argv(pretrain_text_file, output_dir, PER_DEVICE_BATCH))
    return output_dir


@pytest.fixture(scope="module")
def zero3(tmp_path_factory, pretrain_text_file, init_dir):
    """DeepSpeed ZeRO-3 (accelerate_configs/deepspeed_zero3.yaml), 2 processes x 4 sequences, from `init_dir`."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip(needs_deepspeed.kwargs["reason"])
    output_dir = tmp_path_factory.mktemp("zero3") / "run"
    launched_run("deepspeed_zero3.yaml", pretrain_argv(pretrain_text_file, output_dir, PER_DEVICE_BATCH, init_dir))
    return output_dir


# ---- FSDP2 ----
@pytest.mark.slow
def test_fsdp2_full_shard_matches_one_process(full_shard, one_process):
    assert_same_training(full_shard, one_process)
    # accelerate's FSDP checkpoint layout, not DDP's optimizer.pt: the run was sharded.
    checkpoint = set(os.listdir(full_shard / f"checkpoint-{SAVE_STEPS}"))
    assert {"pytorch_model_fsdp.bin", "optimizer.bin", "rng_state_0.pth", "rng_state_1.pth"} <= checkpoint
    assert "optimizer.pt" not in checkpoint


@pytest.mark.slow
def test_fsdp2_shard_grad_op_matches_one_process(tmp_path, pretrain_text_file, init_dir, one_process_from_init):
    output_dir = tmp_path / "shard_grad_op"
    argv = pretrain_argv(pretrain_text_file, output_dir, PER_DEVICE_BATCH, init_dir)
    launched_run("fsdp.yaml", argv, "--fsdp_reshard_after_forward", "false")
    assert_same_training(output_dir, one_process_from_init)
    assert "pytorch_model_fsdp.bin" in os.listdir(output_dir / f"checkpoint-{SAVE_STEPS}")


@pytest.mark.slow
def test_fsdp2_resume_from_sharded_checkpoint_reproduces_the_straight_run(full_shard, tmp_path, pretrain_text_file):
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full_shard / f"checkpoint-{SAVE_STEPS}", resumed / f"checkpoint-{SAVE_STEPS}")
    argv = pretrain_argv(pretrain_text_file, resumed, PER_DEVICE_BATCH)
    launched_run("fsdp.yaml", [*argv, "--resume_from_checkpoint", "latest"])

    expected, got = losses(full_shard), losses(resumed)
    for step in range(SAVE_STEPS + 1, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"
    assert losses(resumed, "eval_loss")[STEPS] == pytest.approx(losses(full_shard, "eval_loss")[STEPS], rel=1e-6)
    for name, tensor in weights(full_shard).items():
        torch.testing.assert_close(weights(resumed)[name], tensor, rtol=1e-6, atol=1e-7, msg=name)


# ---- DeepSpeed ZeRO ----
@needs_deepspeed
@pytest.mark.slow
def test_deepspeed_zero2_matches_one_process(tmp_path, pretrain_text_file, one_process):
    output_dir = tmp_path / "zero2"
    launched_run("deepspeed_zero2.yaml", pretrain_argv(pretrain_text_file, output_dir, PER_DEVICE_BATCH))
    assert_same_training(output_dir, one_process)
    # Optimizer state partitioned: one shard per rank, one copy of the weights.
    shards = set(os.listdir(output_dir / f"checkpoint-{SAVE_STEPS}" / f"global_step{SAVE_STEPS}"))
    assert {f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in (0, 1)} <= shards
    assert "mp_rank_00_model_states.pt" in shards


@needs_deepspeed
@pytest.mark.slow
def test_deepspeed_zero3_matches_one_process_from_the_same_weights(zero3, one_process_from_init):
    assert_same_training(zero3, one_process_from_init)
    # Parameters partitioned too: a model-state shard per rank.
    shards = set(os.listdir(zero3 / f"checkpoint-{SAVE_STEPS}" / f"global_step{SAVE_STEPS}"))
    assert {f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" for rank in (0, 1)} <= shards


# ---- sharded saves load everywhere ----
LOAD_WITHOUT_HF_LLM = """
import json, torch
from transformers import AutoModelForCausalLM
found = {{}}
for path in {paths!r}:
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    found[path] = {{
        "class": f"{{type(model).__module__}}.{{type(model).__name__}}",
        "tied": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
        "logits": model(torch.tensor({input_ids!r})).logits.tolist(),
    }}
print("LOADED " + json.dumps(found))
"""


def assert_loads_everywhere(paths: list, tmp_path) -> None:
    """Our code files and plain `auto_map`, no torch internals, tied weights; the same logits with hf_llm imported and
    by remote code where hf_llm cannot be imported."""
    expected = {}
    for path in map(str, paths):
        files = set(os.listdir(path))
        assert {"modeling_gpt.py", "configuration_gpt.py"} <= files, files
        assert not [name for name in files if name.startswith("_fsdp")], files
        config = AutoConfig.from_pretrained(path)
        assert config.architectures == ["GPTForCausalLM"]
        assert config.auto_map["AutoModelForCausalLM"] == "modeling_gpt.GPTForCausalLM"
        assert all(
            target.split(".")[0] in ("modeling_gpt", "configuration_gpt") for target in config.auto_map.values()
        )
        assert "lm_head.weight" not in weights(path)  # saved tied, as an unsharded run saves
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        assert type(model) is hf_llm.GPTForCausalLM
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        with torch.no_grad():
            expected[path] = model(torch.tensor(INPUT_IDS)).logits

    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    script = LOAD_WITHOUT_HF_LLM.format(paths=list(expected), input_ids=INPUT_IDS)
    result = run_without_hf_llm(script, env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.split("LOADED ", 1)[1])
    for path, logits in expected.items():
        assert found[path]["class"].startswith("transformers_modules.") and found[path]["class"].endswith(
            ".modeling_gpt.GPTForCausalLM"
        ), found[path]["class"]
        assert found[path]["tied"]
        torch.testing.assert_close(torch.tensor(found[path]["logits"]), logits, rtol=0, atol=1e-6)


FSDP2_SAVE = """
import os, sys, torch, torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from hf_llm import GPTForCausalLM

dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[1], rank=0, world_size=1)
model = GPTForCausalLM.from_pretrained(sys.argv[2])
for block in model.model.layers:
    fully_shard(block)
fully_shard(model)
assert type(model).__name__ == "FSDPGPTForCausalLM", type(model)
# What Trainer does under FSDP2 (FULL_STATE_DICT): gather the full state dict, then save_pretrained(state_dict=...).
full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
assert "lm_head.weight" in full
model.save_pretrained(sys.argv[3], state_dict=full)
assert type(model).__name__ == "FSDPGPTForCausalLM", "the FSDP2 class must be restored after saving"
dist.destroy_process_group()
"""


def test_fsdp2_save_pretrained_writes_our_code_and_tied_weights(init_dir, tmp_path):
    # One process is enough to get FSDP2's renamed class; fast, so it runs in `make test-fast` too.
    saved = tmp_path / "fsdp2_save"
    result = subprocess.run(
        [sys.executable, "-c", FSDP2_SAVE, str(free_port()), str(init_dir), str(saved)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_loads_everywhere([saved], tmp_path)
    for name, tensor in weights(init_dir).items():
        torch.testing.assert_close(weights(saved)[name], tensor, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_sharded_saves_load_with_and_without_hf_llm(full_shard, request, tmp_path):
    paths = [full_shard, full_shard / f"checkpoint-{SAVE_STEPS}"]
    if importlib.util.find_spec("deepspeed") is not None:  # the FSDP2 saves are checked either way
        paths.append(request.getfixturevalue("zero3"))
    assert_loads_everywhere(paths, tmp_path)


# ---- no silent fallback ----
@pytest.mark.slow
def test_fsdp_config_on_cpu_processes_stops_with_one_line_instead_of_running_ddp(tmp_path, pretrain_text_file):
    # Without the shim accelerate would train this as plain DDP and exit 0; hf_llm refuses before the first step.
    output_dir = tmp_path / "not_sharded"
    result = launch("fsdp.yaml", pretrain_argv(pretrain_text_file, output_dir, PER_DEVICE_BATCH), shim=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("pretrain.py: error:")]
    assert len(errors) == 2, result.stderr[-3000:]  # one line from each rank
    assert "asks for FSDP (ACCELERATE_USE_FSDP=true) but this run is plain data parallel (MULTI_CPU)" in errors[0]
    assert "[rank0]: Traceback" not in result.stderr
    assert not os.path.exists(output_dir / "model.safetensors")
    assert not [name for name in os.listdir(output_dir) if "checkpoint" in name]


def fake_accelerator(distributed_type: DistributedType, num_processes: int = 2) -> SimpleNamespace:
    return SimpleNamespace(distributed_type=distributed_type, num_processes=num_processes)


def test_check_sharding_accepts_runs_that_asked_for_no_sharding(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert requested_sharding() is None
    check_sharding(fake_accelerator(DistributedType.MULTI_CPU), torch.nn.Linear(2, 2))  # DDP asked, DDP got


@pytest.mark.parametrize(
    ("variable", "distributed_type", "num_processes", "message"),
    [
        ("ACCELERATE_USE_FSDP", DistributedType.MULTI_CPU, 2, r"asks for FSDP .* plain data parallel \(MULTI_CPU\)"),
        (
            "ACCELERATE_USE_DEEPSPEED",
            DistributedType.MULTI_CPU,
            2,
            r"DeepSpeed .* switches to DeepSpeed only",
        ),
        ("ACCELERATE_USE_FSDP", DistributedType.NO, 1, r"each of the 2 launched processes would train its own"),
        (
            "ACCELERATE_USE_DEEPSPEED",
            DistributedType.DEEPSPEED,
            1,
            r"counts 1 process\(es\) where the launcher",
        ),
    ],
)
def test_check_sharding_refuses_a_run_that_is_not_what_was_asked(
    monkeypatch, variable, distributed_type, num_processes, message
):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.setenv(variable, "true")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match=message):
        check_sharding(fake_accelerator(distributed_type, num_processes))


def test_check_sharding_refuses_an_unwrapped_model_in_fsdp_mode(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("WORLD_SIZE", "2")
    accelerator = fake_accelerator(DistributedType.FSDP)
    check_sharding(accelerator)  # the mode is right
    with pytest.raises(UsageError, match="the prepared model is a plain Linear, not a FSDP wrapper"):
        check_sharding(accelerator, torch.nn.Linear(2, 2))
