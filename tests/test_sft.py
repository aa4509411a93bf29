"""train_scripts/sft.py and hf_llm.training.sft on a tiny GPT: response-only labels, packing, QLoRA, dropped
examples, errors, merge, BLEU generations."""

import json
import os

import pytest
import torch
from conftest import run_script, save_tiny_gpt

ANSWERS = [
    ("What does len do?", "", "Return the number of items in a container."),
    ("What is the json module for?", "", "The json module encodes and decodes JSON documents."),
    ("Explain the with statement.", "with open(path) as f: ...", "It manages a context."),
    ("Define a function.", "", "def add(a, b):\n    return a + b"),
]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, tiny_tokenizer):
    """A saved tiny `GPTForCausalLM` 64 wide (bitsandbytes' CPU 4-bit matmul needs a 64-value block per row)."""
    path = tmp_path_factory.mktemp("tiny_sft_base")
    return save_tiny_gpt(path, tiny_tokenizer, hidden_size=64, max_position_embeddings=256)


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def alpaca_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alpaca")
    rows = [{"instruction": i, "input": x, "output": o} for i, x, o in ANSWERS]
    write_jsonl(folder / "train.jsonl", rows * 4)
    write_jsonl(folder / "validation.jsonl", rows)
    return str(folder)


def run_sft(argv):
    """What `python train_scripts/sft.py ARGV` does, in this process."""
    return run_script("sft", argv)


def common_args(base, data, output_dir):
    return [
        "--model_name_or_path", base, "--dataset_name", data, "--output_dir", output_dir,
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--learning_rate", "1e-2",
        "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0", "--logging_steps", "1", "--report_to", "none",
        "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--seed", "3",
        "--activation_checkpointing", "false", "--num_generation_samples", "2", "--generation_max_new_tokens", "8",
    ]  # fmt: skip


def sft_trainer(base, tokenizer, dataset, tmp_path, **config):
    from trl import SFTTrainer

    from hf_llm import GPTForCausalLM
    from hf_llm.training.sft import SFTConfig

    args = SFTConfig(
        output_dir=str(tmp_path / "sft"), use_cpu=True, bf16=False, report_to="none", max_length=256,
        activation_checkpointing=False, **config,
    )  # fmt: skip
    return SFTTrainer(
        model=GPTForCausalLM.from_pretrained(base), args=args, train_dataset=dataset, processing_class=tokenizer
    )


