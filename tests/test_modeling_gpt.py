"""The GPT family behaves like a built-in transformers architecture (DESIGN §4)."""

import textwrap

import pytest
import torch
from conftest import run_without_hf_llm
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    pipeline,
)

from hf_llm import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel

VOCAB = 96
PAD, EOS = 0, 1


def tiny_config(**overrides) -> GPTConfig:
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=EOS,
    )
    values.update(overrides)
    return GPTConfig(**values)


def random_ids(batch: int, length: int, seed: int = 0) -> torch.LongTensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, length), generator=generator)


@pytest.fixture(params=["learned", "rope"])
def causal_lm(request) -> GPTForCausalLM:
    torch.manual_seed(0)
    return GPTForCausalLM(tiny_config(position_embedding_type=request.param)).eval()


# Configuration


def test_config_defaults_are_gpt2_small():
    config = GPTConfig()
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        50257,
        768,
        12,
        12,
    )
    assert config.intermediate_size == 3072 and config.max_position_embeddings == 1024
    with torch.device("meta"):
        model = GPTForCausalLM(config)
    assert 124_000_000 < model.num_parameters() < 125_000_000


def test_config_accepts_gpt2_names():
    config = GPTConfig(n_embd=64, n_layer=3, n_head=8, n_positions=128, n_inner=100)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 3, 8)
    assert (config.max_position_embeddings, config.intermediate_size) == (128, 100)
    assert config.n_embd == 64


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "hidden_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"vocab_size": -5}, "vocab_size"),
        ({"max_position_embeddings": 0}, "max_position_embeddings"),
        ({"position_embedding_type": "alibi"}, "position_embedding_type"),
        ({"attention_dropout": 1.5}, "attention_dropout"),
    ],
)
def test_config_rejects_invalid_values_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


# Forward pass


def test_output_shapes():
    torch.manual_seed(0)
    config = tiny_config(num_labels=3)
    input_ids = random_ids(2, 7)
    assert GPTModel(config)(input_ids).last_hidden_state.shape == (2, 7, 32)
    assert GPTForCausalLM(config)(input_ids).logits.shape == (2, 7, VOCAB)
    assert GPTForSequenceClassification(config)(input_ids).logits.shape == (2, 3)
    hidden = GPTModel(config)(input_ids, output_hidden_states=True).hidden_states
    assert len(hidden) == config.num_hidden_layers + 1


def test_loss_ignores_minus_100(causal_lm):
    input_ids = random_ids(2, 9)
    labels = input_ids.clone()
    labels[:, :4] = -100
    logits = causal_lm(input_ids).logits
    # Next-token targets: position t predicts labels[t + 1]; only unmasked targets count.
    shifted_logits, shifted_labels = logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1)
    keep = shifted_labels != -100
    expected = torch.nn.functional.cross_entropy(shifted_logits[keep], shifted_labels[keep])
    assert torch.allclose(causal_lm(input_ids, labels=labels).loss, expected, atol=1e-6)


def test_loss_normalises_by_num_items_in_batch(causal_lm):
    input_ids = random_ids(2, 9)
    mean_loss = causal_lm(input_ids, labels=input_ids).loss
    tokens = input_ids[:, 1:].numel()
    summed_over_double = causal_lm(input_ids, labels=input_ids, num_items_in_batch=2 * tokens).loss
    assert torch.allclose(summed_over_double, mean_loss / 2, atol=1e-6)


def test_logits_to_keep(causal_lm):
    input_ids = random_ids(2, 9)
    full = causal_lm(input_ids).logits
    assert torch.allclose(causal_lm(input_ids, logits_to_keep=1).logits, full[:, -1:], atol=1e-6)


def test_eager_equals_sdpa(causal_lm):
    input_ids = random_ids(3, 12)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :4] = 0  # left padding exercises the masked path too
    causal_lm.set_attn_implementation("eager")
    eager = causal_lm(input_ids, attention_mask=attention_mask).logits
    causal_lm.set_attn_implementation("sdpa")
    sdpa = causal_lm(input_ids, attention_mask=attention_mask).logits
    assert causal_lm.config._attn_implementation == "sdpa"
    assert torch.allclose(eager[attention_mask.bool()], sdpa[attention_mask.bool()], atol=1e-5)


def test_attn_implementation_chosen_at_load(tmp_path):
    GPTForCausalLM(tiny_config()).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_packed_batch_equals_documents_run_separately(causal_lm, mode):
    first, second = random_ids(1, 5, seed=1), random_ids(1, 7, seed=2)
    packed = torch.cat([first, second], dim=1)
    position_ids = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0)
    # In eval mode the forward makes a KV cache by default; packing must not leak across documents either way.
    causal_lm.train(mode == "train")
    with torch.no_grad():
        packed_logits = causal_lm(packed, position_ids=position_ids).logits
        separate = torch.cat([causal_lm(first).logits, causal_lm(second).logits], dim=1)
    assert torch.allclose(packed_logits, separate, atol=1e-5)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_config()).train()
    input_ids = random_ids(2, 10)

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(input_ids, labels=input_ids).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    checkpointed = gradients()
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-6), name


