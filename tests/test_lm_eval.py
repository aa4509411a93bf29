"""EleutherAI's lm-evaluation-harness runs hf_llm checkpoints through its `hf` backend, offline, on a local task."""

import json
import logging

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")


@pytest.fixture
def local_task(tmp_path):
    rows = [
        {"question": "def add(a, b):", "choices": [" return a + b", " pass"], "label": 0},
        {"question": "class Point:", "choices": [" x: int = 0", " import os"], "label": 0},
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_choice.yaml").write_text(
        "task: tiny_choice\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return tmp_path / "tasks"


@pytest.mark.slow  # lm-eval's imports and task loading: ~20 s alone, a minute on 2 busy cores
def test_lm_eval_hf_backend_scores_our_checkpoint_as_a_causal_lm(
    tmp_path, tiny_tokenizer, local_task, caplog, monkeypatch
):
    from conftest import tiny_gpt_config
    from lm_eval.tasks import TaskManager

    from hf_llm import GPTForCausalLM

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config(tiny_tokenizer)).eval()
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")

    with caplog.at_level(logging.WARNING):
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={tmp_path / 'model'},device=cpu",
            tasks=["tiny_choice"],
            task_manager=TaskManager(include_path=str(local_task)),
            log_samples=True,
            batch_size=1,
        )
    assert "neither marked as CausalLM" not in caplog.text  # our model type is registered as a causal LM
    assert 0 <= results["results"]["tiny_choice"]["acc,none"] <= 1

    # One loglikelihood, recomputed by hand: the sum of log-softmax of the continuation's tokens given the context.
    sample = results["samples"]["tiny_choice"][0]
    (context, continuation), ((loglikelihood, _),) = sample["arguments"][0], sample["resps"][0]
    context_ids = tiny_tokenizer(context).input_ids
    ids = tiny_tokenizer(context + continuation).input_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    manual = sum(logprobs[t - 1, ids[t]].item() for t in range(len(context_ids), len(ids)))
    assert loglikelihood == pytest.approx(manual, abs=1e-4)
