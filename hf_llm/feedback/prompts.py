"""The prompts a person ranks answers for: from a prompts file or any dataset `hf_llm.data` loads."""

from __future__ import annotations

from pathlib import Path

from transformers.utils import logging

from ..data import DataArguments, DataError, alpaca_messages, load_formatted_dataset, load_raw_dataset

logger = logging.get_logger(__name__)

#: Columns tried, in order, when `--prompt_column` is not given.
PROMPT_COLUMNS = ("prompt", "instruction", "question", "query", "text")


def _prompt_text(row: dict, column: str, source: str) -> str:
    value = row[column]
    if column == "instruction":
        # Alpaca rows: the `input` travels inside the user message, as the SFT model saw it.
        return alpaca_messages(value, row.get("input") or "")[0]["content"]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        users = [m for m in value if m.get("role") == "user"]
        if len(users) != 1:
            raise DataError(
                f"column {column!r} of {source} holds a conversation with {len(users)} user messages; `hf-llm rank` "
                "takes single-turn prompts: pass a column of strings with --prompt_column"
            )
        return users[0]["content"]
    if not isinstance(value, str):
        raise DataError(f"column {column!r} of {source} holds {type(value).__name__}, not text; pass --prompt_column")
    return value


def load_prompts(
    dataset_name: str, prompt_column: str | None = None, split: str = "train", max_prompts: int | None = None
) -> list[str]:
    """The prompts to rank answers for, in order, empty and repeated ones left out.

    Args:
        dataset_name (`str`): a `.txt` file (one prompt per line), a `.json`/`.jsonl`/`.csv`/`.parquet` file or
            folder, a Hub dataset id, or `"pydocs"` (its instructions).
        prompt_column (`str`, *optional*): the column holding the prompts; defaults to the first of
            `PROMPT_COLUMNS` present. An `instruction` column is combined with `input` as in the Alpaca template.
        split (`str`, defaults to `"train"`): the split to read.
        max_prompts (`int`, *optional*): keep only the first N prompts.

    Raises:
        DataError: naming the file, split or column and the flag to fix.
    """
    path = Path(dataset_name).expanduser()
    if path.suffix.lower() == ".txt" and path.is_file():
        source = str(path)
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        if dataset_name == "pydocs":
            splits = load_formatted_dataset("pydocs", "instruction")
        else:
            splits = load_raw_dataset(DataArguments(dataset_name=dataset_name))
        source = f"{dataset_name} (split {split!r})"
        if split not in splits:
            raise DataError(f"split {split!r} not found in {dataset_name}; splits are {list(splits)}; pass --split")
        rows = splits[split]
        column = prompt_column or next((c for c in PROMPT_COLUMNS if c in rows.column_names), None)
        if column is None or column not in rows.column_names:
            raise DataError(
                f"no prompt column {prompt_column or list(PROMPT_COLUMNS)} in {source}; columns are "
                f"{rows.column_names}; pass --prompt_column <name>"
            )
        prompts = [_prompt_text(row, column, source) for row in rows]
    seen, unique = set(), []
    for prompt in prompts:
        if prompt and prompt.strip() and prompt not in seen:
            seen.add(prompt)
            unique.append(prompt)
    if len(unique) < len(prompts):
        logger.warning(f"{source}: left out {len(prompts) - len(unique)} empty or repeated prompts")
    if not unique:
        raise DataError(f"{source} holds no prompts")
    return unique[:max_prompts] if max_prompts else unique
