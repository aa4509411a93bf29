"""train_scripts/reward.py: a reward model that learns the preference, and one-line errors for bad input."""

import json
import os
import re

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_llm.data.formatting import preference_texts

COMMON = [
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3",
    "--logging_steps", "5", "--report_to", "none", "--disable_tqdm", "true", "--dataloader_num_workers", "0",
    "--seed", "0", "--save_strategy", "no", "--use_peft", "false",
]  # fmt: skip


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


@pytest.mark.slow
def test_reward_model_ranks_chosen_above_rejected(run_alignment_script, tiny_sft_dir, tiny_preference_file, tmp_path):
    output_dir = tmp_path / "reward"
    _, metrics = run_alignment_script(
        "reward",
        ["--model_name_or_path", tiny_sft_dir, "--dataset_name", tiny_preference_file, "--output_dir", output_dir,
         "--max_steps", "30", "--eval_strategy", "steps", "--eval_steps", "30", "--validation_split_percentage", "25",
         *COMMON],
    )  # fmt: skip
    assert metrics["eval_accuracy"] > 0.9  # held-out pairs, logged by RewardTrainer

    # The saved model is a standalone reward model; score the training pairs as RewardTrainer rendered them.
    model = AutoModelForSequenceClassification.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert (
        model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    )
    rows = [json.loads(line) for line in open(tiny_preference_file)]
    chosen, rejected = zip(*(preference_texts(row, tokenizer) for row in rows), strict=True)
    assert chosen[0].startswith(
        tokenizer.apply_chat_template([{"role": "user", "content": rows[0]["prompt"]}], tokenize=False)
    )
    with torch.no_grad():
        scores = [
            model(**tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)).logits[:, 0]
            for texts in (chosen, rejected)
        ]
    assert (scores[0] > scores[1]).float().mean() > 0.9
    assert os.path.isfile(output_dir / "recipe.yaml") and os.path.isfile(output_dir / "README.md")


GOOD = {"prompt": "Q?", "chosen": "A.", "rejected": "B."}
CONVERSATION = {
    "chosen": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}],
    "rejected": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "B."}],
}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "Q?", "chosen": "A.", "wrong": "B."}] * 4, "column 'rejected' not found"),
        ([GOOD] * 3 + [{**GOOD, "rejected": "A."}], "bad.jsonl, line 4: chosen and rejected are identical"),
        ([GOOD] * 3 + [{**GOOD, "prompt": " "}], "bad.jsonl, line 4: the prompt is empty"),
        (
            [CONVERSATION] * 3
            + [{**CONVERSATION, "rejected": [{"role": "user", "content": "Other?"}, CONVERSATION["rejected"][1]]}],
            "bad.jsonl, line 4: chosen and rejected must be the same conversation.*chosen opens 'user: Q\\?'.*"
            "rejected opens 'user: Other\\?'",
        ),
    ],
)
def test_bad_preference_data_is_one_line_error(run_alignment_script, tiny_sft_dir, tmp_path, capsys, rows, message):
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(SystemExit) as exit_info:
        run_alignment_script(
            "reward",
            ["--model_name_or_path", tiny_sft_dir, "--dataset_name", data, "--output_dir", tmp_path / "out",
             "--validation_split_percentage", "0", *COMMON],
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("reward.py: error: ") and data in err
    assert re.search(message, err), err


@pytest.mark.parametrize("script", ["reward", "ppo"])
def test_pad_equal_to_eos_is_refused(
    run_alignment_script, tiny_sft_dir, tiny_preference_file, tmp_path, capsys, script
):
    # A copy of the SFT model whose tokenizer pads with eos: reward models and PPO find padding as ids == pad_token_id.
    import shutil

    model_dir = tmp_path / "pad_is_eos"
    shutil.copytree(tiny_sft_dir, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(model_dir)
    extra = ["--reward_model_path", tiny_sft_dir] if script == "ppo" else []
    with pytest.raises(SystemExit) as exit_info:
        run_alignment_script(
            script,
            ["--model_name_or_path", model_dir, "--dataset_name", tiny_preference_file, "--output_dir", tmp_path / "o",
             *extra, *COMMON],
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"{script}.py: error: ") and "distinct pad token" in err
