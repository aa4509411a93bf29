"""train_scripts/classifier.py and hf_llm.training.finetuning on a tiny GPT: padding, LoRA, reload, merge, QLoRA,
errors, Hub."""

import copy as copy_module
import csv
import json
import os

import pytest
import torch
from conftest import run_script, save_tiny_gpt, tiny_gpt_config

TOPICS = {
    "code": ["def add(a, b): return a + b", "class Point: x = 0", "import json, os", "for i in range(3): print(i)"],
    "prose": ["The quick brown fox jumps.", "The lazy dog sleeps.", "A language for work.", "The fox is brown."],
}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, tiny_tokenizer):
    """A saved tiny `GPTForCausalLM` (a stand-in pretrain.py output) with its tokenizer."""
    return save_tiny_gpt(tmp_path_factory.mktemp("tiny_base"), tiny_tokenizer)


@pytest.fixture(scope="module")
def tiny_base_96(tmp_path_factory, tiny_tokenizer):
    """Like `tiny_base`, 96 wide as the `tiny` preset: 1.5 quantization blocks of 64 (bitsandbytes' CPU 4-bit matmul
    needs at least one block per row, and its packed inference kernel whole blocks)."""
    return save_tiny_gpt(tmp_path_factory.mktemp("tiny_base_96"), tiny_tokenizer, hidden_size=96)


@pytest.fixture(scope="module")
def labeled_csv(tmp_path_factory):
    """`train.csv` / `validation.csv` / `test.csv` with `text` and string `label` columns, two classes."""
    folder = tmp_path_factory.mktemp("labeled")
    for split, repeat in (("train", 6), ("validation", 2), ("test", 2)):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            for i in range(repeat):
                for label, texts in TOPICS.items():
                    for text in texts:
                        writer.writerow([f"{text} {i}", label])
    return str(folder)


def run_classifier(argv):
    """Parse `argv` with the script's parser (LoRA by default) and run its `main`, as `python classifier.py` does."""
    return run_script("classifier", argv)


def common_args(base, data, output_dir):
    return [
        "--model_name_or_path", base, "--dataset_name", data, "--output_dir", output_dir,
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--learning_rate", "1e-2",
        "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0", "--logging_steps", "1", "--report_to", "none",
        "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--seed", "3",
    ]  # fmt: skip


def model_args(base, **overrides):
    from trl import ModelConfig

    return ModelConfig(model_name_or_path=base, **{"use_peft": True, "lora_r": 4, "lora_dropout": 0.0, **overrides})


def test_predictions_do_not_depend_on_padding(tiny_tokenizer):
    from hf_llm import GPTForSequenceClassification

    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_gpt_config(tiny_tokenizer, num_labels=3)).eval()
    ids = tiny_tokenizer("def add(a, b): return a + b")["input_ids"]
    pad = tiny_tokenizer.pad_token_id
    with torch.no_grad():
        alone = model(torch.tensor([ids])).logits
        for amount in (1, 7):
            right = torch.tensor([ids + [pad] * amount])
            left = torch.tensor([[pad] * amount + ids])
            mask_right = torch.tensor([[1] * len(ids) + [0] * amount])
            mask_left = torch.tensor([[0] * amount + [1] * len(ids)])
            torch.testing.assert_close(model(right, attention_mask=mask_right).logits, alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model(left, attention_mask=mask_left).logits, alone, atol=1e-5, rtol=1e-5)


def test_lora_trains_only_adapters_and_score_and_reloads(tiny_base, labeled_csv, tmp_path):
    from peft import get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from hf_llm.data import DataArguments, load_dataset_from_args
    from hf_llm.loading import load_adapter_model, load_model_for_stage, load_tokenizer_for_stage
    from hf_llm.training.classifier import tokenize_for_classification
    from hf_llm.training.finetuning import get_stage_peft_config

    args = model_args(tiny_base)
    tokenizer = load_tokenizer_for_stage(args, "classifier")
    model = load_model_for_stage(args, "classifier", tokenizer, num_labels=2)
    model = get_peft_model(model, get_stage_peft_config(args, "classifier"))
    data_args = DataArguments(dataset_name=labeled_csv)
    splits = tokenize_for_classification(
        load_dataset_from_args(data_args, "classification"), tokenizer, data_args, max_length=128
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    training_args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=3, learning_rate=1e-2, per_device_train_batch_size=8,
        report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    Trainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
    ).train()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert any("lora_B" in name for name in changed)
    assert any("score" in name for name in changed), "the new score head must train (task_type SEQ_CLS)"
    assert all("lora_" in name or "score" in name for name in changed), sorted(changed)

    model.eval()
    batch = tokenizer(["def add(a, b): return 1", "The lazy fox."], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = load_adapter_model(str(tmp_path / "adapter"), num_labels=2)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, atol=0, rtol=0)


