"""Every `gpt2-124m` recipe, unchanged, runs end to end on CPU against a local Hub that looks like the real one.

`local_hub` (conftest.py, built by tests/make_local_hub.py) serves `openai-community/gpt2` (GPT-2 small's shape, random
weights, a 50,257-token GPT-2-format tokenizer) and the datasets the recipes name, with the real repos' layouts and
schemas. Each stage runs as a user starts it (`python train_scripts/<stage>.py --config <recipe>`), in its own process
with `HF_ENDPOINT` pointing at the local Hub, overriding only what a CPU forces (`CPU_OVERRIDES`): two steps, batch
size 1 (gradient accumulation 1; PPO's rollout batch 1, hence one mini-batch), short sequences, fp32, a few evaluation
examples, no compilation. The claims:

- the recipe's model and data are read from the Hub by name (GPT-2 converted by `from_gpt2`, columns mapped);
- it trains (the trained weights moved), saves, and what it saved loads back with the Auto classes (a LoRA adapter on
  its base gives the merged model's logits);
- it evaluates (the stage's held-out metrics are finite);
- `hf-llm pipeline --preset gpt2-124m` runs every stage and evaluation the same way.

Each stage's peak resident memory is measured (`os.wait4`) and printed: docs/stages-and-recipes.md quotes it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

CHECKOUT = Path(__file__).resolve().parents[1]
RECIPES = CHECKOUT / "train_scripts" / "configs"

EVAL_CAP = ["--per_device_eval_batch_size", "1", "--max_eval_samples", "4"]
BATCH_1 = ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1"]
# Beside `--max_steps 2` (PPO counts episodes instead: one rollout of 1 prompt per update, so 2 episodes = 2 updates).
CPU_OVERRIDES = {
    "pretrain": [*BATCH_1, "--block_size", "64", "--bf16", "false", "--per_device_eval_batch_size", "1"],
    "classifier": [*BATCH_1, "--max_seq_length", "64", "--bf16", "false", *EVAL_CAP],
    "sft": [*BATCH_1, "--max_length", "128", "--bf16", "false", *EVAL_CAP]
    + ["--num_generation_samples", "2", "--generation_max_new_tokens", "8"],
    "reward": [*BATCH_1, "--max_length", "128", "--bf16", "false", *EVAL_CAP],
    "ppo": ["--total_episodes", "2", *BATCH_1, "--num_mini_batches", "1", "--local_rollout_forward_batch_size", "1"]
    + ["--response_length", "8", "--bf16", "false", *EVAL_CAP, "--win_rate_samples", "2"],
    "dpo": [*BATCH_1, "--max_length", "128", "--bf16", "false", *EVAL_CAP]
    + ["--win_rate_samples", "2", "--win_rate_max_new_tokens", "8"],
}


def recipe(stage: str) -> dict:
    return yaml.safe_load((RECIPES / stage / "gpt2-124m.yaml").read_text())


def cpu_overrides(stage: str) -> list[str]:
    """`CPU_OVERRIDES[stage]`; for pretraining, the recipe as it stands decides two more: a streamed one caps
    evaluation in blocks, and compiling GPT-2 small takes minutes on a CPU."""
    overrides = list(CPU_OVERRIDES[stage])
    if stage == "pretrain":
        pretrain = recipe("pretrain")
        overrides += ["--streaming_eval_blocks", "4"] if pretrain.get("streaming") else ["--max_eval_samples", "4"]
        overrides += ["--torch_compile", "false"] if pretrain.get("torch_compile") else []
    return overrides


def run_measured(command: list[str], env: dict, log_file: Path, timeout: float = 1200) -> tuple[int, float, float]:
    """Run `command` with its output in `log_file`; returns `(exit code, peak RSS in MiB, seconds)`.

    The peak is `ru_maxrss` from `os.wait4`: the largest resident set of the process and the children it waited for.
    """
    start = time.monotonic()
    with open(log_file, "w") as log:
        process = subprocess.Popen(command, cwd=CHECKOUT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.5)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024, time.monotonic() - start


def log_tail(log_file: Path, lines: int = 40) -> str:
    return "\n".join(log_file.read_text(errors="replace").replace("\r", "\n").splitlines()[-lines:])


def logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def lora_b_weights(adapter_dir: Path) -> list[torch.Tensor]:
    """LoRA's B matrices start at zero: any nonzero one was trained."""
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return [tensor for name, tensor in weights.items() if "lora_B" in name]


