"""The arguments layer: presets are data, a recipe's preset never blocks a checkpoint, transformers validates the
attention implementation and the error names the flag."""

import ast
import os
from pathlib import Path

import pytest
from conftest import REPO_ROOT, tiny_gpt_config
from trl import TrlParser

from hf_llm import GPTForCausalLM
from hf_llm.data import DataArguments
from hf_llm.errors import UsageError, one_line
from hf_llm.training import ModelArguments, PretrainConfig, presets
from hf_llm.training.pretraining import build_or_load_causal_lm

TINY_RECIPE = os.path.join(REPO_ROOT, "train_scripts", "configs", "pretrain", "tiny.yaml")


def _parse(*argv: str) -> ModelArguments:
    parser = TrlParser((ModelArguments, DataArguments, PretrainConfig))
    return parser.parse_args_and_config(["--config", TINY_RECIPE, "--output_dir", "unused", *argv])[0]


def test_presets_are_data_only():
    tree = ast.parse(Path(presets.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert imported <= {"Any"}  # nothing from hf_llm: no cycle with arguments.py
    assert not [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]


def test_recipe_preset_does_not_block_a_checkpoint_on_the_command_line():
    assert _parse().model_preset == "tiny"
    model_args = _parse("--model_name_or_path", "some/checkpoint")
    assert model_args.model_name_or_path == "some/checkpoint" and model_args.model_preset is None
    # Shape flags still cannot change a loaded model.
    with pytest.raises(ValueError, match="remove --hidden_size"):
        _parse("--model_name_or_path", "some/checkpoint", "--hidden_size", "64")


@pytest.mark.parametrize("cleared", [["--model_preset="], ["--model_preset", "none"], ["--model_preset", "None"]])
def test_model_preset_can_be_cleared(cleared):
    model_args = _parse(*cleared, "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2")
    assert model_args.model_preset is None and model_args.hidden_size == 32


def test_unknown_attention_implementation_is_refused_by_transformers_in_one_line(tiny_tokenizer):
    model_args = ModelArguments(model_preset="tiny", attn_implementation="fast_please")  # no list of ours refuses it
    with pytest.raises(UsageError) as error:
        build_or_load_causal_lm(model_args, tiny_tokenizer)
    message = one_line(error.value)
    assert message.startswith("--attn_implementation 'fast_please' cannot be used here")
    assert '"eager"' in message and "sdpa" in message  # transformers' own list of what it accepts
    model = build_or_load_causal_lm(ModelArguments(model_preset="tiny", attn_implementation="eager"), tiny_tokenizer)
    assert model.config._attn_implementation == "eager"


def test_dropout_overrides_a_loaded_model(tiny_tokenizer, tmp_path):
    GPTForCausalLM(tiny_gpt_config(tiny_tokenizer, residual_dropout=0.0)).save_pretrained(tmp_path)
    model_args = ModelArguments(model_name_or_path=str(tmp_path), model_preset="tiny", residual_dropout=0.25)
    model = build_or_load_causal_lm(model_args, tiny_tokenizer)
    assert model.config.residual_dropout == 0.25 and model.config.hidden_size == 32