def test_tied_embeddings():
    tied = GPTForCausalLM(tiny_config())
    assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()
    untied = GPTForCausalLM(tiny_config(tie_word_embeddings=False))
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()


def test_gpt2_initialisation_scales_residual_projections():
    torch.manual_seed(0)
    config = tiny_config(hidden_size=256, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=4)
    model = GPTForCausalLM(config)
    residual_std = 0.02 / (2 * 8) ** 0.5
    assert abs(model.model.layers[0].self_attn.q_proj.weight.std().item() - 0.02) < 2e-3
    assert abs(model.model.layers[0].self_attn.o_proj.weight.std().item() - residual_std) < 1e-3
    assert abs(model.model.layers[0].mlp.down_proj.weight.std().item() - residual_std) < 1e-3
    assert torch.count_nonzero(model.model.layers[0].self_attn.q_proj.bias) == 0


def test_token_id_beyond_vocab_raises_clear_error(causal_lm):
    input_ids = random_ids(1, 5)
    input_ids[0, 2] = VOCAB + 3
    with pytest.raises(ValueError, match=rf"token id {VOCAB + 3}.*vocab_size={VOCAB}"):
        causal_lm(input_ids)


def test_sequence_longer_than_position_table_raises_clear_error():
    model = GPTForCausalLM(tiny_config())
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(random_ids(1, 65))


# Generation


def test_cached_greedy_generation_equals_uncached(causal_lm):
    input_ids = random_ids(2, 6)
    cached = causal_lm.generate(input_ids, max_new_tokens=12, do_sample=False, use_cache=True)
    uncached = causal_lm.generate(input_ids, max_new_tokens=12, do_sample=False, use_cache=False)
    assert cached.shape == (2, 18)
    assert torch.equal(cached, uncached)


