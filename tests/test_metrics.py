"""The offline `evaluate` modules in eval/metrics equal independent computations, and refuse bad input clearly."""

import math
import os

import numpy as np
import pytest
import sacrebleu
import torch
from conftest import tiny_gpt_config

from hf_llm import GPTForCausalLM
from hf_llm.evaluation import compute_perplexity, load_metric, metric_path

PREDICTIONS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "hello there , general kenobi",
    "it was the best of times",
]
REFERENCES = [
    ["the cat is on the mat", "there is a cat on the mat"],
    ["the quick brown fox jumped over the lazy dog", "a fast brown fox leaps over a lazy dog"],
    ["hello there general kenobi", "hello , general kenobi"],
    ["it was the worst of times", "it was the best of times"],
]
TEXTS = [
    "def add(a, b):\n    return a + b",
    "The cat sat on the mat.",
    "x",
    "Perplexity is the exponentiated mean negative log-likelihood of the tokens of a text, over the corpus.",
]


def test_modules_load_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for name in ("accuracy", "bleu", "perplexity"):
        module = load_metric(name)
        assert module.name == name
        assert module.info.description.strip() and module.info.citation.strip()
        features = module.info.features
        assert all("predictions" in f for f in (features if isinstance(features, list) else [features]))


def test_metric_path_missing_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="--metrics_dir"):
        metric_path("bleu", metrics_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"available there: \['accuracy'"):
        metric_path("rouge")


# ---------------------------------------------------------------------------------------------------------------
# accuracy


def test_accuracy_equals_numpy():
    rng = np.random.default_rng(0)
    predictions, references = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    weights = rng.random(200)
    accuracy = load_metric("accuracy")
    expected = np.mean(predictions == references)
    result = accuracy.compute(predictions=predictions.tolist(), references=references.tolist())
    assert result["accuracy"] == pytest.approx(expected, rel=1e-12)
    assert 0.0 <= result["accuracy"] <= 1.0
    unnormalized = accuracy.compute(predictions=predictions.tolist(), references=references.tolist(), normalize=False)
    assert unnormalized["accuracy"] == (predictions == references).sum()
    weighted = accuracy.compute(
        predictions=predictions.tolist(), references=references.tolist(), sample_weight=weights.tolist()
    )
    expected_weighted = (weights * (predictions == references)).sum() / weights.sum()
    assert weighted["accuracy"] == pytest.approx(expected_weighted, rel=1e-12)


def test_accuracy_bad_input():
    accuracy = load_metric("accuracy")
    with pytest.raises(ValueError, match="Mismatch in the number of predictions"):
        accuracy.compute(predictions=[0, 1, 1], references=[0, 1])
    with pytest.raises(ValueError, match="empty"):
        accuracy.compute(predictions=[], references=[])
    with pytest.raises(ValueError, match="one weight per prediction"):
        accuracy.compute(predictions=[0, 1], references=[0, 1], sample_weight=[1.0])


# ---------------------------------------------------------------------------------------------------------------
# bleu


def test_bleu_single_reference_equals_sacrebleu():
    references = [refs[0] for refs in REFERENCES]
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [references])
    result = load_metric("bleu").compute(predictions=PREDICTIONS, references=references)
    assert result["bleu"] == pytest.approx(expected.score, rel=1e-12)
    assert result["precisions"] == pytest.approx(expected.precisions, rel=1e-12)
    assert result["brevity_penalty"] == pytest.approx(expected.bp, rel=1e-12)
    assert 0.0 < result["bleu"] < 100.0


def test_bleu_multiple_references_equals_sacrebleu():
    streams = [list(stream) for stream in zip(*REFERENCES, strict=True)]
    expected = sacrebleu.corpus_bleu(PREDICTIONS, streams)
    result = load_metric("bleu").compute(predictions=PREDICTIONS, references=REFERENCES)
    assert result["bleu"] == pytest.approx(expected.score, rel=1e-12)
    # More references can only help: the single-reference score is no higher.
    single = load_metric("bleu").compute(predictions=PREDICTIONS, references=[r[0] for r in REFERENCES])
    assert result["bleu"] > single["bleu"]


