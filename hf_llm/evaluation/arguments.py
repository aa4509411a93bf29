"""`EvaluationArguments`: the flags of `hf-llm eval` (dataset flags are `hf_llm.data.DataArguments`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_llm.errors import UsageError

from ..stages import EVAL_TASKS

#: The kind of model each `--task` evaluates (`hf_llm.loading.check_model_kind`).
TASK_MODEL_KINDS = {
    "pretrain": "causal_lm",
    "sft": "causal_lm",
    "win_rate": "causal_lm",
    "classifier": "classifier",
    "reward": "reward",
}


@dataclass
class EvaluationArguments:
    """
    What to evaluate, on which task and split, and where to write the report. Dataset flags (`--dataset_name`,
    column mappings, `--max_eval_samples`, ...) come from `hf_llm.data.DataArguments`.

    Args:
        model_name_or_path (`str`):
            Checkpoint to evaluate: a base, merged or LoRA-adapter `save_pretrained` directory, or a Hub repo id.
        task (`str`):
            What to measure: `"pretrain"`, `"classifier"`, `"sft"` or `"reward"` (the stage whose artifact it is;
            see `hf_llm.evaluation.tasks`).
        output_dir (`str`):
            Where `metrics.json`, `metrics.md` (and task extras) are written: a new or empty directory, or one holding
            only an earlier evaluation's report (replaced); never the model's own directory.
        overwrite_output_dir (`bool`, defaults to `False`):
            Delete what `--output_dir` holds first; without it a directory holding other files is refused.
        split (`str`, defaults to `"test"`):
            Split of the loaded dataset to evaluate (`train`, `validation` or `test`).
        tokenizer_name_or_path (`str`, *optional*):
            Tokenizer to use; defaults to the checkpoint's (or, for an adapter, its base model's).
        batch_size (`int`, defaults to 8):
            Examples (or perplexity windows) per forward pass.
        max_length (`int`, *optional*):
            Longest token sequence fed to the model; defaults to the model's context length. Longer pretraining texts
            are scored with a sliding window; longer classifier/reward inputs and SFT prompts are
            truncated from the left (counted in the report).
        perplexity_stride (`int`, *optional*):
            How far the perplexity window moves over a long text; defaults to half of `max_length`.
        max_new_tokens (`int`, defaults to 64):
            Generation budget per SFT prompt (greedy decoding).
        bleu_tokenize (`str`, defaults to `"13a"`):
            sacrebleu tokenizer for BLEU (`"13a"`, `"intl"`, `"char"`, `"none"`, ...).
        seed (`int`, defaults to 42):
            Random seed, recorded in the manifest.
        metrics_dir (`str`, *optional*):
            The `eval/metrics` directory holding the `evaluate` modules; defaults to the checkout's.
        reward_model_path (`str`, *optional*):
            `win_rate` task: the reward model (a `reward.py` output) that scores the greedy answers.
        reference_model_name_or_path (`str`, *optional*):
            `win_rate` task: the policy the model is compared against (e.g. the SFT model it was aligned from).
        device (`str`, *optional*):
            `"cpu"`, `"cuda"`, ...; defaults to CUDA when available.
        trust_remote_code (`bool`, defaults to `False`):
            Allow code shipped with the checkpoint to run.
    """

    model_name_or_path: str = field(
        metadata={"help": "Base, merged or LoRA-adapter checkpoint: a save_pretrained directory or a Hub repo id."}
    )
    task: str = field(metadata={"help": f"What to measure: one of {', '.join(EVAL_TASKS)} (the stage's evaluation)."})
    output_dir: str = field(metadata={"help": "Where metrics.json and metrics.md are written."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Delete what --output_dir holds first (else only an earlier report is)."}
    )
    split: str = field(default="test", metadata={"help": "Dataset split to evaluate (train, validation or test)."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to use; defaults to the checkpoint's (or its base model's)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Examples (or perplexity windows) per forward pass."})
    max_length: int | None = field(
        default=None, metadata={"help": "Longest token sequence fed to the model; defaults to its context length."}
    )
    perplexity_stride: int | None = field(
        default=None, metadata={"help": "Sliding-window step for long texts; defaults to max_length // 2."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "sft task: tokens generated per prompt."})
    bleu_tokenize: str = field(default="13a", metadata={"help": "sacrebleu tokenizer: 13a, intl, char, none, ..."})
    seed: int = field(default=42, metadata={"help": "Random seed (recorded in the manifest)."})
    metrics_dir: str | None = field(
        default=None, metadata={"help": "The eval/metrics directory; defaults to the one in hf_llm's checkout."}
    )
    reward_model_path: str | None = field(
        default=None, metadata={"help": "win_rate task: the reward model (reward.py output) that scores answers."}
    )
    reference_model_name_or_path: str | None = field(
        default=None, metadata={"help": "win_rate task: the policy compared against (e.g. the SFT model)."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ...; defaults to CUDA when available."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code shipped with the checkpoint."})

    def __post_init__(self):
        if self.task not in EVAL_TASKS:
            raise UsageError(f"--task must be one of {list(EVAL_TASKS)}, got {self.task!r}")
        for name in ("batch_size", "max_new_tokens", "max_length", "perplexity_stride"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{name} must be a positive integer, got {value}")
