"""Regression suite of bad inputs and faults (issue 9): each ends in one line `<prog>: error: ...` naming the file or
flag, exit code 2, and leaves the output directory exactly as it was.

The cases run `train_scripts/pretrain.py`'s `main` in-process, wrapped as its `__main__` wraps it (`RecipeParser` +
`exit_on_user_error`); `test_the_script_itself_prints_one_line` runs the real script once in a subprocess.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PRETRAIN_SCRIPT, REPO_ROOT, TINY_PRETRAIN_ARGS, script_main

from hf_llm.data import DataArguments
from hf_llm.errors import exit_on_user_error
from hf_llm.training import ModelArguments, PretrainConfig, RecipeParser, RunAlreadyFinished

MAX_STEPS = 2
RESUME = ["--resume_from_checkpoint", "latest"]


@pytest.fixture(scope="module")
def pretrain_main():
    return script_main("pretrain")


def run(pretrain_main, argv) -> None:
    """What `python train_scripts/pretrain.py ARGV` does, in this process."""
    with exit_on_user_error("pretrain.py"):
        parser = RecipeParser((ModelArguments, DataArguments, PretrainConfig))
        pretrain_main(*parser.parse_args_and_config([str(a) for a in argv]))


def base_argv(data, output_dir, max_steps=MAX_STEPS) -> list:
    return [
        "--dataset_name", data, "--output_dir", output_dir, *TINY_PRETRAIN_ARGS,
        "--max_steps", max_steps, "--save_steps", 1, "--eval_strategy", "no",
    ]  # fmt: skip


def snapshot(path) -> dict[str, str] | None:
    """Every file under `path` with a hash of its bytes (`None` when `path` does not exist)."""
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return {"": hashlib.sha1(open(path, "rb").read()).hexdigest()}
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            file = os.path.join(root, name)
            found[os.path.relpath(file, path)] = hashlib.sha1(open(file, "rb").read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, pretrain_main, pretrain_text_file):
    """A finished 2-step run with checkpoint-1 and checkpoint-2."""
    output_dir = tmp_path_factory.mktemp("bad_inputs") / "finished"
    run(pretrain_main, base_argv(pretrain_text_file, output_dir))
    return output_dir


# ---- the cases: (id, set-up, extra argv, fragments the one line must contain) ----
# A set-up gets (tmp_path, finished_run, data file) and returns the --output_dir to use; `None` extra argv entries are
# filled by the set-up through the dict it may return instead.


def _copy_finished(tmp_path, finished_run, data):
    target = tmp_path / "out"
    shutil.copytree(finished_run, target)
    return target


def _checkpoints_only(tmp_path, finished_run, data):
    target = tmp_path / "out"
    target.mkdir()
    shutil.copytree(finished_run / "checkpoint-1", target / "checkpoint-1")
    return target


def _user_files(tmp_path, finished_run, data):
    target = tmp_path / "out"
    target.mkdir()
    (target / "README.md").write_text("my notes\n")
    (target / "config.json").write_text("{}\n")
    return target


def _a_file(tmp_path, finished_run, data):
    target = tmp_path / "out.txt"
    target.write_text("not a directory\n")
    return target


def _fresh(tmp_path, finished_run, data):
    return tmp_path / "out"


def _broken_model(kind):
    def setup(tmp_path, finished_run, data):
        model = tmp_path / "model"
        shutil.copytree(finished_run, model, ignore=shutil.ignore_patterns("checkpoint-*"))
        weights = model / "model.safetensors"
        if kind == "truncated":
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        elif kind == "pickle_only":
            from safetensors.torch import load_file

            torch.save(load_file(weights), model / "pytorch_model.bin")
            weights.unlink()
        elif kind == "other_shape":
            config = json.loads((model / "config.json").read_text())
            config["hidden_size"] = 64
            (model / "config.json").write_text(json.dumps(config))
        return tmp_path / "out"

    return setup


def _recipe(text):
    def setup(tmp_path, finished_run, data):
        (tmp_path / "recipe.yaml").write_text(text)
        return tmp_path / "out"

    return setup


def _jsonl(tmp_path, finished_run, data):
    (tmp_path / "data.jsonl").write_text('{"text": "a b c"}\n\n{"text": "d e f"}\n{"text": "broken\n{"text": "ok"}\n')
    return tmp_path / "out"


CASES = [
    # 1. output directories are never silently overwritten
    ("finished_run", _copy_finished, [], ["already holds a finished run", "--overwrite_output_dir"]),
    ("earlier_checkpoints", _checkpoints_only, [], ["checkpoints of an earlier run", "checkpoint-1",
                                                   "--resume_from_checkpoint latest", "--overwrite_output_dir"]),
    ("user_files", _user_files, [], ["files this run did not write", "README.md", "config.json"]),
    ("user_files_resume_latest", _user_files, ["--resume_from_checkpoint", "latest"],
     ["holds no checkpoint", "README.md", "--overwrite_output_dir"]),
    ("output_dir_is_a_file", _a_file, [], ["--output_dir", "is a file"]),
    ("overwrite_and_resume", _copy_finished, ["--overwrite_output_dir", "--resume_from_checkpoint", "latest"],
     ["--overwrite_output_dir", "--resume_from_checkpoint", "only one"]),
    # 2. resume only this run
    ("resume_finished_with_other_max_steps", _copy_finished, [*RESUME, "--max_steps", 5],
     ["--max_steps 2", "--max_steps 5"]),
    ("resume_checkpoint_of_other_max_steps", _checkpoints_only, [*RESUME, "--max_steps", 5],
     ["checkpoint-1", "--max_steps 2", "--max_steps 5"]),
    ("resume_checkpoint_of_other_shape", _checkpoints_only, [*RESUME, "--hidden_size", 64],
     ["checkpoint-1", "another shape", "hidden_size 32 there, 64 here"]),
    ("resume_missing_checkpoint", _fresh, ["--resume_from_checkpoint", "missing-checkpoint"],
     ["--resume_from_checkpoint missing-checkpoint", "no such directory"]),
    # 3. loading errors
    ("missing_model_dir", _fresh, ["--model_name_or_path", "./no-such-model"],
     ["--model_name_or_path ./no-such-model", "no such directory"]),
    ("offline_hub_id", _fresh, ["--model_name_or_path", "someone/not-cached"],
     ["--model_name_or_path someone/not-cached", "not in the Hugging Face cache"]),
    ("truncated_safetensors", _broken_model("truncated"), ["--model_name_or_path", "{tmp}/model"],
     ["model.safetensors", "truncated or corrupt"]),
    ("pickle_only_checkpoint", _broken_model("pickle_only"), ["--model_name_or_path", "{tmp}/model"],
     ["pytorch_model.bin", "safetensors weights only", "save_pretrained"]),
    ("weights_of_another_shape", _broken_model("other_shape"), ["--model_name_or_path", "{tmp}/model"],
     ["--model_name_or_path", "do not fit its config.json", "[32, 32] in the weights but [32, 64] by the config"]),
    ("flash_attention_without_flash_attn", _fresh, ["--attn_implementation", "flash_attention_2"],
     ["--attn_implementation flash_attention_2", "flash-attn"]),
    ("invalid_yaml", _recipe("max_steps: 2\n  learning_rate: [3\n"), ["--config", "{tmp}/recipe.yaml"],
     ["recipe.yaml, line 2, column", "invalid YAML"]),
    ("unknown_recipe_key", _recipe("max_steps: 2\nlerning_rate: 0.1\n"), ["--config", "{tmp}/recipe.yaml"],
     ["recipe.yaml", "unknown key 'lerning_rate'", "learning_rate"]),
    ("missing_recipe", _fresh, ["--config", "{tmp}/nope.yaml"], ["--config", "nope.yaml", "no such file"]),
    # 5. data edges
    ("malformed_jsonl_line", _jsonl, ["--dataset_name", "{tmp}/data.jsonl"], ["data.jsonl, line 4", "invalid JSON"]),
    ("malformed_jsonl_line_replace", _jsonl, ["--dataset_name", "{tmp}/data.jsonl", "--encoding_errors", "replace"],
     ["data.jsonl, line 4", "invalid JSON"]),
    ("overlong_strategy_in_pretraining", _fresh, ["--overlong_strategy", "drop"],
     ["--overlong_strategy drop", "does not apply to pretraining"]),
]  # fmt: skip


@pytest.mark.parametrize("setup, extra, fragments", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    setup, extra, fragments, pretrain_main, finished_run, pretrain_text_file, tmp_path, capsys
):
    output_dir = setup(tmp_path, finished_run, pretrain_text_file)
    extra = [str(a).replace("{tmp}", str(tmp_path)) for a in extra]
    before = snapshot(output_dir)
    model_before = snapshot(tmp_path / "model")

    argv = base_argv(pretrain_text_file, output_dir)
    if "--model_name_or_path" in extra:  # a loaded model brings its own shape: drop the new-model size flags
        for flag in ("--hidden_size", "--num_hidden_layers", "--num_attention_heads", "--max_position_embeddings"):
            del argv[argv.index(flag) : argv.index(flag) + 2]
    with pytest.raises(SystemExit) as exit_info:
        run(pretrain_main, [*argv, *extra])

    assert exit_info.value.code == 2
    # Progress bars (datasets, tokenizer training) share stderr; everything else is the one error line.
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if "/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("pretrain.py: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0]
    assert snapshot(output_dir) == before
    assert snapshot(tmp_path / "model") == model_before


# ---- hf-llm eval / generate (item 3's loading errors, item 4's random heads, item 5's decoding flags) ----


def _classification_data(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"text {i}", "label": ["neg", "pos"][i % 2]}) + "\n" for i in range(8))
    )
    return path


GENERATE = ["generate", "--model_name_or_path", "{run}", "--prompt", "x"]


def _preference_data(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"question {i}", "chosen": "a good answer", "rejected": "a bad one"} for i in range(8)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


CLI_CASES = [
    ("eval_classifier_on_a_causal_lm", ["eval", "--task", "classifier", "--model_name_or_path", "{run}"],
     ["hf-llm eval: error: --task classifier", "GPTForCausalLM", "no trained classification head"]),
    ("eval_reward_on_a_causal_lm", ["eval", "--task", "reward", "--model_name_or_path", "{run}"],
     ["--model_name_or_path {run}", "GPTForCausalLM", "not a reward model", "train_scripts/reward.py"]),
    ("eval_missing_model_dir", ["eval", "--task", "pretrain", "--model_name_or_path", "{tmp}/missing"],
     ["--model_name_or_path {tmp}/missing", "no such directory"]),
    ("eval_pickle_only", ["eval", "--task", "pretrain", "--model_name_or_path", "{tmp}/model"],
     ["pytorch_model.bin", "safetensors weights only"]),
    ("generate_negative_temperature", [*GENERATE, "--temperature", "-1"],
     ["hf-llm generate: error: --temperature -1.0"]),
    ("generate_top_p_zero", [*GENERATE, "--top_p", "0"],
     ["--top_p 0.0 is outside (0, 1]"]),
    ("generate_top_p_above_one", [*GENERATE, "--top_p", "1.5"],
     ["--top_p 1.5 is outside (0, 1]"]),
    ("generate_missing_model", ["generate", "--model_name_or_path", "{tmp}/missing", "--prompt", "x"],
     ["--model_name_or_path {tmp}/missing", "no such directory"]),
]  # fmt: skip


@pytest.mark.parametrize("argv, fragments", [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2(argv, fragments, finished_run, pretrain_text_file, tmp_path, capsys):
    from hf_llm.cli import main as cli_main

    _broken_model("pickle_only")(tmp_path, finished_run, pretrain_text_file)
    fill = {"{run}": str(finished_run), "{tmp}": str(tmp_path)}

    def filled(value):
        for key, replacement in fill.items():
            value = str(value).replace(key, replacement)
        return value

    argv = [filled(a) for a in argv]
    if argv[0] == "eval":
        data = _preference_data(tmp_path) if "reward" in argv else _classification_data(tmp_path)
        argv += ["--dataset_name", str(data), "--split", "train", "--output_dir", str(tmp_path / "out")]
    before = snapshot(finished_run)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith(f"hf-llm {argv[0]}: error: "), lines
    for fragment in fragments:
        assert filled(fragment) in lines[0]
    assert not (tmp_path / "out").exists()
    assert snapshot(finished_run) == before


def test_generate_from_an_empty_prompt_starts_from_bos(finished_run):
    from transformers import AutoTokenizer

    from hf_llm.cli import main as cli_main
    from hf_llm.generation import prompt_inputs

    tokenizer = AutoTokenizer.from_pretrained(finished_run)
    assert prompt_inputs(tokenizer, "")["input_ids"].tolist() == [[tokenizer.bos_token_id]]
    assert prompt_inputs(tokenizer, "def")["input_ids"].tolist() == [tokenizer("def")["input_ids"]]
    argv = ["generate", "--model_name_or_path", str(finished_run), "--prompt", "", "--max_new_tokens", "4"]
    assert cli_main(argv) == 0  # was an IndexError


def test_resuming_a_finished_run_does_nothing_and_exits_0(pretrain_main, finished_run, pretrain_text_file, tmp_path):
    output_dir = _copy_finished(tmp_path, finished_run, pretrain_text_file)
    before = snapshot(output_dir)
    with pytest.raises(RunAlreadyFinished) as exit_info:
        run(pretrain_main, [*base_argv(pretrain_text_file, output_dir), "--resume_from_checkpoint", "latest"])
    assert exit_info.value.code == 0
    assert "finished at step 2 of 2: nothing to do" in str(exit_info.value)
    assert snapshot(output_dir) == before  # no checkpoint-3, final model untouched


def test_overwrite_output_dir_replaces_the_run(pretrain_main, finished_run, pretrain_text_file, tmp_path):
    output_dir = _copy_finished(tmp_path, finished_run, pretrain_text_file)
    (output_dir / "notes.txt").write_text("mine\n")
    run(pretrain_main, [*base_argv(pretrain_text_file, output_dir, max_steps=1), "--overwrite_output_dir"])
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and state["max_steps"] == 1
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-1"]  # the old checkpoint-2 is gone
    assert not (output_dir / "notes.txt").exists()


def test_resume_logs_checkpoint_and_step_without_missing_keys(finished_run, pretrain_text_file, tmp_path):
    # A job that stopped after step 1; resumed in a subprocess so the default log level and handlers apply.
    output_dir = _checkpoints_only(tmp_path, finished_run, pretrain_text_file)
    result = subprocess.run(
        [sys.executable, PRETRAIN_SCRIPT, *map(str, base_argv(pretrain_text_file, output_dir)),
         "--resume_from_checkpoint", "latest"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming from {output_dir / 'checkpoint-1'} at step 1 of 2." in result.stderr
    assert "missing keys" not in result.stderr
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def test_the_script_itself_prints_one_line(tmp_path):
    (tmp_path / "recipe.yaml").write_text("max_steps: 2\nlerning_rate: 0.1\n")
    result = subprocess.run(
        [sys.executable, PRETRAIN_SCRIPT, "--config", tmp_path / "recipe.yaml", "--output_dir", tmp_path / "out"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pretrain.py: error: --config ") and "lerning_rate" in last
    assert not (tmp_path / "out").exists()


def test_eval_strategy_no_works_with_every_recipe(pretrain_main, pretrain_text_file, tmp_path):
    # Every recipe turns eval_on_start on; `--eval_strategy no` must turn it off rather than fail at step 0.
    recipes = sorted((Path(REPO_ROOT) / "train_scripts" / "configs" / "pretrain").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        parser = RecipeParser((ModelArguments, DataArguments, PretrainConfig))
        _, _, training_args = parser.parse_args_and_config(
            ["--config", str(recipe), "--eval_strategy", "no", "--output_dir", str(tmp_path / recipe.stem),
             "--use_cpu", "true"]
        )  # fmt: skip
        assert training_args.eval_on_start is False, recipe.name
    # And a run with eval_on_start from the recipe and --eval_strategy no trains.
    (tmp_path / "recipe.yaml").write_text("eval_strategy: steps\neval_steps: 1\neval_on_start: true\n")
    run(pretrain_main, ["--config", tmp_path / "recipe.yaml", *base_argv(pretrain_text_file, tmp_path / "run", 1)])
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_labels_outside_the_vocabulary_raise_a_clear_error():
    from hf_llm import GPTConfig, GPTForCausalLM

    config = GPTConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=16
    )
    model = GPTForCausalLM(config)
    input_ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="labels contain token id 99, outside the vocabulary of vocab_size=64"):
        model(input_ids=input_ids, labels=torch.tensor([[1, 99, 3]]))
    model(input_ids=input_ids, labels=torch.tensor([[1, -100, 3]]))  # -100 is ignored, not out of range


@pytest.mark.parametrize("stage", ["classifier", "sft", "reward", "ppo", "dpo"])
def test_every_stage_script_refuses_an_output_dir_with_a_users_files(stage, tmp_path):
    # check_output_dir runs first in every stage script: a user's README.md is refused before any model or data loads.
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "README.md").write_text("my notes\n")
    extra = ["--reward_model_path", "openai-community/gpt2"] if stage == "ppo" else []
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "train_scripts", f"{stage}.py"), "--dataset_name", "pydocs",
         "--model_name_or_path", "openai-community/gpt2", "--output_dir", output_dir, *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{stage}.py: error:")]
    assert len(errors) == 1 and "--overwrite_output_dir" in errors[0] and "README.md" in errors[0], result.stderr
    assert sorted(os.listdir(output_dir)) == ["README.md"]
    assert (output_dir / "README.md").read_text() == "my notes\n"


# ---- a bug keeps its traceback ----
PLANTED_BUG = """
import runpy, sys
import transformers
from hf_llm.errors import exit_on_user_error


