"""The report of `hf-llm pipeline`: `report.md` and a self-contained `report.html` (plots embedded).

Per stage, in the mission's terms: what the stage did, its metrics against the right baseline (perplexity before and
after pretraining, classifier accuracy against the majority class and TF-IDF + logistic regression, BLEU and reference
perplexity before and after SFT and BLEU against copying the nearest training answer, reward-model pairwise accuracy
against chance, PPO's and DPO's mean reward, KL and win rate against the SFT model), its training curves, and its wall
time and tokens/s; a plain sentence under the table says whether the classifier and the SFT model beat their
baselines. Then the same fixed prompts answered by the pretrained, SFT, PPO and DPO models side by side, and the
environment. The report is a list of blocks rendered twice, as markdown and as HTML, so the two always say the same
thing.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers.utils import logging

from .evaluation.baselines import baseline_verdict, bleu_verdict
from .evaluation.report import format_value, library_versions

if TYPE_CHECKING:
    from .stages import PipelineStep

logger = logging.get_logger(__name__)

# What each stage does, in the mission's words.
STAGE_STORIES = {
    "tokenizer": "**Build: data preparation.** A byte-level BPE tokenizer is trained on the training text, with the "
    "special tokens and the chat template every later stage uses.",
    "pretrain": "**Pretraining.** A GPT is trained from scratch on unlabeled text with next-token prediction "
    "(`transformers.Trainer`), the text packed into training blocks.",
    "classifier": "**Fine-tuning for classification.** The pretrained GPT gets a `score` head on its last token and "
    "is fine-tuned to label each text with its topic.",
    "sft": "**Fine-tuning for instruction following.** The pretrained GPT is fine-tuned with TRL's `SFTTrainer` on "
    "instruction/answer pairs rendered through the chat template, the loss on the answers only.",
    "reward": "**Alignment, step 1: a reward model.** TRL's `RewardTrainer` teaches a copy of the SFT model with a "
    "one-output head to score the preferred answer of each pair above the rejected one.",
    "ppo": "**Alignment, step 2: RLHF with PPO.** TRL's `PPOTrainer` optimises the SFT model to earn more reward from "
    "the reward model, held close to the SFT model by a KL penalty.",
    "dpo": "**Alignment, the offline alternative: DPO.** TRL's `DPOTrainer` learns from the same preference pairs "
    "directly, with no reward model and no sampling during training.",
}

SAMPLE_MODELS = ("pretrain", "sft", "ppo", "dpo")


@dataclass
class Block:
    """One piece of the report: `kind` is `heading`, `text`, `table`, `image` or `samples`."""

    kind: str
    content: Any
    level: int = 2


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _eval_metrics(output_dir: Path, name: str) -> dict:
    return (_read_json(output_dir / name / "metrics.json") or {}).get("metrics", {})


def _log_history(stage_dir: Path) -> list[dict]:
    return (_read_json(stage_dir / "trainer_state.json") or {}).get("log_history", [])


def _series(history: list[dict], key: str, x_key: str = "step") -> list[tuple[float, float]]:
    return [(entry.get(x_key, entry.get("step", 0)), entry[key]) for entry in history if key in entry]


# What each stage's section plots from its trainer log: the figure's title, {curve label: log key}, the log key of
# the x axis, and the curves drawn on a log scale.
TRAINING_CURVES: dict[str, tuple[str, dict[str, str], str, tuple[str, ...]]] = {
    "pretrain": (
        "Pretraining",
        {"training loss": "loss", "validation perplexity": "eval_perplexity"},
        "step",
        ("validation perplexity",),
    ),
    "classifier": (
        "Classifier fine-tuning",
        {"training loss": "loss", "validation accuracy": "eval_accuracy"},
        "step",
        (),
    ),
    "sft": ("Instruction tuning (SFT)", {"training loss": "loss", "validation loss": "eval_loss"}, "step", ()),
    "reward": (
        "Reward model",
        {"training loss": "loss", "validation pairwise accuracy": "eval_accuracy"},
        "step",
        (),
    ),
    "ppo": (
        "PPO",
        {"reward (RLHF objective)": "objective/rlhf_reward", "KL to the reference": "objective/kl"},
        "episode",
        (),
    ),
    "dpo": (
        "DPO",
        {"training loss": "loss", "validation implicit-reward accuracy": "eval_rewards/accuracies"},
        "step",
        (),
    ),
}


def _plot_training_curves(output_dir: Path, stage: str, history: list[dict]) -> Block | None:
    """Plot the stage's [`TRAINING_CURVES`] that its log holds (one axis each), save `plots/<stage>.png`, return its
    image block (`None` when the log holds none of them)."""
    if stage not in TRAINING_CURVES:
        return None
    title, keys, x_key, log_scale = TRAINING_CURVES[stage]
    curves = {label: _series(history, key, x_key) for label, key in keys.items()}
    curves = {label: points for label, points in curves.items() if points}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.0), squeeze=False)
    for axis, (label, points) in zip(axes[0], curves.items(), strict=True):
        axis.plot([x for x, _ in points], [y for _, y in points], marker="o" if len(points) < 30 else None)
        axis.set(xlabel=x_key, title=label)
        if label in log_scale:
            axis.set_yscale("log")
        axis.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path = output_dir / "plots" / f"{stage}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Block("image", (f"plots/{stage}.png", title))


def _first_and_last(history: list[dict], key: str) -> tuple[float | None, float | None]:
    values = [entry[key] for entry in history if key in entry]
    return (values[0], values[-1]) if values else (None, None)


def _throughput(stage_dir: Path) -> str:
    """Training throughput: tokens/s from Trainer's token count, or PPO's episodes/s (TRL's `eps`)."""
    results = _read_json(stage_dir / "train_results.json") or {}
    state = _read_json(stage_dir / "trainer_state.json") or {}
    tokens = results.get("num_input_tokens_seen") or state.get("num_input_tokens_seen")
    runtime = results.get("train_runtime")
    if tokens and runtime:
        return f"{tokens / runtime:,.0f} tokens/s"
    episodes_per_second = [entry["eps"] for entry in state.get("log_history", []) if "eps" in entry]
    if episodes_per_second:
        return f"{episodes_per_second[-1]:,.1f} episodes/s"
    return ""


def _stage_blocks(output_dir: Path, stage: str) -> list[Block]:
    """The metrics table and curves of one stage, against its baseline."""
    stage_dir = output_dir / stage
    history = _log_history(stage_dir)
    rows: list[tuple[str, Any, Any]] = []  # (metric, baseline, this stage)
    verdict_blocks: list[Block] = []  # a plain sentence under the table when a model does not beat its baseline
    plot = _plot_training_curves(output_dir, stage, history)
    blocks: list[Block] = [plot] if plot else []
    if stage == "tokenizer":
        tokenizer = _read_json(stage_dir / "tokenizer.json") or {}
        token_ids = set(((tokenizer.get("model") or {}).get("vocab") or {}).values())
        vocab = len(token_ids | {token["id"] for token in tokenizer.get("added_tokens") or []})
        if vocab:
            rows.append(("vocabulary size", "", vocab))
    elif stage == "pretrain":
        before, after = _first_and_last(history, "eval_perplexity")
        rows.append(("validation perplexity (untrained → trained)", before, after))
        test = _eval_metrics(output_dir, "eval-pretrain")
        rows += [
            ("test perplexity", "", test.get("perplexity")),
            ("test bits per byte", "", test.get("bits_per_byte")),
        ]
    elif stage == "classifier":
        test = _eval_metrics(output_dir, "eval-classifier")
        baselines = _classifier_baselines(test, stage_dir)
        majority = baselines.get("majority_accuracy")
        if majority is None:  # no baselines recorded: the test split's own majority class
            confusion = test.get("confusion_matrix") or []
            supports = [sum(row) for row in confusion]
            majority = max(supports) / sum(supports) if supports and sum(supports) else None
        accuracy = test.get("accuracy", baselines.get("accuracy"))
        rows += [("test accuracy (majority class → classifier)", majority, accuracy)]
        if baselines.get("tfidf_accuracy") is not None:
            rows += [
                ("test accuracy (TF-IDF + logistic regression → classifier)", baselines["tfidf_accuracy"], accuracy)
            ]
            if accuracy is not None:
                rows += [
                    ("test accuracy, classifier − TF-IDF (points)", "", 100 * (accuracy - baselines["tfidf_accuracy"]))
                ]
        rows += [("test macro-F1", baselines.get("tfidf_macro_f1", ""), test.get("macro_f1", test.get("f1")))]
        if accuracy is not None and baselines.get("tfidf_accuracy") is not None:
            verdict_blocks.append(
                Block("text", baseline_verdict(accuracy, baselines["tfidf_accuracy"], model="The classifier"))
            )
        elif baselines.get("not_computed"):
            verdict_blocks.append(Block("text", f"*TF-IDF baseline {baselines['not_computed']}.*"))
        if (output_dir / "eval-classifier" / "confusion_matrix.png").is_file():
            blocks.append(Block("image", ("eval-classifier/confusion_matrix.png", "Test confusion matrix")))
    elif stage == "sft":
        before, after = _eval_metrics(output_dir, "eval-sft-before"), _eval_metrics(output_dir, "eval-sft")
        rows.append(("test BLEU of greedy answers (pretrained → SFT)", before.get("bleu"), after.get("bleu")))
        nearest = after.get("nearest_neighbour_bleu")
        if nearest is not None:
            rows.append(("test BLEU (copy the nearest training answer → SFT)", nearest, after.get("bleu")))
            if after.get("bleu") is not None:
                verdict_blocks.append(Block("text", bleu_verdict(after["bleu"], nearest, model="The SFT model")))
        rows.append(
            (
                "test perplexity of the reference answers",
                before.get("reference_perplexity"),
                after.get("reference_perplexity"),
            )
        )
    elif stage == "reward":
        test = _eval_metrics(output_dir, "eval-reward")
        rows.append(("test pairwise accuracy (chance → reward model)", 0.5, test.get("pairwise_accuracy")))
        rows.append(("test mean margin (chosen − rejected)", "", test.get("mean_margin")))
    elif stage in ("ppo", "dpo"):
        test = _eval_metrics(output_dir, f"eval-{stage}")
        rows.append(
            (
                "mean reward of greedy answers (SFT → aligned)",
                test.get("reference_mean_reward"),
                test.get("mean_reward"),
            )
        )
        rows.append(("win rate over the SFT model (ties count ½)", 0.5, test.get("win_rate")))
        if stage == "ppo":
            _, kl = _first_and_last(history, "objective/kl")
            rows.append(("KL to the SFT model at the end of training", "", kl))
    table = [("metric", "baseline", "result")] + [(m, b, a) for m, b, a in rows if a is not None]
    return ([Block("table", table)] if len(table) > 1 else []) + verdict_blocks + blocks


def _classifier_baselines(test: dict, stage_dir: Path) -> dict:
    """
    The classifier's baselines on the test split: from `hf-llm eval`'s metrics when it computed them, else from the
    classifier's own `test_results.json` (same train and test splits). `not_computed` says why when neither has them.
    """
    if test.get("tfidf_accuracy") is not None:
        return test
    results = _read_json(stage_dir / "test_results.json") or {}
    found = {key.removeprefix("test_"): value for key, value in results.items() if key.startswith("test_")}
    if found.get("tfidf_accuracy") is not None:
        return found
    return {"not_computed": test["baselines"]} if isinstance(test.get("baselines"), str) else {}


def _fixed_prompt_samples(output_dir: Path, num_prompts: int = 4, max_new_tokens: int = 48) -> list[dict] | None:
    """The same held-out instructions answered greedily by each trained causal LM (in-process: tiny models)."""
    models = [
        name
        for name in SAMPLE_MODELS
        if (output_dir / name / "config.json").is_file() or (output_dir / name / "adapter_config.json").is_file()
    ]
    if not models:
        return None
    from transformers.utils import logging as transformers_logging

    from .data import load_formatted_dataset
    from .data.formatting import chat_prompt
    from .evaluation.inference import generate_greedy, greedy_decoding
    from .evaluation.perplexity import model_max_length
    from .loading import load_model_for_evaluation

    try:
        rows = list(load_formatted_dataset("pydocs", "instruction")["test"].select(range(num_prompts)))
    except Exception:  # a pipeline on the user's own data may have no pydocs-shaped test split
        return None
    samples = [{"instruction": row["instruction"] + (f"\n{row['input']}" if row["input"] else "")} for row in rows]
    bars_were_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # no "Loading weights" bars between the pipeline's step lines
    try:
        for name in models:
            model, tokenizer = load_model_for_evaluation(str(output_dir / name), task="sft")
            if tokenizer.chat_template is None:
                continue
            prompts = [chat_prompt(row, tokenizer) for row in rows]
            answers, _ = generate_greedy(
                model, tokenizer, prompts, greedy_decoding(max_new_tokens, tokenizer), 8, model_max_length(model)
            )
            for sample, answer in zip(samples, answers, strict=True):
                sample[name] = answer or "(empty answer)"  # e.g. the pretrained model ends at once
    finally:
        if bars_were_enabled:
            transformers_logging.enable_progress_bar()
    return samples


def _could_not_summarise(what: str, error: Exception) -> Block:
    """A text block saying what the report could not summarise and why: one unreadable stage output must not cost the
    report of every other stage. The traceback goes to the log."""
    logger.warning(f"pipeline report: could not summarise {what}", exc_info=True)
    return Block("text", f"*Could not summarise {what}: {type(error).__name__}: {error}.*")


def build_report(output_dir: Path, steps: list[PipelineStep], state: dict[str, dict]) -> list[Block]:
    """The report's blocks: summary table, one section per stage, samples, environment."""
    stages = list(dict.fromkeys(step.stage for step in steps))
    blocks = [Block("heading", "hf_llm pipeline report", 1)]
    blocks.append(
        Block(
            "text",
            "The whole life of a GPT on one dataset: **build** (tokenizer, model), **pretrain** (next-token "
            "prediction), **fine-tune** (a classifier and an instruction follower, with PEFT and TRL), "
            "**align** (a reward model, then PPO; DPO beside it). Every number below was measured by this run on the "
            "test split.",
        )
    )
    timing = [("step", "wall time", "throughput", "log")]
    for step in steps:
        seconds = state.get(step.name, {}).get("seconds")
        try:
            throughput = _throughput(step.output_dir) if step.name == step.stage else ""
        except Exception as error:
            logger.warning(f"pipeline report: could not read the throughput of {step.name}", exc_info=True)
            throughput = f"unreadable ({type(error).__name__})"
        wall = f"{seconds:.0f} s" if seconds is not None else "not run"
        timing.append((step.name, wall, throughput, f"logs/{step.log_file.name}"))
    blocks += [Block("heading", "Steps"), Block("table", timing)]
    for stage in stages:
        blocks.append(Block("heading", f"{stage}"))
        blocks.append(Block("text", STAGE_STORIES.get(stage, "")))
        try:
            blocks += _stage_blocks(output_dir, stage)
        except Exception as error:
            blocks.append(_could_not_summarise(f"the {stage} stage", error))
    try:
        samples = _fixed_prompt_samples(output_dir)
    except Exception as error:
        samples = None
        blocks.append(_could_not_summarise("the fixed-prompt samples", error))
    if samples:
        blocks += [
            Block("heading", "The same prompts, stage after stage"),
            Block("text", "Held-out pydocs instructions, greedy answers (48 new tokens at most) of each model."),
            Block("samples", samples),
        ]
    environment = [("", "")]
    environment += [("platform", platform.platform()), ("CPU cores", os.cpu_count())]
    environment.append(("device", _device()))
    environment += [(name, version or "not installed") for name, version in library_versions().items()]
    blocks += [Block("heading", "Environment"), Block("table", environment)]
    return blocks


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} × {torch.cuda.get_device_name()}"
    return "CPU"


