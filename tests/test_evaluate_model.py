"""`eval/evaluate_model.py` / `hf_llm.evaluation.main` on tiny models: every task writes metrics.json and metrics.md,
and every number equals an independent computation."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch
from conftest import tiny_gpt_config
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from hf_llm import GPTForCausalLM, GPTForSequenceClassification
from hf_llm.data.formatting import alpaca_messages
from hf_llm.evaluation import EVALUATORS, compute_perplexity, main
from hf_llm.stages import EVAL_TASKS, stage_for_eval_task

REPO = Path(__file__).resolve().parents[1]

PRETRAIN = [
    "The with statement wraps a block in the methods of a context manager.",
    "def add(a, b):\n    return a + b",
    "Lists are mutable sequences, typically used to store collections of homogeneous items.",
    "The json module encodes and decodes JSON documents.",
]
CLASSIFICATION = [
    ("open a file and read its lines", "files"),
    ("send an HTTP request to a server", "network"),
    ("compute the square root of a number", "math"),
    ("list the entries of a directory", "files"),
    ("parse a URL into its parts", "network"),
    ("round a float to two decimals", "math"),
    ("delete a file from the disk", "files"),
]
INSTRUCTION = [  # Alpaca rows
    {"instruction": "Explain the with statement.", "input": "", "output": "It manages a context."},
    {"instruction": "What does len return?", "input": "", "output": "The number of items in a container."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a mutable sequence type.", "input": "", "output": "list"},
    {"instruction": "What module encodes JSON?", "input": "", "output": "The json module."},
]
PREFERENCE = [
    ("What is the codecs module for?", "Encoding and decoding text.", "It sorts lists."),
    ("What does len return?", "The number of items.", "A string."),
    ("What is a tuple?", "An immutable sequence.", "A network socket."),
    ("What does json do?", "It encodes JSON documents.", "It plays music."),
    ("What is os.path for?", "Manipulating file paths.", "Drawing charts."),
]


def _write_jsonl(folder: Path, rows: list[dict]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return str(folder)


def _perturbed_lora(base, config: LoraConfig):
    """`base` with a LoRA adapter whose B matrices are random (not zeros), so the adapter changes the outputs."""
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    return model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_tokenizer):
    """Tiny saved checkpoints (full models and LoRA adapters) and one dataset folder per task."""
    root = tmp_path_factory.mktemp("evaluate_model")
    tokenizer = tiny_tokenizer
    paths = {}
    torch.manual_seed(0)
    for name, model in {
        "causal_lm": GPTForCausalLM(tiny_gpt_config(tokenizer)),
        "classifier": GPTForSequenceClassification(tiny_gpt_config(tokenizer, num_labels=3)),
        "reward": GPTForSequenceClassification(tiny_gpt_config(tokenizer, num_labels=1)),
    }.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = str(root / name)

    # A LoRA classifier on the pretrained causal LM, as train_scripts/finetune_classifier.py saves it: the adapter
    # plus the new `score` head (modules_to_save).
    base = AutoModelForSequenceClassification.from_pretrained(paths["causal_lm"], num_labels=3)
    lora = _perturbed_lora(
        base, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["score"])
    )
    lora.save_pretrained(root / "lora_classifier")  # no tokenizer: it is found through the base model
    paths["lora_classifier"] = str(root / "lora_classifier")
    paths["lora_classifier_merged"] = lora.merge_and_unload().eval()

    # A LoRA adapter on the causal LM (instruction tuning saves one), tokenizer saved with it.
    causal = _perturbed_lora(
        AutoModelForCausalLM.from_pretrained(paths["causal_lm"]),
        LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear"),
    )
    causal.save_pretrained(root / "lora_causal_lm")
    tokenizer.save_pretrained(root / "lora_causal_lm")
    paths["lora_causal_lm"] = str(root / "lora_causal_lm")
    paths["lora_causal_lm_merged"] = causal.merge_and_unload().eval()

    paths["data_pretrain"] = _write_jsonl(root / "data_pretrain", [{"text": t} for t in PRETRAIN])
    paths["data_classification"] = _write_jsonl(
        root / "data_classification", [{"text": t, "label": label} for t, label in CLASSIFICATION]
    )
    paths["data_instruction"] = _write_jsonl(root / "data_instruction", INSTRUCTION)
    paths["data_preference"] = _write_jsonl(
        root / "data_preference", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PREFERENCE]
    )
    paths["root"] = root
    return paths


def _run(workspace, name: str, *argv: str) -> tuple[dict, Path]:
    output_dir = workspace["root"] / "out" / name
    report = main([*argv, "--output_dir", str(output_dir), "--split", "test", "--batch_size", "3"])
    on_disk = json.loads((output_dir / "metrics.json").read_text())
    assert on_disk["metrics"] == json.loads(json.dumps(report["metrics"]))
    return report, output_dir


def _evaluate(workspace, name: str, model: str, task: str, dataset: str, *argv: str) -> tuple[dict, Path]:
    """`hf-llm eval --model_name_or_path MODEL --task TASK --dataset_name DATASET ARGV` on the test split."""
    return _run(workspace, name, "--model_name_or_path", model, "--task", task, "--dataset_name", dataset, *argv)


def _check_manifest(manifest: dict, task: str):
    assert manifest["task"] == task and manifest["split"] == "test" and manifest["seed"] == 42
    assert isinstance(manifest["dataset_fingerprint"], str) and manifest["dataset_fingerprint"]
    for library in ("torch", "transformers", "datasets", "evaluate", "sacrebleu", "peft"):
        assert manifest["versions"][library], library


def test_pretrain_perplexity_and_bits_per_byte(workspace, tiny_tokenizer):
    report, output_dir = _evaluate(
        workspace, "pretrain", workspace["causal_lm"], "pretrain", workspace["data_pretrain"]
    )
    metrics = report["metrics"]
    model = AutoModelForCausalLM.from_pretrained(workspace["causal_lm"]).eval()
    expected = compute_perplexity(model, tiny_tokenizer, PRETRAIN, batch_size=1)
    assert metrics["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    num_bytes = sum(len(t.encode("utf-8")) for t in PRETRAIN)
    assert metrics["num_bytes"] == num_bytes
    assert metrics["bits_per_byte"] == pytest.approx(expected["nll_sum"] / math.log(2) / num_bytes, rel=1e-5)
    _check_manifest(report["manifest"], "pretrain")
    markdown = (output_dir / "metrics.md").read_text()
    assert "| perplexity |" in markdown and "| bits_per_byte |" in markdown and "dataset_fingerprint" in markdown


def test_lora_adapter_from_a_yaml_recipe(workspace, tiny_tokenizer):
    recipe = workspace["root"] / "eval_recipe.yaml"
    recipe.write_text(
        f"model_name_or_path: {workspace['lora_causal_lm']}\ntask: pretrain\n"
        f"dataset_name: {workspace['data_pretrain']}\nbatch_size: 1\nsplit: validation\n"
    )
    # Flags after --config override the recipe (here --split and --batch_size).
    report, _ = _run(workspace, "lora_causal_lm", "--config", str(recipe))
    assert report["manifest"]["is_adapter"] is True and report["manifest"]["batch_size"] == 3
    merged = compute_perplexity(workspace["lora_causal_lm_merged"], tiny_tokenizer, PRETRAIN)
    assert report["metrics"]["perplexity"] == pytest.approx(merged["perplexity"], rel=1e-4)
    base = compute_perplexity(AutoModelForCausalLM.from_pretrained(workspace["causal_lm"]), tiny_tokenizer, PRETRAIN)
    assert report["metrics"]["perplexity"] != pytest.approx(base["perplexity"], rel=1e-3)  # the adapter is applied


def _class_logits(model, tokenizer, texts):
    rows = []
    context = model.config.max_position_embeddings
    with torch.no_grad():
        for text in texts:  # one at a time: no padding involved
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][-context:]  # the end is what is pooled
            rows.append(model(input_ids=torch.tensor([ids])).logits[0])
    return torch.stack(rows).numpy()


def _check_classification(report, output_dir, expected_predictions):
    metrics = report["metrics"]
    # ClassLabel ids follow the sorted class names when the data has string labels.
    names = sorted({label for _, label in CLASSIFICATION})
    assert metrics["label_names"] == names
    references = np.array([names.index(label) for _, label in CLASSIFICATION])
    assert metrics["accuracy"] == pytest.approx(np.mean(expected_predictions == references), rel=1e-12)
    confusion = np.zeros((3, 3), dtype=int)
    for r, p in zip(references, expected_predictions, strict=True):
        confusion[r, p] += 1
    assert metrics["confusion_matrix"] == confusion.tolist()
    assert 0.0 <= metrics["macro_f1"] <= 1.0
    assert (output_dir / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (output_dir / "metrics.md").read_text()
    assert "## Confusion matrix" in markdown and "| macro_f1 |" in markdown
    _check_manifest(report["manifest"], "classifier")


def test_classification_full_model(workspace, tiny_tokenizer):
    report, output_dir = _evaluate(
        workspace, "classification", workspace["classifier"], "classifier", workspace["data_classification"]
    )
    model = AutoModelForSequenceClassification.from_pretrained(workspace["classifier"]).eval()
    predictions = _class_logits(model, tiny_tokenizer, [t for t, _ in CLASSIFICATION]).argmax(-1)
    _check_classification(report, output_dir, predictions)
    assert report["manifest"]["is_adapter"] is False


def test_classification_lora_adapter(workspace, tiny_tokenizer):
    report, output_dir = _evaluate(
        workspace, "lora_classifier", workspace["lora_classifier"], "classifier", workspace["data_classification"]
    )
    logits = _class_logits(workspace["lora_classifier_merged"], tiny_tokenizer, [t for t, _ in CLASSIFICATION])
    _check_classification(report, output_dir, logits.argmax(-1))
    assert report["manifest"]["is_adapter"] is True
    assert report["manifest"]["model_class"].startswith("Peft")


def test_instruction_bleu_of_greedy_generations(workspace, tiny_tokenizer):
    report, output_dir = _evaluate(
        workspace, "instruction", workspace["causal_lm"], "sft", workspace["data_instruction"], "--max_new_tokens", "6"
    )
    metrics = report["metrics"]
    samples = [json.loads(line) for line in (output_dir / "generations.jsonl").read_text().splitlines()]
    assert [s["reference"] for s in samples] == [row["output"] for row in INSTRUCTION]

    # Independent greedy decoding: one prompt at a time, no padding, no KV cache, argmax by hand.
    model = AutoModelForCausalLM.from_pretrained(workspace["causal_lm"]).eval()
    tokenizer = tiny_tokenizer
    generations = []
    for row in INSTRUCTION:
        prompt = tokenizer.apply_chat_template(
            alpaca_messages(row["instruction"], row["input"]), tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        new = []
        with torch.no_grad():
            for _ in range(6):
                next_id = int(model(input_ids=torch.tensor([ids + new]), use_cache=False).logits[0, -1].argmax())
                if next_id == tokenizer.eos_token_id:
                    break
                new.append(next_id)
        generations.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    assert [s["generation"] for s in samples] == generations
    expected = sacrebleu.corpus_bleu(generations, [[row["output"] for row in INSTRUCTION]])
    assert metrics["bleu"] == pytest.approx(expected.score, rel=1e-12)
    assert metrics["reference_perplexity"] > 1.0
    manifest = report["manifest"]
    _check_manifest(manifest, "sft")
    assert manifest["decoding"] == {
        "max_new_tokens": 6,
        "do_sample": False,
        "num_beams": 1,
        "use_cache": True,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    markdown = (output_dir / "metrics.md").read_text()
    assert "## Sample generations" in markdown
    assert "nrefs:1\\|case:mixed" in markdown  # the signature's pipes are escaped inside the table


def test_reward_pairwise_accuracy(workspace, tiny_tokenizer):
    report, _ = _evaluate(workspace, "reward", workspace["reward"], "reward", workspace["data_preference"])
    model = AutoModelForSequenceClassification.from_pretrained(workspace["reward"]).eval()

    # A plain-text prompt is the user's turn of the chat template, as the reward and DPO stages train on it.
    def render(prompt, answer):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        return tiny_tokenizer.apply_chat_template(messages, tokenize=False)

    chosen = _class_logits(model, tiny_tokenizer, [render(p, c) for p, c, _ in PREFERENCE])[:, 0]
    rejected = _class_logits(model, tiny_tokenizer, [render(p, r) for p, _, r in PREFERENCE])[:, 0]
    metrics = report["metrics"]
    assert metrics["pairwise_accuracy"] == pytest.approx(np.mean(chosen > rejected), rel=1e-12)
    assert metrics["mean_margin"] == pytest.approx(np.mean(chosen - rejected), rel=1e-4, abs=1e-6)
    context = model.config.max_position_embeddings
    lengths = [
        len(tiny_tokenizer(render(p, a), add_special_tokens=False)["input_ids"])
        for p, *pair in PREFERENCE
        for a in pair
    ]
    assert metrics["num_truncated"] == sum(length > context for length in lengths)
    _check_manifest(report["manifest"], "reward")


def test_every_task_measures_a_stage():
    # `--task` values are the stages' evaluation tasks; the stage gives the data format and model head.
    assert set(EVALUATORS) <= set(EVAL_TASKS)
    assert {task: stage_for_eval_task(task).data_format for task in ("pretrain", "classifier", "sft", "reward")} == {
        "pretrain": "text",
        "classifier": "classification",
        "sft": "instruction",
        "reward": "preference",
    }


def test_bad_arguments_name_the_flag(workspace, tmp_path):
    common = ["--dataset_name", workspace["data_pretrain"], "--output_dir", str(tmp_path)]
    with pytest.raises(FileNotFoundError, match="--model_name_or_path"):
        main(["--model_name_or_path", str(tmp_path / "missing"), "--task", "pretrain", *common])
    with pytest.raises(ValueError, match="--task must be one of"):
        main(["--model_name_or_path", workspace["causal_lm"], "--task", "translation", *common])
    with pytest.raises(ValueError, match="pass --split"):
        main(["--model_name_or_path", workspace["causal_lm"], "--task", "pretrain", "--split", "dev", *common])
    with pytest.raises(ValueError, match="num_labels=1"):
        main(
            ["--model_name_or_path", workspace["classifier"], "--task", "reward"]
            + ["--dataset_name", workspace["data_preference"], "--output_dir", str(tmp_path)]
        )
    assert not (tmp_path / "metrics.json").exists()


def test_the_report_never_goes_into_the_model_or_over_a_users_files(workspace, tmp_path):
    """`--output_dir` follows the rule of merge and export: new, empty, an earlier report of eval's own (replaced
    whole), or `--overwrite_output_dir`; never the model's directory or inside it, whatever the flag says."""
    model = workspace["causal_lm"]
    argv = ["--model_name_or_path", model, "--task", "pretrain", "--dataset_name", workspace["data_pretrain"]]
    argv += ["--split", "test", "--batch_size", "3"]
    before = sorted(path.name for path in Path(model).iterdir())
    for inside in (model, str(Path(model) / "eval")):
        with pytest.raises(ValueError, match=r"--output_dir .* the input --model_name_or_path .*-eval"):
            main([*argv, "--output_dir", inside, "--overwrite_output_dir", "true"])
    assert sorted(path.name for path in Path(model).iterdir()) == before

    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.md").write_text("mine")
    with pytest.raises(ValueError, match=r"--output_dir .* already holds notes.md; .*--overwrite_output_dir"):
        main([*argv, "--output_dir", str(users)])
    assert (users / "notes.md").read_text() == "mine" and sorted(p.name for p in users.iterdir()) == ["notes.md"]
    main([*argv, "--output_dir", str(users), "--overwrite_output_dir", "true"])
    assert sorted(p.name for p in users.iterdir()) == ["metrics.json", "metrics.md"]

    # A re-run replaces an earlier report whole: no generations.jsonl of an earlier sft evaluation is left behind.
    (users / "generations.jsonl").write_text("{}\n")
    report = main([*argv, "--output_dir", str(users)])
    assert sorted(p.name for p in users.iterdir()) == ["metrics.json", "metrics.md"]
    assert json.loads((users / "metrics.json").read_text())["metrics"] == json.loads(json.dumps(report["metrics"]))


@pytest.mark.slow  # a fresh interpreter importing torch, transformers, evaluate and peft: ~30 s on 2 cores
def test_script_runs_from_the_checkout(workspace, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "eval" / "evaluate_model.py")]
        + ["--model_name_or_path", workspace["causal_lm"], "--task", "pretrain"]
        + ["--dataset_name", workspace["data_pretrain"], "--output_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert '"perplexity"' in result.stdout and metrics["perplexity"] > 1.0
    assert (tmp_path / "metrics.md").is_file()