def test_left_padded_batch_generation_equals_one_by_one(causal_lm):
    prompts = [random_ids(1, 3, seed=3)[0], random_ids(1, 8, seed=4)[0]]
    width = max(len(p) for p in prompts)
    batch = torch.full((2, width), PAD)
    attention_mask = torch.zeros((2, width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        batch[row, width - len(prompt) :] = prompt
        attention_mask[row, width - len(prompt) :] = 1
    batched = causal_lm.generate(
        batch, attention_mask=attention_mask, max_new_tokens=8, do_sample=False, pad_token_id=PAD
    )
    for row, prompt in enumerate(prompts):
        single = causal_lm.generate(prompt[None], max_new_tokens=8, do_sample=False, pad_token_id=PAD)
        assert torch.equal(batched[row, width:], single[0, len(prompt) :])


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|pad|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(["hello world, the model speaks"] * 4, trainer)
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|pad|>", eos_token="<|endoftext|>")


def test_text_generation_pipeline_runs():
    tokenizer = _tiny_tokenizer()
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_config(vocab_size=len(tokenizer)))
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    output = generator("hello", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    expected_ids = model.generate(tokenizer("hello", return_tensors="pt").input_ids, max_new_tokens=5, do_sample=False)
    assert output == tokenizer.decode(expected_ids[0], skip_special_tokens=True)
    assert output.startswith("hello")


# Saving, loading, remote code


def test_save_load_round_trip_through_every_auto_class(tmp_path):
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    input_ids = random_ids(2, 6)

    assert isinstance(AutoConfig.from_pretrained(tmp_path), GPTConfig)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, GPTForCausalLM)
    assert torch.allclose(reloaded(input_ids).logits, model(input_ids).logits, atol=1e-6)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(base, GPTModel)
    assert torch.allclose(base(input_ids).last_hidden_state, model.model(input_ids).last_hidden_state, atol=1e-6)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=1)
    assert isinstance(classifier, GPTForSequenceClassification)
    assert torch.equal(classifier.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert (tmp_path / "modeling_gpt.py").exists() and (tmp_path / "configuration_gpt.py").exists()
    auto_map = AutoConfig.from_pretrained(tmp_path).auto_map
    assert {"AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"} <= set(auto_map)


def test_remote_code_load_where_hf_llm_cannot_be_imported(tmp_path):
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_config()).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    input_ids = random_ids(1, 6)
    torch.save({"input_ids": input_ids, "logits": model(input_ids).logits}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        assert "hf_llm" not in type(model).__module__, type(model).__module__
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert torch.allclose(model(expected["input_ids"]).logits, expected["logits"], atol=1e-6)
        print("REMOTE_OK", type(model).__name__)
        """
    )
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = run_without_hf_llm(script, env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK GPTForCausalLM" in result.stdout


def test_from_gpt2_matches_source_logits(tmp_path):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    input_ids = random_ids(2, 10)
    expected = gpt2(input_ids).logits
    converted = GPTForCausalLM.from_gpt2(gpt2).eval()
    assert torch.allclose(converted(input_ids).logits, expected, atol=1e-4)
    gpt2.save_pretrained(tmp_path)
    from_path = GPTForCausalLM.from_gpt2(str(tmp_path)).eval()
    assert torch.allclose(from_path(input_ids).logits, expected, atol=1e-4)


# Sequence classification, reward models, TRL


def test_classifier_pools_last_non_pad_token_for_left_and_right_padding():
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_config(num_labels=2)).eval()
    tokens = random_ids(1, 5)[0]
    alone = model(tokens[None]).logits
    right = torch.cat([tokens, torch.full((3,), PAD)])[None]
    left = torch.cat([torch.full((3,), PAD), tokens])[None]
    assert torch.allclose(model(right, attention_mask=(right != PAD).long()).logits, alone, atol=1e-5)
    assert torch.allclose(model(left, attention_mask=(left != PAD).long()).logits, alone, atol=1e-5)


def test_trl_style_reward_call_equals_classifier_forward():
    torch.manual_seed(0)
    reward_model = GPTForSequenceClassification(tiny_config(num_labels=1)).eval()
    input_ids = random_ids(2, 8)
    input_ids[0, 6:] = PAD
    attention_mask = (input_ids != PAD).long()
    # What trl's get_reward does: backbone via base_model_prefix, then .score on the last hidden state.
    backbone = getattr(reward_model, reward_model.base_model_prefix)
    position_ids = attention_mask.cumsum(1) - attention_mask.long()
    output = backbone(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        return_dict=True,
        output_hidden_states=True,
        use_cache=False,
    )
    reward_logits = reward_model.score(output.hidden_states[-1])  # (B, T, 1)
    last_token = torch.tensor([5, 7])
    trl_rewards = reward_logits[torch.arange(2), last_token].squeeze(-1)
    own = reward_model(input_ids, attention_mask=attention_mask).logits.squeeze(-1)
    assert torch.allclose(trl_rewards, own, atol=1e-6)


# PEFT and bitsandbytes


@pytest.mark.parametrize("target_modules", ["all-linear", ["q_proj", "k_proj", "v_proj", "o_proj"]])
def test_lora_on_causal_lm(target_modules):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(
        GPTForCausalLM(tiny_config()), LoraConfig(r=4, target_modules=target_modules, task_type="CAUSAL_LM")
    )
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    if target_modules == "all-linear":
        assert any("up_proj.lora_A" in name for name in trainable)
        assert not any("lm_head" in name for name in trainable)
    input_ids = random_ids(2, 8)
    model(input_ids, labels=input_ids).loss.backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if name in trainable)


def test_lora_on_classifier_trains_score_head(tmp_path):
    from peft import AutoPeftModelForSequenceClassification, LoraConfig, get_peft_model

    torch.manual_seed(0)
    # A saved base, as in real use: the adapter records base_model_name_or_path to reload it from.
    GPTForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path / "base")
    base = GPTForSequenceClassification.from_pretrained(tmp_path / "base")
    model = get_peft_model(
        base, LoraConfig(r=4, target_modules="all-linear", modules_to_save=["score"], task_type="SEQ_CLS")
    )
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("score" in name for name in trainable)
    input_ids = random_ids(2, 8)
    with torch.no_grad():
        next(p for name, p in model.named_parameters() if "modules_to_save" in name and "score" in name).add_(0.5)
    expected = model(input_ids).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "adapter").eval()
    model.eval()
    assert torch.allclose(reloaded(input_ids).logits, model(input_ids).logits, atol=1e-5)
    assert torch.allclose(expected, model(input_ids).logits, atol=1e-5)


@pytest.mark.parametrize("bits", [4, 8])
def test_bitsandbytes_quantized_load_and_lora_backward(tmp_path, bits):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    torch.manual_seed(0)
    GPTForCausalLM(tiny_config(hidden_size=64, intermediate_size=128)).save_pretrained(tmp_path)
    if bits == 4:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
    else:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=quantization)
    import bitsandbytes as bnb

    quantized_type = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    assert isinstance(model.model.layers[0].self_attn.q_proj, quantized_type)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    input_ids = random_ids(2, 8)
    loss = model(input_ids, labels=input_ids).loss
    loss.backward()
    lora_grads = [p.grad for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_grads and all(g is not None and torch.isfinite(g).all() for g in lora_grads)
    assert torch.isfinite(loss)


# Trainer


def test_one_trainer_step_changes_every_trainable_parameter(tmp_path):
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_config())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    samples = [{"input_ids": ids, "labels": ids} for ids in random_ids(8, 12)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-2,
        warmup_steps=0,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
    )
    Trainer(model=model, args=args, train_dataset=samples).train()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p.detach(), before[name])]
    assert unchanged == []


def test_model_type_is_listed_as_causal_lm_for_tools_that_check_by_name():
    # lm-evaluation-harness's HF backend decides causal vs seq2seq by this table, and warns when the type is absent.
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    assert MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[GPTConfig.model_type] == "GPTForCausalLM"