def _cell(value: Any) -> str:
    """A number as a reader wants it: perplexities of 4,107 or 276.3, accuracies and rewards to 3 decimals."""
    if value is None:
        return ""
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"
    return format_value(value)


def render_markdown(blocks: list[Block]) -> str:
    """The report as markdown (images linked, relative to the output directory)."""
    lines: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            lines += ["#" * block.level + " " + block.content, ""]
        elif block.kind == "text" and block.content:
            lines += [block.content, ""]
        elif block.kind == "table":
            header, *rows = block.content
            lines.append("| " + " | ".join(_cell(c) for c in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif block.kind == "image":
            path, title = block.content
            lines += [f"![{title}]({path})", ""]
        elif block.kind == "samples":
            for sample in block.content:
                lines.append(f"**Instruction:** {sample['instruction']}".replace("\n", " "))
                lines.append("")
                lines += ["| model | answer |", "|---|---|"]
                lines += [
                    f"| {name} | {_cell(sample[name]).replace(chr(10), ' ')} |"
                    for name in SAMPLE_MODELS
                    if name in sample
                ]
                lines.append("")
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; } td, th { border: 1px solid #ccc; padding: 4px 10px; }
th { background: #f3f3f3; } td { vertical-align: top; } img { max-width: 100%; margin: 0.5em 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.samples td:last-child { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 0.9em; }
"""


def _html_text(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    return "".join(f"<b>{part}</b>" if i % 2 else part for i, part in enumerate(parts)).replace("`", "")


def render_html(blocks: list[Block], output_dir: Path) -> str:
    """The report as one self-contained HTML page: images embedded as base64, every model output escaped."""
    body: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            body.append(f"<h{block.level}>{html.escape(block.content)}</h{block.level}>")
        elif block.kind == "text" and block.content:
            body.append(f"<p>{_html_text(block.content)}</p>")
        elif block.kind == "table":
            header, *rows = block.content
            cells = "".join(f"<th>{html.escape(_cell(c))}</th>" for c in header)
            body.append(f"<table><tr>{cells}</tr>")
            for row in rows:
                body.append("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>")
            body.append("</table>")
        elif block.kind == "image":
            path, title = block.content
            image = output_dir / path
            if image.is_file():
                data = base64.b64encode(image.read_bytes()).decode()
                body.append(f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">')
        elif block.kind == "samples":
            for sample in block.content:
                body.append(f"<p><b>Instruction:</b> {html.escape(sample['instruction'])}</p>")
                body.append('<table class="samples"><tr><th>model</th><th>answer</th></tr>')
                for name in SAMPLE_MODELS:
                    if name in sample:
                        body.append(f"<tr><td>{name}</td><td>{html.escape(sample[name])}</td></tr>")
                body.append("</table>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>hf_llm pipeline report</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_pipeline_report(output_dir: Path, steps: list[PipelineStep], state: dict[str, dict]) -> Path:
    """
    Write `report.md` and `report.html` into `output_dir`.

    Args:
        output_dir (`Path`): The pipeline's output directory (one sub-directory per step).
        steps (`list[PipelineStep]`): The steps of this run, in order.
        state (`dict`): `pipeline_state.json`'s steps (status and seconds per step).

    Returns:
        `Path`: The path of `report.md`.
    """
    blocks = build_report(output_dir, steps, state)
    (output_dir / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    (output_dir / "report.html").write_text(render_html(blocks, output_dir), encoding="utf-8")
    return output_dir / "report.md"
