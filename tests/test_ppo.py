"""train_scripts/ppo.py: a few PPO episodes save a loadable policy and value model; the reference stays frozen; prompts
are always padded on the left; the held-out win rate of a policy over itself is exactly one half."""

import copy
import json

import pytest
import torch
from conftest import tiny_gpt_config
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from hf_llm import GPTForCausalLM, GPTForSequenceClassification
from hf_llm.evaluation.win_rate import compare_policies
from hf_llm.training.alignment import LeftPaddingCollator

PPO_ARGS = [
    "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--total_episodes", "8",
    "--num_ppo_epochs", "1", "--response_length", "8", "--learning_rate", "1e-4", "--logging_steps", "1",
    "--report_to", "none", "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--seed", "0",
    "--save_strategy", "no", "--num_sample_generations", "0", "--gradient_checkpointing", "false",
    "--use_peft", "false", "--prompt_format", "preference", "--validation_split_percentage", "25",
    "--win_rate_samples", "4",
]  # fmt: skip


@pytest.mark.slow
def test_ppo_saves_a_policy_that_generates_and_a_value_model(
    run_alignment_script, tiny_sft_dir, tiny_reward_dir, tiny_preference_file, tmp_path
):
    output_dir = tmp_path / "ppo"
    _, metrics = run_alignment_script(
        "ppo",
        ["--model_name_or_path", tiny_sft_dir, "--reward_model_path", tiny_reward_dir, "--dataset_name",
         tiny_preference_file, "--output_dir", output_dir, *PPO_ARGS],
    )  # fmt: skip
    assert {"train_objective_kl", "train_objective_scores", "train_ppo_eos_rate"} <= metrics.keys()
    assert 0 <= metrics["eval_win_rate"] <= 1 and metrics["eval_num_prompts"] == 4
    # The SFT tokenizer was saved padding on the right; the rollouts are still left-padded: at the first update the
    # policy equals its reference, so the sampled KL is zero (right-padded rollouts make it 0.16-0.67 on such models).
    first_update = json.loads((output_dir / "trainer_state.json").read_text())["log_history"][0]
    assert AutoTokenizer.from_pretrained(tiny_sft_dir).padding_side == "right"
    assert abs(first_update["objective/kl"]) < 1e-4

    policy = AutoModelForCausalLM.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    sft = AutoModelForCausalLM.from_pretrained(tiny_sft_dir)
    changed = [n for n, p in policy.named_parameters() if not torch.equal(p, sft.get_parameter(n))]
    assert changed, "PPO left the policy unchanged"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What does item 1 do?"}], add_generation_prompt=True
    )
    input_ids = torch.tensor([prompt["input_ids"] if hasattr(prompt, "keys") else prompt])
    generated = policy.generate(input_ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > input_ids.shape[1]

    value_model = AutoModelForSequenceClassification.from_pretrained(output_dir / "value_model")
    assert value_model.config.num_labels == 1
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_dir)
    assert any(not torch.equal(p, reward_model.get_parameter(n)) for n, p in value_model.named_parameters())
    results = json.loads((output_dir / "win_rate_results.json").read_text())
    assert results["win_rate"] == metrics["eval_win_rate"]
    assert len((output_dir / "win_rate_samples.jsonl").read_text().splitlines()) == 4


