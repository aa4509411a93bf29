"""train_scripts/pretrain.py end to end on a tiny GPT: artifacts, perplexity, recipe, flag errors."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import PRETRAIN_SCRIPT, REPO_ROOT, TINY_PRETRAIN_ARGS
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import TrlParser

import hf_llm
from hf_llm.data import DataArguments
from hf_llm.training import ModelArguments, PretrainConfig, build_gpt_config, padded_vocab_size


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, run_pretrain, pretrain_text_file):
    output_dir = tmp_path_factory.mktemp("pretrain") / "run"
    argv = [
        "--dataset_name", pretrain_text_file, "--output_dir", output_dir, *TINY_PRETRAIN_ARGS,
        "--max_steps", "30", "--eval_strategy", "steps", "--eval_steps", "15", "--eval_on_start", "true",
        "--save_steps", "15", "--report_to", "tensorboard",
    ]  # fmt: skip
    metrics = run_pretrain(argv)
    return output_dir, metrics, argv


def test_saves_a_loadable_model_tokenizer_and_checkpoints(tiny_run):
    output_dir, _, _ = tiny_run
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert isinstance(model, hf_llm.GPTForCausalLM)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    # The script trained its own tokenizer and saved it with the model.
    assert len(tokenizer) == 300 and model.config.vocab_size == padded_vocab_size(300) == 320
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id and model.config.eos_token_id == tokenizer.eos_token_id
    checkpoints = sorted(n for n in os.listdir(output_dir) if n.startswith("checkpoint-"))
    assert checkpoints == ["checkpoint-15", "checkpoint-30"]
    assert not [n for n in os.listdir(output_dir) if n.startswith("_tmp-")]
    assert os.listdir(output_dir / "runs")  # TensorBoard event files
    card = (output_dir / "README.md").read_text()  # hf_llm's model card, with the metrics
    assert "pretrain" in card and "eval_perplexity" in card
    fingerprint = json.loads((output_dir / "data_fingerprint.json").read_text())
    assert set(fingerprint["splits"]) >= {"train", "validation"} and len(fingerprint["fingerprint"]) == 16


def test_eval_perplexity_falls_and_is_logged(tiny_run):
    output_dir, metrics, _ = tiny_run
    state = json.loads((output_dir / "trainer_state.json").read_text())
    evals = [(e["step"], e["eval_perplexity"]) for e in state["log_history"] if "eval_perplexity" in e]
    assert [step for step, _ in evals] == [0, 15, 30]
    untrained, middle, final = (ppl for _, ppl in evals)
    assert final < middle < untrained
    assert final < 0.5 * untrained
    assert metrics["eval_perplexity"] == pytest.approx(final)
    train_logs = [e for e in state["log_history"] if "loss" in e]
    assert len(train_logs) == 30 and all(e["tokens_per_second"] > 0 for e in train_logs)
    assert state["log_history"][-1]["num_input_tokens_seen"] == 30 * 4 * 16


def test_resolved_recipe_reparses_to_the_same_arguments(tiny_run):
    output_dir, _, argv = tiny_run
    recipe = yaml.safe_load((output_dir / "recipe.yaml").read_text())
    assert recipe["max_steps"] == 30 and recipe["hidden_size"] == 32 and recipe["block_size"] == 16
    parser = TrlParser((ModelArguments, DataArguments, PretrainConfig))
    from_recipe = parser.parse_args_and_config(["--config", str(output_dir / "recipe.yaml")])
    from_cli = parser.parse_args_and_config([str(a) for a in argv])
    for a, b in zip(from_recipe, from_cli, strict=True):
        if isinstance(a, PretrainConfig):
            a, b = a.to_dict(), b.to_dict()
            a.pop("logging_dir", None), b.pop("logging_dir", None)
        assert a == b


def test_recipes_parse_and_build_their_models():
    parser = TrlParser((ModelArguments, DataArguments, PretrainConfig))
    recipes_dir = os.path.join(REPO_ROOT, "train_scripts", "configs", "pretrain")
    tokenizer = type("Tok", (), {"eos_token_id": 0, "pad_token_id": 1, "bos_token_id": 0, "name_or_path": "t"})
    tokenizer.__len__ = lambda self: 50257
    expected_hidden = {"tiny.yaml": 96, "small.yaml": 384, "gpt2-124m.yaml": 768}
    for name, hidden in expected_hidden.items():
        model_args, data_args, training_args = parser.parse_args_and_config(
            ["--config", os.path.join(recipes_dir, name), "--output_dir", "unused"]
        )
        config = build_gpt_config(model_args, tokenizer())
        assert config.hidden_size == hidden
        assert data_args.dataset_name and data_args.block_size <= config.max_position_embeddings
        assert training_args.eval_strategy == "steps" and training_args.lr_scheduler_type == "cosine"
    gpt2 = parser.parse_args_and_config(["--config", os.path.join(recipes_dir, "gpt2-124m.yaml"), "--output_dir", "x"])
    assert gpt2[0].attn_implementation == "sdpa" and gpt2[2].gradient_accumulation_steps == 4
    assert gpt2[2].bf16 == hf_llm.training.bf16_available()  # bf16 wherever the hardware has it


def test_block_size_beyond_the_context_is_refused(run_pretrain, pretrain_text_file, tmp_path):
    argv = ["--dataset_name", pretrain_text_file, "--output_dir", tmp_path, *TINY_PRETRAIN_ARGS, "--max_steps", "1"]
    with pytest.raises(ValueError, match=r"--block_size 64 exceeds the model's context length \(32\)"):
        run_pretrain([*argv, "--block_size", "64"])


def test_missing_dataset_is_refused(run_pretrain, tmp_path):
    with pytest.raises(ValueError, match="pass --dataset_name"):
        run_pretrain(["--output_dir", tmp_path, *TINY_PRETRAIN_ARGS])


def test_bad_flag_prints_one_clear_error_and_exits(tmp_path):
    result = subprocess.run(
        [sys.executable, PRETRAIN_SCRIPT, "--model_preset", "huge", "--output_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--model_preset 'huge' is unknown; choose one of ['gpt2-124m', 'small', 'tiny']" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_loaded_tokenizer_without_pad_or_chat_template_gets_both_for_a_new_model(tiny_tokenizer, tmp_path):
    """GPT-2's tokenizer has neither: a model pretrained from it must still pad (classifier, reward, PPO) and render
    Alpaca prompts (SFT and its evaluation), as one with a tokenizer trained here does."""
    from transformers import PreTrainedTokenizerFast

    from hf_llm.tokenizer import ALPACA_CHAT_TEMPLATE
    from hf_llm.training.pretraining import load_or_train_tokenizer

    bare = PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="<|endoftext|>")
    bare.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.pad_token is None and loaded.chat_template is None
    tokenizer = load_or_train_tokenizer(ModelArguments(model_preset="tiny", tokenizer_name_or_path=str(tmp_path)))
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.pad_token_id not in (None, tokenizer.eos_token_id)
    assert tokenizer.chat_template == ALPACA_CHAT_TEMPLATE
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Add 2 and 3."}], tokenize=False)
    assert "Add 2 and 3." in prompt
    config = build_gpt_config(ModelArguments(model_preset="tiny"), tokenizer)
    assert config.pad_token_id == tokenizer.pad_token_id and config.vocab_size >= len(tokenizer)


def test_push_to_hub_without_repo_id_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="--hub_model_id"):
        PretrainConfig(output_dir=str(tmp_path), push_to_hub=True, use_cpu=True)


def test_overlapping_windows_are_scored_once_in_evaluation(tiny_tokenizer):
    from datasets import Dataset, DatasetDict

    from hf_llm.training.pretraining import pack_for_pretraining

    text = "def add(a, b): return a + b. " * 40
    raw = DatasetDict({split: Dataset.from_dict({"text": [text]}) for split in ("train", "validation")})
    data_args = DataArguments(dataset_name="unused", block_size=32, stride=16)
    packed, _ = pack_for_pretraining(raw, tiny_tokenizer, data_args, max_length=64, packing="blocks")
    train_labels, validation_labels = packed["train"]["labels"], packed["validation"]["labels"]
    assert len(train_labels) == len(validation_labels) > 2
    # Training keeps every target of every window; evaluation masks what the previous window already scored.
    assert all(-100 not in labels for labels in train_labels)
    assert all(labels[:16] == [-100] * 16 for labels in validation_labels[1:])
    scored = sum(label != -100 for labels in validation_labels for label in labels)
    assert scored == len(validation_labels[0]) + 16 * (len(validation_labels) - 1)


@pytest.mark.slow
def test_torch_compile_trains_with_the_losses_of_eager_mode(run_pretrain, pretrain_text_file, tmp_path, monkeypatch):
    import torch

    argv = [
        "--dataset_name", pretrain_text_file, *TINY_PRETRAIN_ARGS, "--max_steps", "3", "--eval_strategy", "no",
        "--save_strategy", "no",
    ]  # fmt: skip
    run_pretrain([*argv, "--output_dir", tmp_path / "eager"])
    compiled_modules = []
    compile_ = torch.compile

    def recording_compile(model, *args, **kwargs):
        compiled_modules.append(type(model).__name__)
        return compile_(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    run_pretrain([*argv, "--output_dir", tmp_path / "compiled", "--torch_compile", "true"])

    assert compiled_modules == ["GPTForCausalLM"]  # Trainer (through accelerate) compiled our model, inductor on CPU
    history = {
        run: json.loads((tmp_path / run / "trainer_state.json").read_text())["log_history"]
        for run in ("eager", "compiled")
    }
    eager, compiled = ([entry["loss"] for entry in history[run] if "loss" in entry] for run in ("eager", "compiled"))
    assert len(compiled) == 3 and compiled == pytest.approx(eager, rel=1e-5)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "compiled")  # saved unwrapped: no `_orig_mod.` prefixes
    assert isinstance(saved, hf_llm.GPTForCausalLM)