def test_bleu_variable_references_and_tokenize_option():
    references = [REFERENCES[0], REFERENCES[1][:1], REFERENCES[2], REFERENCES[3][:1]]
    streams = [[r[0] for r in references], [r[1] if len(r) > 1 else None for r in references]]
    bleu = load_metric("bleu")
    expected = sacrebleu.corpus_bleu(PREDICTIONS, streams)
    assert bleu.compute(predictions=PREDICTIONS, references=references)["bleu"] == pytest.approx(expected.score)
    char_expected = sacrebleu.corpus_bleu(PREDICTIONS, streams, tokenize="char")
    char_result = bleu.compute(predictions=PREDICTIONS, references=references, tokenize="char")
    assert char_result["bleu"] == pytest.approx(char_expected.score, rel=1e-12)
    assert char_result["bleu"] != pytest.approx(expected.score)
    assert "tok:char" in char_result["signature"]


def test_bleu_bad_input():
    bleu = load_metric("bleu")
    with pytest.raises(ValueError, match="Mismatch in the number of predictions"):
        bleu.compute(predictions=PREDICTIONS, references=REFERENCES[:2])
    with pytest.raises(ValueError, match="empty"):
        bleu.compute(predictions=[], references=[])
    with pytest.raises(ValueError, match="choose one of"):
        bleu.compute(predictions=PREDICTIONS, references=REFERENCES, tokenize="moses")


# ---------------------------------------------------------------------------------------------------------------
# perplexity


@pytest.fixture(scope="module")
def causal_lm(tiny_tokenizer):
    torch.manual_seed(0)
    config = tiny_gpt_config(tiny_tokenizer)
    # float64 so the comparison with the hand computation is limited by arithmetic, not by float32 rounding.
    return GPTForCausalLM(config).double().eval()