@pytest.mark.slow
def test_reference_model_is_unchanged_by_ppo(tiny_tokenizer, tmp_path):
    from hf_llm.training.ppo import AtomicPPOTrainer, PPOConfig

    torch.manual_seed(0)
    policy = GPTForCausalLM(tiny_gpt_config(tiny_tokenizer))
    reference = copy.deepcopy(policy)
    before = {name: p.detach().clone() for name, p in reference.named_parameters()}
    prompts = [[{"role": "user", "content": f"What does item {i} do?"}] for i in range(8)]
    ids = [tiny_tokenizer.apply_chat_template(p, add_generation_prompt=True) for p in prompts]
    data = Dataset.from_dict({"input_ids": [row["input_ids"] if hasattr(row, "keys") else row for row in ids]})
    config = PPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, total_episodes=8, num_ppo_epochs=2,
        response_length=6, learning_rate=1e-3, report_to="none", use_cpu=True, bf16=False, save_strategy="no",
        gradient_checkpointing=False, num_sample_generations=0, reward_model_path="unused", disable_tqdm=True,
    )  # fmt: skip
    trainer = AtomicPPOTrainer(
        args=config,
        processing_class=tiny_tokenizer,
        model=policy,
        ref_model=reference,
        reward_model=GPTForSequenceClassification(tiny_gpt_config(tiny_tokenizer, num_labels=1)),
        value_model=GPTForSequenceClassification(tiny_gpt_config(tiny_tokenizer, num_labels=1)),
        train_dataset=data,
        eval_dataset=data,
        data_collator=LeftPaddingCollator(tiny_tokenizer),
    )
    trainer.train()
    assert all(torch.equal(p, before[name]) for name, p in reference.named_parameters())
    assert any(not torch.equal(p, before[name]) for name, p in policy.named_parameters())


