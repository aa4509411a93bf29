"""Human feedback: sample answers from a checkpoint, let a person rank them in a web page, and turn the rankings into
a preference dataset for `RewardTrainer` / `DPOTrainer` (the first step of RLHF).

Commands (`hf_llm.feedback.commands`, registered by `hf_llm/cli.py`)
    `hf-llm rank --model_name_or_path M --dataset_name PROMPTS --labeler alice`: the ranking page on 127.0.0.1;
    `hf-llm rank --export DIR [--push_to_hub --hub_dataset_id you/prefs]`: the pairs as a dataset;
    `hf-llm chat --web --model_name_or_path M`: a streaming chat page.

Public API
    Rankings file (`rankings.py`): `append_record(path, record)` (flushed and fsynced), `read_records(path)`,
    `is_rankings_file(path)`, `normalize_ranks(ranks)`, `prompt_id(prompt)`, `SCHEMA`, `VERDICTS`.
    Sampling (`sampling.py`): `SamplingConfig`, `format_prompt`, `sample_answers`, `answer_sampler`, `stream_reply`.
    Prompts (`prompts.py`): `load_prompts(dataset_name, prompt_column=None, split="train", max_prompts=None)`.
    Session (`session.py`): `RankingSession` (what comes next, resume, each submission written at once).
    Export (`export.py`): `rankings_to_preferences(records)`, `labeler_agreement(records)`,
    `split_by_prompt(rows, validation_fraction, seed)`, `export_rankings(rankings_file, output_dir, ...)`,
    `rankings_dataset(rankings_file, ...)`.
    Pages (`app.py`, imports gradio): `build_ranking_app`, `build_chat_app`; serving (`launch.py`): `serve`,
    `check_binding`, `read_auth_file`.
"""

from ..data.preferences import (
    export_rankings,
    labeler_agreement,
    rankings_dataset,
    rankings_to_preferences,
    split_by_prompt,
)
from ..data.rankings import SCHEMA, VERDICTS, append_record, is_rankings_file, normalize_ranks, prompt_id, read_records
from .prompts import load_prompts
from .sampling import SamplingConfig, answer_sampler, format_prompt, sample_answers, stream_reply
from .session import RankingSession

__all__ = [
    "SCHEMA",
    "VERDICTS",
    "RankingSession",
    "SamplingConfig",
    "answer_sampler",
    "append_record",
    "export_rankings",
    "format_prompt",
    "is_rankings_file",
    "labeler_agreement",
    "load_prompts",
    "normalize_ranks",
    "prompt_id",
    "rankings_dataset",
    "rankings_to_preferences",
    "read_records",
    "sample_answers",
    "split_by_prompt",
    "stream_reply",
]