def training_step(self, *args, **kwargs):
    raise ValueError("planted bug inside a trainer step")


transformers.Trainer.training_step = training_step
sys.argv = ["pretrain.py", *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def test_a_bug_inside_training_keeps_its_traceback_and_is_not_exit_2(pretrain_text_file, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(PLANTED_BUG.format(script=PRETRAIN_SCRIPT))
    argv = [
        *TINY_PRETRAIN_ARGS,
        "--dataset_name",
        pretrain_text_file,
        "--output_dir",
        tmp_path / "out",
        "--max_steps",
        "1",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(driver), *map(str, argv)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback (most recent call last)" in result.stderr
    assert "ValueError: planted bug inside a trainer step" in result.stderr
    assert "pretrain.py: error:" not in result.stderr


def test_only_hf_llms_own_errors_and_user_path_errors_are_one_line(capsys):
    from hf_llm.data import DataError
    from hf_llm.errors import LoadError, UsageError, exit_on_user_error

    for error in (UsageError("--x 1 is wrong"), DataError("row 3 is empty"), LoadError("--model_name_or_path m: gone"),
                  FileNotFoundError(2, "No such file or directory", "data.csv")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info, exit_on_user_error("tool"):
            raise error
        assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("tool: error: ")
    for bug in (ValueError("a library's internal check"), OSError("connection reset"), KeyError("x")):
        with pytest.raises(type(bug)), exit_on_user_error("tool"):
            raise bug


def test_an_offline_hub_id_is_named_with_its_flag(
    run_alignment_script, tiny_preference_file, tmp_path, monkeypatch, capsys
):
    import huggingface_hub.constants

    from hf_llm.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit) as exit_info:
        run_alignment_script(
            "reward",
            ["--model_name_or_path", "someorg/not-cached", "--dataset_name", tiny_preference_file,
             "--output_dir", tmp_path / "reward", "--report_to", "none"],
        )  # fmt: skip
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("reward.py: error: --model_name_or_path someorg/not-cached: ") and "HF_HUB_OFFLINE" in line
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--task", "pretrain", "--model_name_or_path", "someorg/not-cached", "--dataset_name", "pydocs",
              "--output_dir", str(tmp_path / "eval")])  # fmt: skip
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and "--model_name_or_path someorg/not-cached: " in line