def test_labels_cover_every_response_token_and_eos_and_no_prompt_token(tiny_base, tiny_tokenizer, tmp_path):
    from datasets import Dataset

    from hf_llm.data.formatting import format_alpaca_prompt
    from hf_llm.training.sft import to_sft_dataset

    rows = [{"instruction": i, "input": x, "output": o} for i, x, o in ANSWERS]
    trainer = sft_trainer(tiny_base, tiny_tokenizer, to_sft_dataset(Dataset.from_list(rows)), tmp_path)
    prepared = {tuple(example["input_ids"]): example["labels"] for example in trainer.train_dataset}
    for instruction, input_text, output in ANSWERS:
        prompt_ids = tiny_tokenizer(format_alpaca_prompt(instruction, input_text), add_special_tokens=False)
        response_ids = tiny_tokenizer(output + tiny_tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        input_ids = tuple(prompt_ids["input_ids"] + response_ids)
        assert input_ids in prepared, "the chat template renders the Alpaca prompt followed by the response + eos"
        labels = prepared[input_ids]
        assert labels == [-100] * len(prompt_ids["input_ids"]) + response_ids
        assert labels[-1] == tiny_tokenizer.eos_token_id


def test_chat_messages_train_on_assistant_turns_only(tiny_base, tiny_tokenizer, tmp_path):
    from datasets import Dataset

    from hf_llm.training.sft import to_sft_dataset

    messages = [
        {"role": "user", "content": "What does len do?"},
        {"role": "assistant", "content": "Return the number of items."},
        {"role": "user", "content": "And json?"},
        {"role": "assistant", "content": "It encodes JSON."},
    ]
    dataset = to_sft_dataset(Dataset.from_list([{"messages": messages}]))
    trainer = sft_trainer(tiny_base, tiny_tokenizer, dataset, tmp_path, assistant_only_loss=True)
    example = trainer.train_dataset[0]
    scored = [token for token, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    expected = tiny_tokenizer(
        "Return the number of items." + tiny_tokenizer.eos_token + "It encodes JSON." + tiny_tokenizer.eos_token,
        add_special_tokens=False,
    )["input_ids"]
    assert scored == expected


def test_packed_loss_equals_unpacked_loss(tiny_base, tiny_tokenizer, tmp_path):
    from datasets import Dataset

    from hf_llm.training.sft import to_sft_dataset

    rows = [{"instruction": i, "input": x, "output": o} for i, x, o in ANSWERS]
    dataset = to_sft_dataset(Dataset.from_list(rows))
    unpacked = sft_trainer(tiny_base, tiny_tokenizer, dataset, tmp_path, shuffle_dataset=False)
    packed = sft_trainer(tiny_base, tiny_tokenizer, dataset, tmp_path, packing=True, shuffle_dataset=False)
    assert len(packed.train_dataset) < len(unpacked.train_dataset)  # several examples share a row
    model = unpacked.model.eval()

    def summed_nll(trainer):
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
        with torch.no_grad():
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
            logits = model(**inputs, use_cache=False).logits
        labels = batch["labels"]
        shift_logits, shift_labels = logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
        nll = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
        return nll, (shift_labels != -100).sum()

    packed_nll, packed_tokens = summed_nll(packed)
    unpacked_nll, unpacked_tokens = summed_nll(unpacked)
    assert packed_tokens == unpacked_tokens
    torch.testing.assert_close(packed_nll, unpacked_nll, atol=1e-4, rtol=1e-5)


def test_prompts_without_room_are_counted_and_dropped_or_refused(tiny_tokenizer, caplog):
    from datasets import Dataset

    from hf_llm.data import DataError
    from hf_llm.training.sft import drop_prompts_without_room, to_sft_dataset

    rows = [{"instruction": i, "input": x, "output": o} for i, x, o in ANSWERS]
    rows.append({"instruction": "word " * 300, "input": "", "output": "Too late."})
    dataset = to_sft_dataset(Dataset.from_list(rows))
    kept = drop_prompts_without_room(dataset, tiny_tokenizer, 256, strategy="drop", split="train")
    assert len(kept) == len(ANSWERS)
    with caplog.at_level("WARNING", logger="hf_llm"):
        kept = drop_prompts_without_room(dataset, tiny_tokenizer, 256, strategy="truncate", split="train")
    assert len(kept) == len(ANSWERS)  # a prompt that fills --max_length leaves nothing to learn: dropped, and said so
    assert "1 of 5 examples whose prompt leaves no room for an answer (20.0%) are longer than --max_length 256" in (
        caplog.text
    )
    with pytest.raises(DataError, match=r"split 'train': 1 of 5 examples \(20.0%\) are longer than --max_length 256"):
        drop_prompts_without_room(dataset, tiny_tokenizer, 256, strategy="error", split="train")


@pytest.mark.parametrize(
    "rows, extra, message",
    [
        ([{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}]}], [], "empty"),
        ([{"instruction": "Hi", "output": "Yes"}], ["--output_column", "answer"], "--output_column answer"),
        ([{"instruction": "word " * 300, "output": "Yes"}] * 3, ["--overlong_strategy", "error"], "--max_length"),
        ([{"instruction": "Hi", "output": ""}] * 3, [], "no non-empty"),
    ],
)
def test_bad_data_is_one_line_exit_2(tiny_base, tmp_path, capsys, rows, extra, message):
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(SystemExit) as exit_info:
        run_sft(
            common_args(tiny_base, data, str(tmp_path / "out"))
            + ["--max_steps", "1", "--validation_split_percentage", "0", "--max_length", "256"]
            + extra
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sft.py: error: ") and message in err[-1], err[-1]


@pytest.mark.slow
def test_lora_sft_reports_bleu_and_merges(tiny_base, alpaca_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, pipeline

    output_dir = str(tmp_path / "lora")
    metrics = run_sft(
        common_args(tiny_base, alpaca_dir, output_dir)
        + ["--max_steps", "4", "--eval_strategy", "steps", "--eval_steps", "2", "--eval_on_start", "true"]
        + ["--report_to", "tensorboard", "--merge_adapter", "true"]
    )
    assert 0 <= metrics["eval_bleu"] <= 100 and metrics["eval_perplexity"] > 1
    history = json.load(open(os.path.join(output_dir, "trainer_state.json")))["log_history"]
    bleu_steps = [entry["step"] for entry in history if "eval_bleu" in entry]
    assert bleu_steps[:3] == [0, 2, 4]  # before training (eval_on_start) and at every evaluation
    events = os.listdir(os.path.join(output_dir, "runs", "generations"))
    assert any(name.startswith("events.out.tfevents") for name in events)

    adapter = AutoPeftModelForCausalLM.from_pretrained(output_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(os.path.join(output_dir, "merged")).eval()
    ids = torch.tensor([[5, 17, 42, 9, 33]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapter(ids).logits, atol=1e-5, rtol=1e-5)
    generator = pipeline("text-generation", model=os.path.join(output_dir, "merged"))
    assert isinstance(generator("What does len do?", max_new_tokens=4)[0]["generated_text"], str)

    from hf_llm.cli import main as hf_llm_main

    assert hf_llm_main(["merge", output_dir, "--output_dir", str(tmp_path / "cli-merged")]) == 0
    remerged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "cli-merged")).eval()
    with torch.no_grad():
        torch.testing.assert_close(remerged(ids).logits, merged(ids).logits, atol=1e-6, rtol=1e-6)


def test_merge_command_refuses_a_full_model(tiny_base, capsys):
    from hf_llm.cli import main as hf_llm_main

    with pytest.raises(SystemExit) as exit_info:
        hf_llm_main(["merge", tiny_base, "--output_dir", tiny_base + "-merged"])
    assert exit_info.value.code == 2
    assert "hf-llm merge: error: " in capsys.readouterr().err and not os.path.exists(tiny_base + "-merged")


def test_merge_command_never_writes_over_a_users_files_or_into_its_input(tiny_base, tmp_path, capsys):
    from hf_llm.cli import main as hf_llm_main

    users_dir = tmp_path / "mine"
    users_dir.mkdir()
    (users_dir / "config.json").write_text("my own config")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    for output_dir, message in [
        (users_dir, "already holds config.json"),
        (adapter, "is the input ADAPTER_DIR"),
        (adapter / "sub", "is inside the input ADAPTER_DIR"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            hf_llm_main(["merge", str(adapter), "--output_dir", str(output_dir)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert (users_dir / "config.json").read_text() == "my own config"
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json"]


@pytest.mark.slow
def test_qlora_sft_step_runs_on_cpu(tiny_base, alpaca_dir, tmp_path):
    output_dir = str(tmp_path / "qlora")
    metrics = run_sft(
        common_args(tiny_base, alpaca_dir, output_dir)
        + ["--load_in_4bit", "true", "--max_steps", "2", "--save_strategy", "no"]
        # evaluation between steps: bitsandbytes' CPU inference repacking must not reach the training matmul
        + ["--eval_strategy", "steps", "--eval_steps", "1", "--eval_on_start", "true"]
    )
    assert torch.isfinite(torch.tensor(metrics["train_loss"])) and "eval_bleu" in metrics
    config = json.load(open(os.path.join(output_dir, "adapter_config.json")))
    assert config["task_type"] == "CAUSAL_LM"
