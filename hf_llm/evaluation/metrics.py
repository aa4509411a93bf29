"""Find hf_llm's `evaluate` metric modules (`eval/metrics/<name>/<name>.py`) by path and load them offline."""

from __future__ import annotations

import os
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)

#: Where `eval/metrics` sits in a checkout: hf_llm/evaluation/metrics.py -> parents[2] is the repository root.
DEFAULT_METRICS_DIR = Path(__file__).resolve().parents[2] / "eval" / "metrics"


def metric_path(name: str, metrics_dir: str | os.PathLike | None = None) -> str:
    """Path of the `evaluate` module script `eval/metrics/<name>/<name>.py`.

    hf_llm never imports `eval/`; it finds the modules next to the package in a checkout, or in
    `metrics_dir` when given.

    Args:
        name (`str`): the metric, e.g. `"bleu"`, `"accuracy"` or `"perplexity"`.
        metrics_dir (`str` or `os.PathLike`, *optional*): the `eval/metrics` directory; defaults to the one in the
            checkout hf_llm was installed from.

    Returns:
        `str`: the script path, ready for `evaluate.load`.
    """
    root = Path(metrics_dir) if metrics_dir is not None else DEFAULT_METRICS_DIR
    script = root / name / f"{name}.py"
    if not script.is_file():
        available = sorted(p.name for p in root.iterdir() if (p / f"{p.name}.py").is_file()) if root.is_dir() else []
        raise FileNotFoundError(
            f"evaluate module {name!r} not found at {script}. hf_llm finds its metrics in the eval/metrics "
            f"directory of the checkout it was installed from (available there: {available or 'none'}). "
            "Install hf_llm from a checkout (`git clone ... && pip install -e .`) or pass "
            "--metrics_dir /path/to/hf_llm/eval/metrics."
        )
    return str(script)


def load_metric(name: str, metrics_dir: str | os.PathLike | None = None, **kwargs):
    """`evaluate.load` one of hf_llm's offline metric modules by name.

    Args:
        name (`str`): `"accuracy"`, `"bleu"` or `"perplexity"`.
        metrics_dir (`str` or `os.PathLike`, *optional*): see [`metric_path`].
        kwargs: passed to `evaluate.load`.

    Returns:
        `evaluate.EvaluationModule`
    """
    import evaluate  # imported here: `evaluate` is slow to import and only evaluation needs it

    return evaluate.load(metric_path(name, metrics_dir), **kwargs)
