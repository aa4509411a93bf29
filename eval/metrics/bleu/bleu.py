"""Corpus BLEU (sacrebleu) as an offline `evaluate` module: `evaluate.load("eval/metrics/bleu")`.

Self-contained (sacrebleu only) so it loads with `HF_HUB_OFFLINE=1` and can be pushed to a Hub Space as is.
Every import sits on its own line: `evaluate` scans this file line by line for the libraries it needs.
"""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = """
BLEU (Papineni et al., 2002) scores generated text against one or more references by the geometric mean of
modified n-gram precisions (n = 1..4) times a brevity penalty. This module computes *corpus* BLEU with sacrebleu
(Post, 2018), so scores are comparable with published sacrebleu numbers: `bleu` is on sacrebleu's 0-100 scale.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): generated texts, one per example.
    references (`list[str]` or `list[list[str]]`): one reference per prediction, or a list of references per
        prediction (the number may vary from one prediction to the next).
    tokenize (`str`, defaults to `"13a"`): sacrebleu tokenizer, one of `sacrebleu.BLEU.TOKENIZERS`
        (`"none"`, `"13a"`, `"intl"`, `"char"`, `"zh"`, ...).
    lowercase (`bool`, defaults to `False`): compare lowercased text.
    smooth_method (`str`, defaults to `"exp"`): `"none"`, `"floor"`, `"add-k"` or `"exp"`.
    smooth_value (`float`, *optional*): value for the `"floor"` and `"add-k"` smoothing methods.
    use_effective_order (`bool`, defaults to `False`): ignore n-gram orders with no matches (for sentence BLEU).

Returns:
    `dict` with
    - `bleu` (`float`): corpus BLEU, 0-100.
    - `precisions` (`list[float]`): modified 1- to 4-gram precisions, 0-100.
    - `brevity_penalty` (`float`), `length_ratio` (`float`), `translation_length` (`int`),
      `reference_length` (`int`), `counts` and `totals` (`list[int]`): matched and total n-grams.
    - `signature` (`str`): the sacrebleu signature that makes the score reproducible.

Examples:
    >>> import evaluate
    >>> bleu = evaluate.load("eval/metrics/bleu")
    >>> result = bleu.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])
    >>> round(result["bleu"], 1)
    100.0
"""

_CITATION = """
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics",
    year = "2002",
    pages = "311--318",
    url = "https://aclanthology.org/P02-1040",
}
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
    url = "https://aclanthology.org/W18-6319",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    """Corpus BLEU through sacrebleu, with one or several references per prediction."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Two accepted input formats: several references per prediction, or exactly one.
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/P02-1040", "https://aclanthology.org/W18-6319"],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str] | list[list[str]],
        tokenize: str = sacrebleu.BLEU.TOKENIZER_DEFAULT,
        lowercase: bool = False,
        smooth_method: str = "exp",
        smooth_value: float | None = None,
        use_effective_order: bool = False,
    ) -> dict:
        if len(predictions) == 0:
            raise ValueError("bleu got empty `predictions` and `references`; pass at least one pair to score.")
        if tokenize not in sacrebleu.BLEU.TOKENIZERS:
            raise ValueError(f"bleu got tokenize={tokenize!r}; choose one of {sorted(sacrebleu.BLEU.TOKENIZERS)}.")
        references = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
        empty = [i for i, refs in enumerate(references) if len(refs) == 0]
        if empty:
            raise ValueError(
                f"bleu got no reference for predictions at positions {empty[:10]}; give each one at least one."
            )
        # sacrebleu wants reference *streams*: stream j holds the j-th reference of every prediction, with None
        # where a prediction has fewer references.
        num_streams = max(len(refs) for refs in references)
        streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(num_streams)]
        score = sacrebleu.BLEU(
            lowercase=lowercase,
            tokenize=tokenize,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            effective_order=use_effective_order,
        )
        result = score.corpus_score(list(predictions), streams)
        return {
            "bleu": float(result.score),
            "precisions": [float(p) for p in result.precisions],
            "brevity_penalty": float(result.bp),
            "length_ratio": float(result.ratio),
            "translation_length": int(result.sys_len),
            "reference_length": int(result.ref_len),
            "counts": [int(c) for c in result.counts],
            "totals": [int(t) for t in result.totals],
            "signature": str(score.get_signature()),
        }
