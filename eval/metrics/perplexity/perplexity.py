"""Perplexity of a causal LM as an offline `evaluate` module: `evaluate.load("eval/metrics/perplexity")`.

The model is given to `compute` as an object, a local path or a Hub id; a path or id is loaded once and reused by
later calls on the same module. The counting lives in `hf_llm.evaluation.compute_perplexity`, shared with
`hf-llm eval`.
Every import sits on its own line: `evaluate` scans this file line by line for the libraries it needs.
"""

import datasets
import evaluate
import transformers

import hf_llm.evaluation
import hf_llm.loading

_DESCRIPTION = """
Perplexity (PPL) is the exponentiated average negative log-likelihood a causal language model gives to the tokens
of a text:

    PPL = exp( sum_t -log p(x_t | x_<t) / N )

Here it is token-weighted over the whole corpus (`perplexity`: every token counts once, however the texts split
them), and also reported per text (`perplexities`) and as the mean of the per-text values (`mean_perplexity`).
Texts longer than the model's context are scored with a sliding window: each window moves `stride` tokens, and every
token is scored once with the `max_length - stride` previous tokens as context. Lower is better; a uniform guess over
a vocabulary of V tokens scores V.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): the texts to score.
    model (`str` or `PreTrainedModel`): a causal LM object, or a local `save_pretrained` directory or Hub repo id
        (a LoRA adapter directory works too); a path or id is loaded once and cached on this module.
    model_id (`str` or `PreTrainedModel`, *optional*): the same as `model`, under the name Hugging Face's own
        perplexity metric uses, so code written for it runs unchanged; pass one of the two.
    tokenizer (`PreTrainedTokenizerBase`, *optional*): needed when `model` is an object whose `name_or_path` has no
        tokenizer; loaded with the model otherwise.
    contexts (`list[str]`, *optional*): one conditioning text per prediction, put before it but not scored.
    batch_size (`int`, defaults to 8): windows per forward pass.
    max_length (`int`, *optional*): window length in tokens; defaults to the model's context length.
    stride (`int`, *optional*): how far the window moves; defaults to `max_length // 2`.
    add_start_token (`bool`, *optional*): prepend the BOS token so the first token is scored; defaults to `True`
        when the tokenizer has a BOS token.
    device (`str`, *optional*): where to load a model given by path; defaults to CUDA when available, else CPU.

Returns:
    `dict` with `perplexity` (corpus, token-weighted), `perplexities` (per text), `mean_perplexity`,
    `nll_sum` (nats) and `num_tokens` (tokens scored).

Examples:
    >>> import evaluate
    >>> perplexity = evaluate.load("eval/metrics/perplexity")
    >>> result = perplexity.compute(predictions=["Hello world."], model="outputs/pretrain")  # doctest: +SKIP
    >>> sorted(result)  # doctest: +SKIP
    ['mean_perplexity', 'nll_sum', 'num_tokens', 'perplexities', 'perplexity']
"""

_CITATION = """
@article{jelinek1977perplexity,
  title={Perplexity--a measure of the difficulty of speech recognition tasks},
  author={Jelinek, Fred and Mercer, Robert L and Bahl, Lalit R and Baker, James K},
  journal={The Journal of the Acoustical Society of America},
  volume={62},
  number={S1},
  pages={S63--S63},
  year={1977},
  publisher={Acoustical Society of America}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Perplexity(evaluate.Metric):
    """Token-weighted perplexity of a causal LM over a corpus, with a sliding window for long texts."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
            reference_urls=["https://huggingface.co/docs/transformers/perplexity"],
        )

    def _load_model(self, model, tokenizer, device):
        """The (model, tokenizer) pair for `model`; a path or id is loaded on first use and cached."""
        if not isinstance(model, str):
            if tokenizer is None:
                name = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
                if not name:
                    raise ValueError(
                        "perplexity got a model object without a tokenizer; pass `tokenizer=` to compute()."
                    )
                tokenizer = transformers.AutoTokenizer.from_pretrained(name)
            return model, tokenizer
        key = (model, str(device))
        if getattr(self, "_cached_key", None) != key:
            # One model at a time: a new path or id replaces the cached one.
            self._cached_model = hf_llm.loading.load_model_for_evaluation(model, task="pretrain", device=device)
            self._cached_key = key
        cached_model, cached_tokenizer = self._cached_model
        return cached_model, tokenizer or cached_tokenizer

    def _compute(
        self,
        predictions,
        model=None,
        model_id=None,
        tokenizer=None,
        contexts=None,
        batch_size=8,
        max_length=None,
        stride=None,
        add_start_token=None,
        device=None,
    ) -> dict:
        if model is not None and model_id is not None:
            raise ValueError("perplexity got both `model` and `model_id`; pass one of them (they mean the same).")
        model = model if model is not None else model_id
        if model is None:
            raise ValueError(
                "perplexity needs a model: compute(predictions=..., model=<PreTrainedModel, path or Hub id>) "
                "(or model_id=..., as in Hugging Face's perplexity metric)."
            )
        model, tokenizer = self._load_model(model, tokenizer, device)
        return hf_llm.evaluation.compute_perplexity(
            model,
            tokenizer,
            list(predictions),
            contexts=contexts,
            batch_size=batch_size,
            max_length=max_length,
            stride=stride,
            add_start_token=add_start_token,
        )