@pytest.mark.slow
def test_lora_script_saves_adapter_that_merges_and_loads_anywhere(tiny_base, labeled_csv, tmp_path):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    output_dir = str(tmp_path / "cls")
    metrics = run_classifier(
        common_args(tiny_base, labeled_csv, output_dir)
        + ["--num_train_epochs", "2", "--merge_adapter", "true", "--class_weights", "balanced"]
    )
    for key in ("eval_accuracy", "eval_macro_f1", "test_accuracy", "test_macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    history = json.load(open(os.path.join(output_dir, "trainer_state.json")))["log_history"]
    assert sum("eval_macro_f1" in entry for entry in history) >= 2  # every evaluation, not only the last
    assert os.path.isfile(os.path.join(output_dir, "adapter_model.safetensors"))
    assert not os.path.isfile(os.path.join(output_dir, "model.safetensors"))
    assert json.load(open(os.path.join(output_dir, "labels.json")))["id2label"] == {"0": "code", "1": "prose"}
    card = open(os.path.join(output_dir, "README.md")).read()
    assert "classifier" in card and tiny_base in card

    # Baselines fitted on the same train split, scored on the same test split, beside the classifier's scores.
    from hf_llm.data import DataArguments, load_dataset_from_args
    from hf_llm.evaluation.baselines import classification_baselines

    splits = load_dataset_from_args(DataArguments(dataset_name=labeled_csv), "classification", seed=3)
    train, test = splits["train"], splits["test"]
    expected = classification_baselines(train["text"], train["label"], test["text"], test["label"], num_labels=2)
    saved = json.load(open(os.path.join(output_dir, "test_results.json")))
    for key in ("majority_accuracy", "tfidf_accuracy", "tfidf_macro_f1"):
        assert saved[f"test_{key}"] == pytest.approx(expected[key]) == pytest.approx(metrics[f"test_{key}"])
    assert saved["test_accuracy_minus_tfidf"] == pytest.approx(saved["test_accuracy"] - expected["tfidf_accuracy"])
    assert saved["test_baseline_verdict"].startswith("The classifier ")
    assert "eval_tfidf_accuracy" in metrics and "## Baselines" in card and "| validation | accuracy |" in card

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    batch = tokenizer(["import os 9", "The brown dog."], padding=True, return_tensors="pt")
    adapter = AutoPeftModelForSequenceClassification.from_pretrained(output_dir, num_labels=2).eval()
    merged_dir = os.path.join(output_dir, "merged")
    assert not os.path.exists(os.path.join(merged_dir, "adapter_config.json"))
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapter(**batch).logits, atol=1e-5, rtol=1e-5)
    assert merged.config.id2label == {0: "code", 1: "prose"}
    predictions = pipeline("text-classification", model=merged_dir)(["import os 9", "The brown dog."])
    assert {p["label"] for p in predictions} <= {"code", "prose"}

    # hf-llm merge does the same from the command line
    from hf_llm.loading import merge_adapter

    again = merge_adapter(output_dir, str(tmp_path / "merged-again"))
    remerged = AutoModelForSequenceClassification.from_pretrained(again).eval()
    with torch.no_grad():
        torch.testing.assert_close(remerged(**batch).logits, merged(**batch).logits, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_qlora_step_runs_on_cpu(tiny_base_96, labeled_csv, tmp_path):
    from hf_llm.loading import load_model_for_stage, load_tokenizer_for_stage

    tiny_base = tiny_base_96
    args = model_args(tiny_base, load_in_4bit=True, use_bnb_nested_quant=True)
    model = load_model_for_stage(args, "classifier", load_tokenizer_for_stage(args, "classifier"), num_labels=2)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    assert type(model.score).__name__ == "Linear"
    model.eval()
    with torch.no_grad():  # the inference path (bitsandbytes' CPU kernel choice differs from training's)
        assert model(torch.tensor([[5, 6, 7, 8]])).logits.shape == (1, 2)

    output_dir = str(tmp_path / "qlora")
    metrics = run_classifier(
        common_args(tiny_base, labeled_csv, output_dir)
        + ["--load_in_4bit", "true", "--max_steps", "2", "--eval_strategy", "steps", "--eval_steps", "2"]
        + ["--save_strategy", "steps", "--save_steps", "2"]
    )
    assert 0 <= metrics["eval_accuracy"] <= 1
    assert metrics["train_loss"] == pytest.approx(metrics["train_loss"])  # finite
    assert os.path.isfile(os.path.join(output_dir, "adapter_model.safetensors"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--class_names", "code", "poetry"], "outside the class set"),  # 'prose' is not a class
        (["--text_column", "body"], "--text_column body"),  # missing column
        (["--load_in_4bit", "true", "--use_peft", "false"], "--use_peft true"),
    ],
)
def test_bad_input_is_one_line_exit_2(tiny_base, labeled_csv, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        run_classifier(common_args(tiny_base, labeled_csv, str(tmp_path / "bad")) + ["--max_steps", "1"] + extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("classifier.py: error: ") and message in err[-1]


def test_classifier_needs_a_distinct_pad_token(tiny_tokenizer):
    from hf_llm.errors import UsageError
    from hf_llm.loading import check_pad_token

    copy = copy_module.deepcopy(tiny_tokenizer)
    copy.pad_token = copy.eos_token
    with pytest.raises(UsageError, match="distinct pad token"):
        check_pad_token(copy, "classifier")
    check_pad_token(copy, "sft")  # causal LM stages pad with eos


def test_balanced_class_weights_and_weighted_loss():
    from hf_llm.training.classifier import balanced_class_weights, weighted_cross_entropy

    weights = balanced_class_weights([0, 0, 0, 1], 2)
    torch.testing.assert_close(weights, torch.tensor([4 / 6, 4 / 2]))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    per_example = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (per_example * weights[labels]).sum() / weights[labels].sum()
    torch.testing.assert_close(weighted_cross_entropy(weights)({"logits": logits}, labels), expected)
    with pytest.raises(ValueError, match="no training example"):
        balanced_class_weights([0, 0], 2)


@pytest.mark.slow
def test_adapter_pushed_to_hub_loads_by_repo_id(tiny_base, labeled_csv, tmp_path, hub_server, monkeypatch):
    import hub_server as hub_server_module

    from hf_llm.loading import load_adapter_model

    _, env = hub_server
    hub_server_module.patch_hub_env(monkeypatch, env)
    output_dir = str(tmp_path / "pushed")
    run_classifier(
        common_args(tiny_base, labeled_csv, output_dir)
        + ["--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no"]
        + ["--push_to_hub", "true", "--hub_model_id", "tester/tiny-classifier"]
    )
    local = load_adapter_model(output_dir)
    remote = load_adapter_model("tester/tiny-classifier")
    assert remote.config.id2label == {0: "code", 1: "prose"}
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]])}
    with torch.no_grad():
        torch.testing.assert_close(remote(**batch).logits, local(**batch).logits, atol=0, rtol=0)


def test_gpt2_checkpoint_is_converted_once_with_a_pad_token(tiny_tokenizer, tmp_path, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from hf_llm import GPTForSequenceClassification
    from hf_llm.loading import load_model_for_stage, load_tokenizer_for_stage, resolve_base_model

    monkeypatch.setenv("HF_LLM_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    gpt2_dir = tmp_path / "gpt2"
    config = GPT2Config(vocab_size=len(tiny_tokenizer) - 1, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(gpt2_dir)
    # GPT-2's tokenizer: eos only, no pad token, no chat template.
    PreTrainedTokenizerFast(
        tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="<|endoftext|>"
    ).save_pretrained(gpt2_dir)
    args = model_args(str(gpt2_dir))
    tokenizer = load_tokenizer_for_stage(args, "classifier")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and tokenizer.chat_template is not None
    model = load_model_for_stage(args, "classifier", tokenizer, num_labels=2)
    assert isinstance(model, GPTForSequenceClassification)
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    converted = resolve_base_model(str(gpt2_dir))
    assert converted.startswith(str(tmp_path / "cache")) and resolve_base_model(str(gpt2_dir)) == converted