def test_ppo_prompts_are_padded_left_whatever_the_tokenizer_says(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.padding_side = "right"  # what a saved tokenizer usually says
    batch = LeftPaddingCollator(tokenizer)([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[5, 6, 7], [pad, pad, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_win_rate_of_a_policy_over_itself_is_one_half(tiny_sft_dir, tiny_reward_dir, tiny_preference_file):
    policy = AutoModelForCausalLM.from_pretrained(tiny_sft_dir)
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_sft_dir)
    rows = [json.loads(line) for line in open(tiny_preference_file)][:4]
    metrics, samples = compare_policies(policy, policy, reward_model, tokenizer, rows, max_new_tokens=6, batch_size=2)
    assert metrics["win_rate"] == 0.5 and metrics["num_ties"] == 4 and metrics["mean_reward_margin"] == 0
    assert metrics["mean_reward"] == metrics["reference_mean_reward"]
    assert [s["reward"] for s in samples] == [s["reference_reward"] for s in samples]


def test_eval_win_rate_task_and_reward_task_refuses_a_causal_lm(
    tiny_sft_dir, tiny_reward_dir, tiny_preference_file, tmp_path
):
    from hf_llm.errors import UsageError
    from hf_llm.evaluation.evaluate_model import main

    report = main(
        ["--model_name_or_path", tiny_sft_dir, "--task", "win_rate", "--reference_model_name_or_path", tiny_sft_dir,
         "--reward_model_path", tiny_reward_dir, "--dataset_name", "pydocs", "--split", "validation",
         "--max_eval_samples", "3", "--max_new_tokens", "4", "--output_dir", str(tmp_path / "wr"), "--device", "cpu"],
    )  # fmt: skip
    assert report["metrics"]["win_rate"] == 0.5 and report["metrics"]["num_prompts"] == 3
    with pytest.raises(UsageError, match="not a reward model"):
        main(
            ["--model_name_or_path", tiny_sft_dir, "--task", "reward", "--dataset_name", tiny_preference_file,
             "--split", "train", "--output_dir", str(tmp_path / "rw"), "--device", "cpu"],
        )  # fmt: skip


@pytest.mark.parametrize("task", ["pretrain", "sft", "win_rate"])
def test_eval_tasks_that_generate_or_score_text_refuse_a_reward_model(tiny_reward_dir, tmp_path, task):
    from hf_llm.errors import UsageError
    from hf_llm.evaluation.evaluate_model import main

    argv = ["--model_name_or_path", tiny_reward_dir, "--task", task, "--dataset_name", "pydocs", "--split",
            "validation", "--max_eval_samples", "2", "--output_dir", str(tmp_path / task),
            "--device", "cpu"]  # fmt: skip
    if task == "win_rate":
        argv += ["--reference_model_name_or_path", tiny_reward_dir, "--reward_model_path", tiny_reward_dir]
    with pytest.raises(
        UsageError, match=r"is a reward model \(.*one output\), not a language model; evaluate it with --task reward"
    ):
        main(argv)
    assert not (tmp_path / task / "metrics.json").exists()


def _monitor_warnings(caplog, logs: list[dict], **kwargs) -> list[str]:
    """The warnings `PPOMonitorCallback` gives for a sequence of PPO logs."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from hf_llm.training.alignment import PPOMonitorCallback

    monitor = PPOMonitorCallback(eos_token_id=0, **kwargs)
    state = TrainerState()
    with caplog.at_level("WARNING", logger="hf_llm"):
        for step, log in enumerate(logs, start=1):
            state.global_step = step
            monitor.on_log(TrainingArguments(output_dir="unused", report_to=[]), state, TrainerControl(), logs=log)
    return [record.getMessage() for record in caplog.records]


def test_ppo_monitor_warns_on_negative_kl_but_not_on_rounding_or_one_noisy_batch(caplog):
    # the first update (policy == reference) rounds to -7e-7; later one small batch dips below 0
    kls = [-7e-7, 0.3, 0.4, 0.2, -0.006, 0.5]
    assert _monitor_warnings(caplog, [{"objective/kl": k} for k in kls]) == []
    warnings = _monitor_warnings(caplog, [{"objective/kl": -0.044}])  # right padding: negative from the start
    assert len(warnings) == 1 and "objective/kl = -0.0440 < 0" in warnings[0]


def test_ppo_monitor_warns_once_when_kl_passes_the_alarm(caplog):
    warnings = _monitor_warnings(caplog, [{"objective/kl": k} for k in (0.2, 1.5, 2.0)], kl_alarm=1.0)
    assert len(warnings) == 1 and "step 2" in warnings[0] and "--kl_alarm 1.0" in warnings[0]


def test_ppo_monitor_reward_collapse_looks_at_a_moving_average_not_one_noisy_batch(caplog):
    noisy = [2.0, 1.0, 2.5, 0.9, 2.2, 1.1, 2.4, 1.0] * 3  # one batch 1.5 below the best, the average steady
    logs = [{"objective/kl": 0.1, "objective/scores": s} for s in noisy]
    assert _monitor_warnings(caplog, logs, reward_collapse_drop=1.0) == []
    collapsing = [2.0] * 8 + [-1.0] * 8
    warnings = _monitor_warnings(
        caplog, [{"objective/kl": 0.1, "objective/scores": s} for s in collapsing], reward_collapse_drop=1.0
    )
    assert len(warnings) == 1 and "reward collapse" in warnings[0] and "best (2.000)" in warnings[0]


def test_ppo_resume_is_refused_with_the_reason_before_any_work(run_alignment_script, tmp_path, capsys):
    output_dir = tmp_path / "ppo"
    (output_dir / "checkpoint-2").mkdir(parents=True)
    (output_dir / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    argv = ["--model_name_or_path", tmp_path / "missing-sft", "--reward_model_path", tmp_path / "missing-reward",
            "--dataset_name", "pydocs", "--output_dir", output_dir, "--resume_from_checkpoint", "latest",
            *PPO_ARGS]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run_alignment_script("ppo", argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    # The PPO reason, not a complaint about the (missing) models or the checkpoint's settings: nothing was loaded.
    assert "TRL's PPOTrainer cannot resume from a checkpoint" in err and "missing-sft" not in err


def test_a_reward_model_with_a_smaller_vocabulary_is_refused_naming_it(tiny_tokenizer):
    from hf_llm.errors import UsageError
    from hf_llm.training.alignment import check_models_read_the_policy_tokens

    small = GPTForSequenceClassification(
        tiny_gpt_config(tiny_tokenizer, vocab_size=len(tiny_tokenizer) - 5, num_labels=1)
    )
    fits = GPTForSequenceClassification(tiny_gpt_config(tiny_tokenizer, num_labels=1))
    check_models_read_the_policy_tokens(tiny_tokenizer, {"--value_model_path": fits})
    with pytest.raises(UsageError, match=rf"--reward_model_path: its vocabulary has {len(tiny_tokenizer) - 5} tokens"):
        check_models_read_the_policy_tokens(tiny_tokenizer, {"--reward_model_path": small})