def _nll_by_hand(model, ids: list[int]) -> tuple[float, int]:
    """Summed NLL of tokens 1.. of `ids` from one full forward pass, as -sum log softmax(logits)[next token]."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]  # (T, V), float64
    # (The model's own `loss` would do, but transformers' loss upcasts to float32 only, losing the float64 digits.)
    log_probs = torch.log_softmax(logits[:-1], dim=-1)
    nll = -sum(log_probs[t, ids[t + 1]].item() for t in range(len(ids) - 1))
    return nll, len(ids) - 1


def test_perplexity_equals_exp_of_token_weighted_nll(causal_lm, tiny_tokenizer):
    tokenizer = tiny_tokenizer
    result = load_metric("perplexity").compute(predictions=TEXTS, model=causal_lm, tokenizer=tokenizer, batch_size=3)
    nlls, counts = [], []
    for text in TEXTS:
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) <= 128  # fits the context: no window involved
        nll, count = _nll_by_hand(causal_lm, ids)
        nlls.append(nll)
        counts.append(count)
    assert result["num_tokens"] == sum(counts)
    assert result["perplexity"] == pytest.approx(math.exp(sum(nlls) / sum(counts)), rel=1e-9)
    per_text = [math.exp(n / c) for n, c in zip(nlls, counts, strict=True)]
    assert result["perplexities"] == pytest.approx(per_text, rel=1e-9)
    assert result["mean_perplexity"] == pytest.approx(np.mean(per_text), rel=1e-9)
    # Token weighting differs from averaging per-text perplexities when texts differ in length.
    assert result["perplexity"] != pytest.approx(result["mean_perplexity"], rel=1e-3)


def test_perplexity_does_not_depend_on_batching(causal_lm, tiny_tokenizer):
    one = compute_perplexity(causal_lm, tiny_tokenizer, TEXTS, batch_size=1)
    many = compute_perplexity(causal_lm, tiny_tokenizer, TEXTS, batch_size=4)
    assert many["perplexities"] == pytest.approx(one["perplexities"], rel=1e-9)


def test_perplexity_sliding_window_equals_hand_loop(causal_lm, tiny_tokenizer):
    tokenizer = tiny_tokenizer
    text = TEXTS[3] + " " + TEXTS[0]
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    max_length, stride = 12, 5
    assert len(ids) > 3 * max_length
    # The textbook loop (transformers' perplexity guide): windows start every `stride` tokens; each scores only the
    # tokens the previous window did not reach.
    nll_sum, count, previous_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        window = torch.tensor([ids[begin:end]])
        labels = window.clone()
        labels[:, : max(previous_end - begin, 1)] = -100  # already scored (the first position never is)
        with torch.no_grad():
            logits = causal_lm(input_ids=window).logits[0, :-1]
        targets = labels[0, 1:]
        mask = targets != -100
        nll_sum += torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum").item()
        count += int(mask.sum())
        previous_end = end
        if end == len(ids):
            break
    assert count == len(ids) - 1  # every token but the first scored exactly once
    result = compute_perplexity(causal_lm, tokenizer, [text], max_length=max_length, stride=stride)
    assert result["num_tokens"] == count
    assert result["perplexity"] == pytest.approx(math.exp(nll_sum / count), rel=1e-9)
    # The window really is in play: a full-context score differs.
    assert compute_perplexity(causal_lm, tokenizer, [text])["perplexity"] != pytest.approx(result["perplexity"])


def test_perplexity_with_contexts_scores_only_the_text(causal_lm, tiny_tokenizer):
    tokenizer = tiny_tokenizer
    prompt, answer = "Question: what is two plus two?\nAnswer:", " four"
    result = compute_perplexity(causal_lm, tokenizer, [answer], contexts=[prompt], add_start_token=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([prompt_ids + answer_ids])
    labels = input_ids.clone()
    labels[:, : len(prompt_ids)] = -100
    with torch.no_grad():
        loss = causal_lm(input_ids=input_ids, labels=labels).loss.item()  # computed in float32
    assert result["num_tokens"] == len(answer_ids)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-6)


def test_perplexity_loads_a_path_once(causal_lm, tiny_tokenizer, tmp_path, monkeypatch):
    causal_lm.float().save_pretrained(tmp_path / "model")
    causal_lm.double()
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    import hf_llm.loading

    calls = []
    original = hf_llm.loading.load_model_for_evaluation
    monkeypatch.setattr(
        hf_llm.loading, "load_model_for_evaluation", lambda *a, **k: calls.append(a) or original(*a, **k)
    )
    perplexity = load_metric("perplexity")
    by_path = perplexity.compute(predictions=TEXTS, model=str(tmp_path / "model"))
    again = perplexity.compute(predictions=TEXTS[:2], model=str(tmp_path / "model"))
    assert len(calls) == 1  # the second call reused the loaded model
    by_object = compute_perplexity(causal_lm, tiny_tokenizer, TEXTS)
    assert by_path["perplexity"] == pytest.approx(by_object["perplexity"], rel=1e-5)  # saved in float32
    assert again["perplexities"] == pytest.approx(by_path["perplexities"][:2], rel=1e-5)  # float32, other padding
    # `model_id=`, the name Hugging Face's perplexity metric uses, means the same (and reuses the loaded model).
    by_model_id = perplexity.compute(predictions=TEXTS, model_id=str(tmp_path / "model"))
    assert by_model_id["perplexity"] == by_path["perplexity"] and len(calls) == 1


def test_perplexity_bad_input(causal_lm, tiny_tokenizer, tmp_path):
    perplexity = load_metric("perplexity")
    with pytest.raises(FileNotFoundError, match="no_such_model: no such directory"):
        perplexity.compute(predictions=TEXTS, model=str(tmp_path / "no_such_model"))
    with pytest.raises(ValueError, match="needs a model"):
        perplexity.compute(predictions=TEXTS)
    with pytest.raises(ValueError, match="both `model` and `model_id`"):
        perplexity.compute(predictions=TEXTS, model=causal_lm, model_id=str(tmp_path), tokenizer=tiny_tokenizer)
    with pytest.raises(ValueError, match="no texts"):
        compute_perplexity(causal_lm, tiny_tokenizer, [])
    with pytest.raises(ValueError, match="no token to score"):
        compute_perplexity(causal_lm, tiny_tokenizer, ["ok", ""], add_start_token=False)
    with pytest.raises(ValueError, match="one per text"):
        compute_perplexity(causal_lm, tiny_tokenizer, TEXTS, contexts=["a"])
    with pytest.raises(ValueError, match="stride < max_length"):
        compute_perplexity(causal_lm, tiny_tokenizer, TEXTS, max_length=8, stride=8)
