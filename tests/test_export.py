"""`GPTForCausalLM.to_gpt2` and `hf-llm export --format gpt2`: a lossless GPT-2 checkpoint loadable without hf_llm."""

import textwrap

import pytest
import torch
from conftest import run_without_hf_llm, tiny_gpt_config
from transformers import GPT2LMHeadModel

from hf_llm import GPTConfig, GPTForCausalLM
from hf_llm.cli import main
from hf_llm.errors import UsageError
from hf_llm.export import export_gpt2


def trained_tiny_gpt(**overrides) -> GPTForCausalLM:
    """A tiny GPT with non-trivial weights (a few steps on random data), so equal logits mean something."""
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
        **overrides,
    )  # fmt: skip
    model = GPTForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.randint(0, 96, (4, 24))
    for _ in range(20):
        model(input_ids=data, labels=data).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.mark.parametrize("tie_word_embeddings", [True, False])
def test_to_gpt2_gives_equal_logits_and_greedy_tokens(tie_word_embeddings):
    model = trained_tiny_gpt(tie_word_embeddings=tie_word_embeddings)
    gpt2 = model.to_gpt2()
    assert type(gpt2) is GPT2LMHeadModel
    input_ids = torch.randint(0, 96, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(gpt2(input_ids).logits, model(input_ids).logits, atol=1e-5, rtol=0)
    greedy = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(gpt2.generate(input_ids, **greedy), model.generate(input_ids, **greedy))
    # and back again: from_gpt2(to_gpt2(model)) is the same model
    round_trip = GPTForCausalLM.from_gpt2(gpt2).eval()
    with torch.no_grad():
        assert torch.equal(round_trip(input_ids).logits, model(input_ids).logits)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"position_embedding_type": "rope"}, "position_embedding_type"), ({"bias": False}, "bias")],
)
def test_to_gpt2_refuses_what_gpt2_cannot_express_naming_the_field(overrides, field):
    model = GPTForCausalLM(
        GPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, **overrides)
    )
    with pytest.raises(ValueError, match=field):
        model.to_gpt2()


def test_export_command_writes_a_gpt2_checkpoint_that_loads_without_hf_llm(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config(tiny_tokenizer)).eval()
    source, exported = tmp_path / "model", tmp_path / "gpt2"
    model.save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    input_ids = tiny_tokenizer("def add(a, b):", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.save({"input_ids": input_ids, "logits": model(input_ids).logits}, tmp_path / "expected.pt")

    assert main(["export", str(source), "--format", "gpt2", "--output_dir", str(exported)]) == 0
    assert not (exported / "modeling_gpt.py").exists()
    script = textwrap.dedent(
        f"""
        import json, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
        config = json.load(open({str(exported / "config.json")!r}))
        assert config["model_type"] == "gpt2" and "auto_map" not in config, config
        model = AutoModelForCausalLM.from_pretrained({str(exported)!r}).eval()
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        with torch.no_grad():
            assert torch.allclose(model(expected["input_ids"]).logits, expected["logits"], atol=1e-5)
        tokenizer = AutoTokenizer.from_pretrained({str(exported)!r})
        assert tokenizer("def add(a, b):", return_tensors="pt").input_ids.tolist() == expected["input_ids"].tolist()
        generator = pipeline("text-generation", model={str(exported)!r})
        text = generator("def", max_new_tokens=4, do_sample=False)[0]["generated_text"]
        print("EXPORT_OK", type(model).__name__, text.startswith("def"))
        """
    )
    result = run_without_hf_llm(script, {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "EXPORT_OK GPT2LMHeadModel True" in result.stdout


def test_export_refuses_to_write_into_the_checkpoint_or_over_a_users_files(tmp_path, tiny_tokenizer):
    source = tmp_path / "model"
    GPTForCausalLM(tiny_gpt_config(tiny_tokenizer)).save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    before = sorted(p.name for p in source.iterdir())
    for inside in (source, source / "gpt2"):
        with pytest.raises(UsageError, match="the input MODEL"):
            export_gpt2(str(source), str(inside))
    assert sorted(p.name for p in source.iterdir()) == before

    users_dir = tmp_path / "mine"
    users_dir.mkdir()
    (users_dir / "config.json").write_text("my own file")
    with pytest.raises(UsageError, match="--overwrite_output_dir"):
        export_gpt2(str(source), str(users_dir))
    assert (users_dir / "config.json").read_text() == "my own file"
    export_gpt2(str(source), str(users_dir), overwrite_output_dir=True)
    assert "gpt2" in (users_dir / "config.json").read_text()
