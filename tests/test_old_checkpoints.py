"""Checkpoints saved by earlier hf_llm releases keep loading and generating the same tokens.

`tests/fixtures/gpt_checkpoint_v0_1_0.tar.gz` is a checkpoint directory saved by hf_llm 0.1.0 on transformers 5.23,
when the model took its KV cache as `past_key_values`, kept byte for byte as the archive a user would download (its
shipped code is a frozen artifact, not source to maintain); its `expected_generation.json` holds the greedy tokens it
generated then (cached, uncached and left-padded batched agreed). Transformers 5.24 renamed the argument to `cache`, so
the `modeling_gpt.py` shipped inside that checkpoint no longer decodes correctly: hf_llm's own classes must stand in
for it.
"""

import json
import logging
import shutil
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import run_without_hf_llm
from transformers import AutoModelForCausalLM

import hf_llm
from hf_llm.loading import from_pretrained, shipped_code_predates_cache_rename

ARCHIVE = Path(__file__).parent / "fixtures" / "gpt_checkpoint_v0_1_0.tar.gz"
with tarfile.open(ARCHIVE) as archive:
    EXPECTED = json.load(archive.extractfile("gpt_checkpoint_v0_1_0/expected_generation.json"))


@pytest.fixture(scope="module")
def old_checkpoint(tmp_path_factory) -> Path:
    """The 0.1.0 checkpoint directory, unpacked once for this module."""
    directory = tmp_path_factory.mktemp("old_checkpoint")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(directory, filter="data")
    return directory / "gpt_checkpoint_v0_1_0"


def greedy_new_tokens(model, *, batched: bool, use_cache: bool = True) -> list[list[int]]:
    """The recorded prompts' greedy continuations, one prompt at a time or as one left-padded batch."""
    prompts, max_new_tokens = EXPECTED["prompts"], EXPECTED["max_new_tokens"]
    pad = model.config.pad_token_id
    if not batched:
        return [
            model.generate(
                torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False, use_cache=use_cache
            )[0, len(prompt) :].tolist()
            for prompt in prompts
        ]
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.tensor([[pad] * (width - len(prompt)) + prompt for prompt in prompts])
    attention_mask = (input_ids != pad).long()
    output = model.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens, do_sample=False, use_cache=use_cache
    )
    return output[:, width:].tolist()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_checkpoint_from_0_1_0_generates_its_recorded_tokens_with_hf_llm(old_checkpoint, attn_implementation):
    model = AutoModelForCausalLM.from_pretrained(old_checkpoint, attn_implementation=attn_implementation).eval()
    assert isinstance(model, hf_llm.GPTForCausalLM)
    assert greedy_new_tokens(model, batched=False) == EXPECTED["greedy_new_tokens"]
    assert greedy_new_tokens(model, batched=True) == EXPECTED["greedy_new_tokens"]
    assert greedy_new_tokens(model, batched=True, use_cache=False) == EXPECTED["greedy_new_tokens"]


def test_stale_shipped_code_is_detected_and_replaced_with_a_one_line_warning(old_checkpoint, caplog):
    assert shipped_code_predates_cache_rename(str(old_checkpoint))
    with caplog.at_level(logging.WARNING, logger="hf_llm"):
        model = from_pretrained(AutoModelForCausalLM, str(old_checkpoint), trust_remote_code=True).eval()
    warnings = [record.getMessage() for record in caplog.records if "modeling_gpt.py" in record.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert (
        "transformers < 5.24" in warnings[0]
        and "save_pretrained" in warnings[0]
        and "transformers<5.24" in warnings[0]
    )
    assert type(model) is hf_llm.GPTForCausalLM  # not the checkpoint's own (stale) class
    assert greedy_new_tokens(model, batched=True) == EXPECTED["greedy_new_tokens"]


def test_resaved_checkpoint_generates_recorded_tokens_by_remote_code_without_hf_llm(old_checkpoint, tmp_path):
    checkpoint = tmp_path / "resaved"
    AutoModelForCausalLM.from_pretrained(old_checkpoint).save_pretrained(checkpoint)
    assert not shipped_code_predates_cache_rename(str(checkpoint))
    shutil.copy(old_checkpoint / "expected_generation.json", checkpoint)
    script = textwrap.dedent(
        f"""
        import json, torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        assert "hf_llm" not in type(model).__module__, type(model).__module__
        expected = json.load(open({str(checkpoint / "expected_generation.json")!r}))
        prompts, pad = expected["prompts"], model.config.pad_token_id
        single = [
            model.generate(torch.tensor([p]), max_new_tokens=expected["max_new_tokens"], do_sample=False)[0, len(p):]
            .tolist()
            for p in prompts
        ]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        batched = model.generate(
            ids, attention_mask=(ids != pad).long(), max_new_tokens=expected["max_new_tokens"], do_sample=False
        )[:, width:].tolist()
        assert single == batched == expected["greedy_new_tokens"], (single, batched)
        print("REMOTE_GENERATE_OK")
        """
    )
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = run_without_hf_llm(script, env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_GENERATE_OK" in result.stdout
