"""`GPTForCausalLM.to_gpt2` and `hf-llm export --format gpt2`: a lossless GPT-2 checkpoint loadable without hf_llm."""

import textwrap

import pytest
import torch
from conftest import run_without_hf_llm, tiny_gpt_config
from transformers import GPT2LMHeadModel

from hf_llm import GPTConfig, GPTForCausalLM
from hf_llm.cli import main
from hf_llm.errors import UsageError
from hf_llm.export import export_gguf, export_gpt2


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


# ---- GGUF ----
def _gguf_forward(path, input_ids):
    """GPT-2's forward pass in numpy from a GGUF file's f32 tensors, as llama.cpp's gpt2 graph computes it."""
    import numpy as np
    from gguf import GGUFReader

    reader = GGUFReader(path)
    weights = {tensor.name: np.array(tensor.data, dtype=np.float32).reshape(tuple(reversed(tensor.shape.tolist())))
               for tensor in reader.tensors}  # fmt: skip
    field = reader.fields
    heads = int(field["gpt2.attention.head_count"].parts[-1][0])
    eps = float(field["gpt2.attention.layer_norm_epsilon"].parts[-1][0])
    layers = int(field["gpt2.block_count"].parts[-1][0])

    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * weights[f"{name}.weight"] + weights[f"{name}.bias"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    T = len(input_ids)
    x = weights["token_embd.weight"][input_ids] + weights["position_embd.weight"][:T]
    for i in range(layers):
        h = norm(x, f"blk.{i}.attn_norm")
        qkv = h @ weights[f"blk.{i}.attn_qkv.weight"].T + weights[f"blk.{i}.attn_qkv.bias"]
        q, k, v = (part.reshape(T, heads, -1).transpose(1, 0, 2) for part in np.split(qkv, 3, axis=-1))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1]) + np.triu(np.full((T, T), -np.inf), 1)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        attention = (probs / probs.sum(-1, keepdims=True)) @ v
        x = x + attention.transpose(1, 0, 2).reshape(T, -1) @ weights[f"blk.{i}.attn_output.weight"].T
        x = x + weights[f"blk.{i}.attn_output.bias"]
        h = gelu(norm(x, f"blk.{i}.ffn_norm") @ weights[f"blk.{i}.ffn_up.weight"].T + weights[f"blk.{i}.ffn_up.bias"])
        x = x + h @ weights[f"blk.{i}.ffn_down.weight"].T + weights[f"blk.{i}.ffn_down.bias"]
    head = weights.get("output.weight", weights["token_embd.weight"])  # tied: llama.cpp reuses the embedding
    return norm(x, "output_norm") @ head.T, reader


@pytest.fixture
def saved_gpt(tmp_path, tiny_tokenizer):
    source = tmp_path / "model"
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=len(tiny_tokenizer)
        + 11,  # an embedding table larger than the vocabulary, as padded vocabularies are
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    model = GPTForCausalLM(config).eval()
    model.save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    return model, source


def test_gguf_export_is_llama_cpps_gpt2_layout_with_equal_logits_and_the_tokenizer(
    saved_gpt, tiny_tokenizer, tmp_path
):
    import numpy as np

    model, source = saved_gpt
    assert main(["export", str(source), "--format", "gguf", "--output_dir", str(tmp_path / "gguf")]) == 0
    path = tmp_path / "gguf" / "model-f32.gguf"
    input_ids = tiny_tokenizer("def add(a, b):\n    return a + b").input_ids
    logits, reader = _gguf_forward(str(path), input_ids)
    with torch.no_grad():
        expected = model(torch.tensor([input_ids])).logits[0].numpy()
    np.testing.assert_allclose(logits, expected, atol=2e-5, rtol=0)
    fields = reader.fields
    tokens = [bytes(fields["tokenizer.ggml.tokens"].parts[i]).decode() for i in fields["tokenizer.ggml.tokens"].data]
    assert len(tokens) == model.config.vocab_size  # padded to the embedding table
    assert tokens[: len(tiny_tokenizer)] == tiny_tokenizer.convert_ids_to_tokens(list(range(len(tiny_tokenizer))))
    assert bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() == "gpt2"
    assert int(fields["tokenizer.ggml.eos_token_id"].parts[-1][0]) == tiny_tokenizer.eos_token_id
    assert "output.weight" not in {tensor.name for tensor in reader.tensors}  # tied


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_gguf_quantized_exports_store_matrices_in_their_type(saved_gpt, tmp_path, outtype):
    from gguf import GGMLQuantizationType, GGUFReader

    _, source = saved_gpt
    path = export_gguf(str(source), str(tmp_path / outtype), outtype=outtype)
    types = {tensor.name: tensor.tensor_type for tensor in GGUFReader(path).tensors}
    assert types["blk.0.attn_qkv.weight"] == GGMLQuantizationType[outtype.upper()]
    assert types["blk.0.attn_qkv.bias"] == GGMLQuantizationType.F32  # 1-D tensors stay f32
    assert types["position_embd.weight"] == GGMLQuantizationType.F32


def test_llama_cpp_generates_our_greedy_tokens_from_the_gguf(saved_gpt, tiny_tokenizer, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: make install LLAMA_CPP=1")
    model, source = saved_gpt
    path = export_gguf(str(source), str(tmp_path / "gguf"))
    llm = llama_cpp.Llama(model_path=path, n_ctx=64, logits_all=False, verbose=False, n_threads=1)
    prompt = "def add(a, b):"
    ids = tiny_tokenizer(prompt).input_ids
    assert llm.tokenize(prompt.encode(), add_bos=False, special=False) == ids
    ours = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids) :].tolist()
    theirs = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        theirs.append(token)
        if len(theirs) == len(ours) or token == tiny_tokenizer.eos_token_id:
            break
    assert theirs == ours[: len(theirs)] and len(theirs) == len(ours)
