"""train_scripts/dpo.py: DPO moves the policy towards the chosen answers, saves a model AutoModelForCausalLM loads, and
reports the held-out win rate over the SFT model."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DPO_ARGS = [
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--max_steps", "6",
    "--learning_rate", "1e-3", "--logging_steps", "2", "--report_to", "none", "--disable_tqdm", "true",
    "--dataloader_num_workers", "0", "--seed", "0", "--save_strategy", "no", "--activation_checkpointing", "false",
    "--validation_split_percentage", "25", "--eval_strategy", "steps", "--eval_steps", "6",
    "--win_rate_samples", "4", "--win_rate_max_new_tokens", "6",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("use_peft", ["false", "true"])
def test_dpo_saves_a_loadable_policy_and_reports_win_rate(
    run_alignment_script, tiny_sft_dir, tiny_reward_dir, tiny_preference_file, tmp_path, use_peft
):
    output_dir = tmp_path / "dpo"
    _, metrics = run_alignment_script(
        "dpo",
        ["--model_name_or_path", tiny_sft_dir, "--reward_model_path", tiny_reward_dir, "--dataset_name",
         tiny_preference_file, "--output_dir", output_dir, "--use_peft", use_peft, "--merge_adapter", "true",
         *DPO_ARGS],
    )  # fmt: skip
    assert metrics["eval_rewards/accuracies"] > 0.5  # the implicit reward prefers the chosen answers
    assert metrics["eval_num_prompts"] == 4 and 0 <= metrics["eval_win_rate"] <= 1
    assert "sft_mean_reward" in json.loads((output_dir / "win_rate_results.json").read_text())

    # Full fine-tuning saves the model; LoRA an adapter plus, with --merge_adapter, a standalone merged model.
    policy_dir = output_dir if use_peft == "false" else output_dir / "merged"
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    sft = AutoModelForCausalLM.from_pretrained(tiny_sft_dir)
    assert any(not torch.equal(p, sft.get_parameter(n)) for n, p in policy.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Q?"}], add_generation_prompt=True)
    input_ids = torch.tensor([prompt["input_ids"] if hasattr(prompt, "keys") else prompt])
    assert policy.generate(input_ids, max_new_tokens=4, do_sample=False).shape[1] > input_ids.shape[1]


def test_a_win_rate_failure_after_training_keeps_the_saved_model_and_says_where(
    run_alignment_script, tiny_sft_dir, tiny_reward_dir, tiny_preference_file, tmp_path, monkeypatch, capsys
):
    def broken_win_rate(*args, **kwargs):
        raise RuntimeError("the reward model ran out of positions")

    monkeypatch.setitem(run_alignment_script.main("dpo").__globals__, "held_out_win_rate", broken_win_rate)
    output_dir = tmp_path / "dpo"
    argv = ["--model_name_or_path", tiny_sft_dir, "--reward_model_path", tiny_reward_dir, "--dataset_name",
            tiny_preference_file, "--output_dir", output_dir, "--use_peft", "false", *DPO_ARGS]  # fmt: skip
    argv[argv.index("--max_steps") + 1] = "2"
    with pytest.raises(SystemExit) as exit_info:
        run_alignment_script("dpo", argv)
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("dpo.py: error: the dpo model is saved in ") and str(output_dir) in line
    assert "RuntimeError: the reward model ran out of positions" in line
    assert "broken_win_rate" in (output_dir / "post_training_error.txt").read_text()
    policy = AutoModelForCausalLM.from_pretrained(output_dir)  # the final model, not only a checkpoint
    sft = AutoModelForCausalLM.from_pretrained(tiny_sft_dir)
    assert any(not torch.equal(p, sft.get_parameter(n)) for n, p in policy.named_parameters())
    assert (output_dir / "README.md").exists() and (output_dir / "recipe.yaml").exists()
