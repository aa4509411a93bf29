"""Train a byte-level BPE tokenizer and give it hf_llm's special tokens and Alpaca chat template.

The tokenizer is a standard `PreTrainedTokenizerFast`: `save_pretrained` writes `tokenizer.json`,
`tokenizer_config.json` (with the chat template) and `special_tokens_map.json`, which `AutoTokenizer` loads
anywhere, hf_llm installed or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging

from .data.errors import DataError

# The Alpaca prompt lives with the rest of the example formatting; re-exported here for the tokenizer's users.
from .data.formatting import ALPACA_CHAT_TEMPLATE, ALPACA_PREAMBLE, alpaca_messages, format_alpaca_prompt
from .errors import UsageError

logger = logging.get_logger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)
# What train_scripts/train_tokenizer.py writes: a directory holding only these is an earlier tokenizer, replaced.
TOKENIZER_OUTPUTS = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        "recipe.yaml",
        "data_fingerprint.json",
    }
)

__all__ = [
    "ALPACA_CHAT_TEMPLATE",
    "ALPACA_PREAMBLE",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "TOKENIZER_OUTPUTS",
    "TokenizerArguments",
    "alpaca_messages",
    "format_alpaca_prompt",
    "train_tokenizer",
]


def _batches(texts: Iterable[str] | Dataset, text_column: str, batch_size: int) -> Iterator[list[str]]:
    if isinstance(texts, Dataset):
        if text_column not in texts.column_names:
            raise DataError(
                f"column {text_column!r} not found in the dataset; columns are {texts.column_names}; pass "
                "--text_column <name>"
            )
        for start in range(0, len(texts), batch_size):
            yield texts[start : start + batch_size][text_column]
        return
    if isinstance(texts, str):
        raise TypeError("train_tokenizer takes an iterable of texts (or a Dataset), not a single string")
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(
    texts: Iterable[str] | Dataset,
    vocab_size: int,
    *,
    min_frequency: int = 2,
    text_column: str = "text",
    model_max_length: int | None = None,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """
    Train a byte-level BPE tokenizer (GPT-2 style) with hf_llm's special tokens and Alpaca chat template.

    Args:
        texts (`Iterable[str]` or `Dataset`): Training text; a `Dataset` is read from `text_column` in batches.
        vocab_size (`int`): Final vocabulary size, special tokens included; at least 258 (256 bytes + 2 specials).
        min_frequency (`int`, defaults to 2): A pair must occur this often to be merged.
        text_column (`str`, defaults to `"text"`): Column read when `texts` is a `Dataset`.
        model_max_length (`int`, *optional*): Stored in the tokenizer config (e.g. the model's context length).
        show_progress (`bool`, defaults to `False`): Show the tokenizers library's progress bar.

    Returns:
        `PreTrainedTokenizerFast`: `<|endoftext|>` (id 0) as eos and bos, `<|pad|>` (id 1) as pad, no unk (every byte
        is in the vocabulary), `chat_template` set to `ALPACA_CHAT_TEMPLATE`.

    Example:

    ```python
    >>> from hf_llm.tokenizer import train_tokenizer
    >>> tok = train_tokenizer(["Hello world. " * 50, "Python is a language."], vocab_size=300)
    >>> tok.pad_token, tok.eos_token
    ('<|pad|>', '<|endoftext|>')
    ```
    """
    base = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS)
    if vocab_size < base:
        raise DataError(
            f"--vocab_size {vocab_size} is smaller than the {base} base tokens (256 bytes + {len(SPECIAL_TOKENS)} "
            f"special tokens); pass --vocab_size {base} or more"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    seen = {"texts": 0, "chars": 0}

    def counted(batches: Iterator[list[str]]) -> Iterator[list[str]]:
        for batch in batches:
            seen["texts"] += len(batch)
            seen["chars"] += sum(len(t) for t in batch)
            yield batch

    tokenizer.train_from_iterator(counted(_batches(texts, text_column, 1000)), trainer=trainer)
    if seen["chars"] == 0:
        raise DataError("train_tokenizer got no text: the dataset or iterable is empty")
    logger.info(
        f"Trained a byte-level BPE tokenizer with {tokenizer.get_vocab_size()} tokens on {seen['texts']} texts "
        f"({seen['chars']} characters)"
    )
    kwargs = {"model_max_length": model_max_length} if model_max_length is not None else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=ALPACA_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


def padded_vocab_size(num_tokens: int, multiple_of: int = 64) -> int:
    """
    Round a vocabulary size up to a multiple of `multiple_of` (tensor-core-friendly embedding and LM-head shapes).

    Args:
        num_tokens (`int`): `len(tokenizer)`.
        multiple_of (`int`, defaults to 64): Rounding multiple; 1 keeps `num_tokens`.

    Returns:
        `int`: The padded vocabulary size.
    """
    return -(-num_tokens // multiple_of) * multiple_of


@dataclass
class TokenizerArguments:
    """
    The flags of `train_scripts/train_tokenizer.py` (with `hf_llm.data.DataArguments` for the corpus).

    Args:
        output_dir (`str`): Where the tokenizer is saved: a new or empty directory, or an earlier tokenizer of the
            script's (replaced).
        overwrite_output_dir (`bool`, defaults to `False`): Delete what `output_dir` holds first.
        vocab_size (`int`, defaults to 4096): Vocabulary size, special tokens included.
        min_frequency (`int`, defaults to 2): A pair must occur this often to be merged.
        model_max_length (`int`, *optional*): Context length stored in the tokenizer config.
        push_to_hub (`bool`, defaults to `False`): Push the tokenizer to `hub_model_id`.
        hub_model_id (`str`, *optional*): Hub repo id; required with `push_to_hub`.
        hub_private_repo (`bool`, *optional*): Create the repo private.
        hub_token (`str`, *optional*): Hub token; defaults to the cached login or `HF_TOKEN`.
    """

    output_dir: str = field(metadata={"help": "Where the tokenizer is saved."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Delete what --output_dir holds first (else only an earlier tokenizer is)."}
    )
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair frequency for a merge."})
    model_max_length: int | None = field(default=None, metadata={"help": "Context length for the tokenizer config."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the tokenizer to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id (with --push_to_hub)."})
    hub_private_repo: bool | None = field(default=None, metadata={"help": "Create the Hub repo private."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: cached login or HF_TOKEN)."})

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("--push_to_hub needs --hub_model_id, e.g. --hub_model_id your-name/pydocs-bpe-4096.")