@pytest.fixture(scope="module")
def hub_env(local_hub):
    url, env = local_hub
    return {**os.environ, **env, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@pytest.mark.slow
def test_local_hub_serves_the_recipes_repos_under_their_names_with_the_real_schemas(hub_env, tmp_path):
    """What the recipes load, read by `datasets`/`transformers` from the server, has the real columns and types."""
    script = """
import json
from datasets import load_dataset
from transformers import AutoConfig, AutoTokenizer

def schema(*args):
    dataset = load_dataset(*args)
    return {split: {name: str(feature) for name, feature in part.features.items()} for split, part in dataset.items()}

tokenizer = AutoTokenizer.from_pretrained("openai-community/gpt2")
config = AutoConfig.from_pretrained("openai-community/gpt2")
print(json.dumps({
    "tokenizer": [len(tokenizer), tokenizer.eos_token, tokenizer.eos_token_id],
    "config": [config.model_type, config.n_layer, config.n_embd, config.n_head, config.n_positions, config.vocab_size],
    "fineweb": schema("HuggingFaceFW/fineweb-edu", "sample-10BT"),
    "sms": schema("ucirvine/sms_spam"),
    "alpaca": schema("yahma/alpaca-cleaned"),
    "ultrafeedback": schema("trl-lib/ultrafeedback_binarized"),
}))
"""
    result = subprocess.run([sys.executable, "-c", script], env=hub_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["tokenizer"] == [50257, "<|endoftext|>", 50256]
    assert found["config"] == ["gpt2", 12, 768, 12, 1024, 50257]
    string, message = "Value('string')", "List({'content': Value('string'), 'role': Value('string')})"
    assert found["fineweb"] == {
        "train": {
            **dict.fromkeys(["text", "id", "dump", "url", "file_path", "language"], string),
            "language_score": "Value('float64')",
            "token_count": "Value('int64')",
            "score": "Value('float64')",
            "int_score": "Value('int64')",
        }
    }
    assert found["sms"] == {"train": {"sms": string, "label": "ClassLabel(names=['ham', 'spam'])"}}
    assert found["alpaca"] == {"train": dict.fromkeys(["output", "input", "instruction"], string)}
    preference = {
        "chosen": message,
        "rejected": message,
        "score_chosen": "Value('float64')",
        "score_rejected": "Value('float64')",
    }
    assert found["ultrafeedback"] == {"train": preference, "test": preference}


@pytest.mark.slow
def test_every_gpt2_124m_recipe_trains_saves_loads_back_and_evaluates(hub_env, tmp_path):
    out = {stage: tmp_path / stage for stage in CPU_OVERRIDES}
    inputs = {
        "pretrain": [],
        "classifier": [],
        "sft": [],
        "reward": ["--model_name_or_path", str(out["sft"])],
        "ppo": ["--model_name_or_path", str(out["sft"]), "--reward_model_path", str(out["reward"] / "merged")],
        "dpo": ["--model_name_or_path", str(out["sft"]), "--reward_model_path", str(out["reward"] / "merged")],
    }
    measured = {}
    for stage in CPU_OVERRIDES:
        steps = [] if stage == "ppo" else ["--max_steps", "2"]
        command = [sys.executable, str(CHECKOUT / "train_scripts" / f"{stage}.py")]
        command += ["--config", str(RECIPES / stage / "gpt2-124m.yaml"), *inputs[stage], *steps, *cpu_overrides(stage)]
        command += ["--output_dir", str(out[stage])]
        log_file = tmp_path / f"{stage}.log"
        returncode, peak_mib, seconds = run_measured(command, hub_env, log_file)
        measured[stage] = {"peak_rss_mib": round(peak_mib), "seconds": round(seconds)}
        print(f"{stage}: exit {returncode}, peak RSS {peak_mib:,.0f} MiB, {seconds:.0f} s", flush=True)
        assert returncode == 0, f"{stage} failed:\n{log_tail(log_file)}"
    (tmp_path / "peak_rss.json").write_text(json.dumps(measured, indent=2))
    print(json.dumps(measured, indent=2))
    check_recipe_outputs(out, Path(hub_env["HF_LLM_CACHE"]))


def check_recipe_outputs(out: dict[str, Path], hf_llm_cache: Path) -> None:
    """What every stage's run must have left in its output directory `out[stage]`."""
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    import hf_llm  # noqa: F401  (registers the GPT family with the Auto classes)

    # The recipes' names went to the Hub: GPT-2 was converted once by from_gpt2, its tokenizer came along.
    conversion = hf_llm_cache / "from_gpt2" / "openai-community--gpt2@main"
    assert (conversion / "config.json").is_file()
    assert json.loads((conversion / "config.json").read_text())["architectures"] == ["GPTForCausalLM"]
    for stage in ("classifier", "sft"):
        adapter = json.loads((out[stage] / "adapter_config.json").read_text())
        assert Path(adapter["base_model_name_or_path"]).resolve() == conversion.resolve()
    pretrained_tokenizer = AutoTokenizer.from_pretrained(out["pretrain"])
    assert pretrained_tokenizer.eos_token == "<|endoftext|>" and pretrained_tokenizer.pad_token == "<|pad|>"
    assert len(pretrained_tokenizer) == 50258  # GPT-2's 50,257 and the <|pad|> the recipes add

    # Columns mapped: SMS spam's ClassLabel names became the classifier's labels.
    assert json.loads((out["classifier"] / "labels.json").read_text())["id2label"] == {"0": "ham", "1": "spam"}

    # Trained: two optimizer steps each, and LoRA's B matrices (zero at the start) moved.
    for stage in ("pretrain", "classifier", "sft", "reward", "dpo"):
        assert json.loads((out[stage] / "trainer_state.json").read_text())["global_step"] == 2, stage
    for stage in ("classifier", "sft", "reward", "dpo", "ppo"):
        weights = lora_b_weights(out[stage])
        assert weights and any(w.abs().sum() > 0 for w in weights), f"{stage}: LoRA B still zero"

    # Evaluated: each stage's held-out metrics are finite.
    def results(stage: str, name: str = "all_results.json") -> dict:
        return json.loads((out[stage] / name).read_text())

    assert math.isfinite(results("pretrain")["eval_loss"])
    assert 0 <= results("classifier")["eval_accuracy"] <= 1 and math.isfinite(results("classifier")["eval_macro_f1"])
    assert math.isfinite(results("sft")["eval_loss"]) and "eval_bleu" in results("sft")
    assert 0 <= results("reward")["eval_accuracy"] <= 1
    assert math.isfinite(results("dpo")["eval_loss"])
    for stage in ("ppo", "dpo"):
        win_rate = results(stage, "win_rate_results.json")
        assert 0 <= win_rate["win_rate"] <= 1, (stage, win_rate)

    # Saved models load back with the Auto classes; an adapter on its base equals the merged model.
    input_ids = pretrained_tokenizer("The with statement manages a context.", return_tensors="pt").input_ids
    model = AutoModelForCausalLM.from_pretrained(out["pretrain"]).eval()
    assert type(model).__name__ == "GPTForCausalLM" and torch.isfinite(logits(model, input_ids)).all()
    auto_classes = {
        "classifier": (AutoPeftModelForSequenceClassification, AutoModelForSequenceClassification),
        "sft": (AutoPeftModelForCausalLM, AutoModelForCausalLM),
        "reward": (AutoPeftModelForSequenceClassification, AutoModelForSequenceClassification),
        "ppo": (AutoPeftModelForCausalLM, AutoModelForCausalLM),
        "dpo": (AutoPeftModelForCausalLM, AutoModelForCausalLM),
    }
    for stage, (peft_class, auto_class) in auto_classes.items():
        assert recipe(stage)["use_peft"] and recipe(stage)["merge_adapter"], stage
        del model
        model = auto_class.from_pretrained(out[stage] / "merged").eval()
        merged_logits = logits(model, input_ids)
        assert torch.isfinite(merged_logits).all(), stage
        del model
        # A reward adapter's base is a causal LM: its one-output head is sized by the caller, as for any PEFT
        # sequence-classification adapter.
        kwargs = {"num_labels": 1} if stage == "reward" else {}
        model = peft_class.from_pretrained(out[stage], **kwargs).eval()
        torch.testing.assert_close(logits(model, input_ids), merged_logits, rtol=1e-4, atol=1e-4, msg=stage)


@pytest.mark.slow
def test_pipeline_preset_gpt2_124m_runs_every_stage_and_evaluation_against_the_local_hub(hub_env, tmp_path):
    stage_args = [
        arg for stage in CPU_OVERRIDES for arg in ("--stage_args", f"{stage}={' '.join(cpu_overrides(stage))}")
    ]
    command = [sys.executable, "-m", "hf_llm.cli", "pipeline", "--repo_dir", str(CHECKOUT), "--preset", "gpt2-124m"]
    command += ["--output_dir", str(tmp_path / "pipeline"), "--max_steps", "2", "--max_eval_samples", "2", *stage_args]
    log_file = tmp_path / "pipeline.log"
    returncode, peak_mib, seconds = run_measured(command, hub_env, log_file, timeout=2400)
    print(f"pipeline: exit {returncode}, peak RSS {peak_mib:,.0f} MiB, {seconds:.0f} s", flush=True)
    assert returncode == 0, log_tail(log_file)
    state = json.loads((tmp_path / "pipeline" / "pipeline_state.json").read_text())["steps"]
    assert "tokenizer" not in state  # the recipe names GPT-2's tokenizer
    assert all(step["status"] == "done" for step in state.values()), state
    for name in ("eval-pretrain", "eval-classifier", "eval-sft", "eval-reward", "eval-ppo", "eval-dpo"):
        metrics = json.loads((tmp_path / "pipeline" / name / "metrics.json").read_text())["metrics"]
        assert metrics, name
    assert (tmp_path / "pipeline" / "report.md").is_file()


def test_pipeline_preset_gpt2_124m_trains_and_evaluates_on_the_recipes_own_data(tmp_path):
    """Without --dataset_name each stage reads its recipe's dataset (not pydocs), and each evaluation reads it the way
    the stage did: its configuration, columns, held-out share and seed, on the test split when the recipe names one,
    else on the validation examples the stage held out."""
    from hf_llm.cli import build_parser
    from hf_llm.pipeline import build_steps

    args = build_parser().parse_args(["pipeline", "--preset", "gpt2-124m", "--output_dir", str(tmp_path)])
    commands = {step.name: step.command for step in build_steps(args, CHECKOUT)}
    assert "tokenizer" not in commands  # the pretraining recipe names GPT-2's tokenizer
    for stage in CPU_OVERRIDES:
        assert "--dataset_name" not in commands[stage], stage

    def flags(name: str) -> dict[str, str]:
        command = commands[name]
        return {flag: value for flag, value in zip(command, command[1:], strict=False) if flag.startswith("--")}

    assert flags("eval-pretrain") | {"--split": "validation"} == flags("eval-pretrain")
    assert flags("eval-pretrain")["--dataset_config_name"] == "sample-10BT"
    classifier = flags("eval-classifier")
    assert (classifier["--dataset_name"], classifier["--text_column"], classifier["--label_column"]) == (
        "ucirvine/sms_spam",
        "sms",
        "label",
    )
    assert (classifier["--validation_split_percentage"], classifier["--seed"], classifier["--split"]) == (
        str(recipe("classifier")["validation_split_percentage"]),
        "42",
        "validation",
    )
    sft = flags("eval-sft")
    assert (sft["--dataset_name"], sft["--split"]) == ("yahma/alpaca-cleaned", "validation")
    assert (flags("eval-reward")["--dataset_name"], flags("eval-reward")["--split"]) == (
        "trl-lib/ultrafeedback_binarized",
        "test",
    )
    for name in ("eval-ppo", "eval-dpo"):  # the win rate's prompts: the user turn of each chosen conversation
        assert (flags(name)["--messages_column"], flags(name)["--split"]) == ("chosen", "test"), name

    # A user's --dataset_name still wins, evaluated on its test split without the recipe's columns.
    args = build_parser().parse_args(
        ["pipeline", "--preset", "gpt2-124m", "--output_dir", str(tmp_path), "--dataset_name", "classifier=sms.csv"]
    )
    commands = {step.name: step.command for step in build_steps(args, CHECKOUT)}
    assert flags("classifier")["--dataset_name"] == "sms.csv"
    assert flags("eval-classifier") | {"--dataset_name": "sms.csv", "--split": "test"} == flags("eval-classifier")
    assert "--text_column" not in flags("eval-classifier")
