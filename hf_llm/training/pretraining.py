"""The pieces of `train_scripts/pretrain.py` that other entry points (benchmarks, the pipeline) reuse.

Tokenizer: load one, or train a byte-level BPE on the training split. Model: continue from a checkpoint / Hub id, or
build a new `GPTForCausalLM` from a preset. Data: tokenize and pack a `text` dataset for next-token prediction.
"""

from __future__ import annotations

import os

from datasets import DatasetDict
from transformers import (
    AutoModelForCausalLM,
    DataCollator,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    default_data_collator,
)
from transformers.utils import logging

from hf_llm.data import (
    DataArguments,
    check_token_ids,
    group_texts,
    padding_free_collator,
    split_documents,
    tokenize_texts,
)
from hf_llm.errors import UsageError
from hf_llm.loading import from_pretrained, tokenizer_from_pretrained
from hf_llm.tokenizer import PAD_TOKEN, train_tokenizer

from .arguments import ModelArguments, attn_implementation_errors, build_gpt_config
from .presets import MODEL_PRESETS

logger = logging.get_logger(__name__)


def tokenizer_needs_training(model_args: ModelArguments) -> bool:
    """Whether [`load_or_train_tokenizer`] will train a new tokenizer (no tokenizer or model to take one from)."""
    return model_args.tokenizer_name_or_path is None and model_args.model_name_or_path is None


def load_or_train_tokenizer(
    model_args: ModelArguments,
    train_texts=None,
    *,
    resume_checkpoint: str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedTokenizerBase:
    """
    The run's tokenizer, in order of preference: the checkpoint being resumed (so a resumed run keeps its
    vocabulary), `--tokenizer_name_or_path`, `--model_name_or_path`, or a new byte-level BPE of
    `--tokenizer_vocab_size` tokens trained on `train_texts`. For a new model, a loaded tokenizer without a pad token
    distinct from eos (GPT-2's) gets `<|pad|>` added, as classification, reward models and PPO need one.

    Args:
        model_args ([`ModelArguments`]): Tokenizer and model flags.
        train_texts (`datasets.Dataset`, *optional*): The training split (`text` column), needed only to train.
        resume_checkpoint (`str`, *optional*): A checkpoint directory being resumed; Trainer saved the tokenizer in it.
        trust_remote_code (`bool`, defaults to `False`): `--trust_remote_code`, for a Hub tokenizer's own code.

    Returns:
        `PreTrainedTokenizerBase`: The tokenizer.
    """
    source = resume_checkpoint or model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if resume_checkpoint and not os.path.isfile(os.path.join(resume_checkpoint, "tokenizer_config.json")):
        source = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if source is not None:
        flag = "--model_name_or_path" if source == model_args.model_name_or_path else "--tokenizer_name_or_path"
        tokenizer = tokenizer_from_pretrained(
            source, flag=flag, revision=model_args.model_revision, trust_remote_code=trust_remote_code
        )
        if model_args.model_name_or_path is None and (
            tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id
        ):
            # A new model can still get a distinct pad token (GPT-2's tokenizer has none); later stages need one.
            tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
            logger.warning(
                f"Tokenizer {source} had no distinct pad token: added {PAD_TOKEN!r} (id {tokenizer.pad_token_id})."
            )
        return tokenizer
    if train_texts is None:
        raise UsageError("no tokenizer: pass --tokenizer_name_or_path, or a training split to train one on.")
    logger.info(f"Training a byte-level BPE tokenizer of {model_args.tokenizer_vocab_size} tokens on the train split")
    model_max_length = model_args.max_position_embeddings
    if model_max_length is None and model_args.model_preset is not None:
        model_max_length = MODEL_PRESETS[model_args.model_preset].get("max_position_embeddings")
    return train_tokenizer(train_texts, vocab_size=model_args.tokenizer_vocab_size, model_max_length=model_max_length)


def build_or_load_causal_lm(
    model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, *, trust_remote_code: bool = False
) -> PreTrainedModel:
    """
    Load `--model_name_or_path` to continue pretraining it, or build a new `GPTForCausalLM` from the preset/size flags
    and the tokenizer (see [`build_gpt_config`]).

    Args:
        model_args ([`ModelArguments`]): Model flags.
        tokenizer (`PreTrainedTokenizerBase`): The run's tokenizer; must fit the model's vocabulary.
        trust_remote_code (`bool`, defaults to `False`): `--trust_remote_code`, for a Hub checkpoint's own code.

    Returns:
        `PreTrainedModel`: The model, in training-ready float32 unless `--dtype` says otherwise.

    Raises:
        `ValueError`: If the tokenizer has more tokens than the model's embedding table.
    """
    with attn_implementation_errors(model_args.attn_implementation):
        if model_args.model_name_or_path is not None:
            model = from_pretrained(
                AutoModelForCausalLM,
                model_args.model_name_or_path,
                revision=model_args.model_revision,
                dtype=model_args.dtype,
                attn_implementation=model_args.attn_implementation,
                trust_remote_code=trust_remote_code,
                **model_args.config_overrides(),  # dropouts only: shape flags are refused with a checkpoint
            )
        else:
            config = build_gpt_config(model_args, tokenizer)
            model = AutoModelForCausalLM.from_config(config, attn_implementation=model_args.attn_implementation)
    vocab_size = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab_size:
        raise UsageError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding table holds {vocab_size}: pass the "
            f"model's own tokenizer (--tokenizer_name_or_path) or resize with model.resize_token_embeddings."
        )
    return model


def check_pretraining_data_args(data_args: DataArguments) -> None:
    """
    Refuse data flags that pretraining cannot honour, before the data is loaded.

    `--overlong_strategy drop` or `error` is for stages whose examples must fit one sequence (classifier, sft, reward,
    dpo). Pretraining keeps every token: `--packing blocks` cuts the token stream into blocks and `padding_free`
    splits a long document into pieces (and says how many), so no document is over-long.

    Raises:
        `UsageError`: Naming the flag and why it does not apply.
    """
    if data_args.overlong_strategy != "truncate":
        raise UsageError(
            f"--overlong_strategy {data_args.overlong_strategy} does not apply to pretraining: no document is dropped "
            "or refused for its length (--packing blocks cuts the token stream into --block_size blocks; "
            "--packing padding_free splits a document longer than --max_seq_length into pieces and logs how many). "
            "Remove --overlong_strategy."
        )


def pack_for_pretraining(
    dataset: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    *,
    max_length: int,
    packing: str = "blocks",
) -> tuple[DatasetDict, DataCollator]:
    """
    Tokenize a `text` dataset and pack it for next-token prediction.

    Args:
        dataset (`DatasetDict`): Splits with a `text` column (from `hf_llm.data.load_dataset_from_args`).
        tokenizer (`PreTrainedTokenizerBase`): Appends eos to every document so packed documents stay separated.
        data_args (`DataArguments`): `block_size`, `stride` (blocks), `max_seq_length` (padding-free),
            `preprocessing_num_workers`.
        max_length (`int`): The model's context length; blocks and pieces must fit it.
        packing (`str`, defaults to `"blocks"`): `"blocks"` or `"padding_free"` (see `PretrainConfig.packing`).

    Returns:
        `tuple[DatasetDict, DataCollator]`: The packed splits and the collator that batches them.

    Raises:
        `ValueError`: If `--block_size`/`--max_seq_length` exceed the model's context length or a token id does not
            fit the vocabulary.
    """
    tokenized = tokenize_texts(dataset, tokenizer, num_proc=data_args.preprocessing_num_workers)
    if packing == "padding_free":
        piece = data_args.max_seq_length or max_length
        if piece > max_length:
            raise UsageError(
                f"--max_seq_length {piece} exceeds the model's context length ({max_length}); pass "
                f"--max_seq_length {max_length} or less."
            )
        for split, documents in tokenized.items():
            longer = sum(1 for length in map(len, documents["input_ids"]) if length > piece)
            if longer:
                logger.warning(
                    f"{split}: {longer} of {len(documents)} documents are longer than {piece} tokens and are split "
                    "into pieces (pretraining keeps every token)."
                )
        packed = split_documents(tokenized, piece, num_proc=data_args.preprocessing_num_workers)
        collator = padding_free_collator()
    elif packing == "blocks":
        block_size = data_args.block_size or max_length
        if block_size > max_length:
            raise UsageError(
                f"--block_size {block_size} exceeds the model's context length ({max_length}); pass --block_size "
                f"{max_length} or less, or a model with larger --max_position_embeddings."
            )
        if block_size < max_length:
            # hf-llm eval and generation use the whole position table; rows never trained read as noise there.
            logger.warning(
                f"--block_size {block_size} is shorter than the model's context ({max_length}): positions "
                f"{block_size}..{max_length - 1} never train, yet evaluation and generation use them. Pass "
                f"--block_size {max_length} (or build the model with --max_position_embeddings {block_size})."
            )
        # Overlapping windows (stride < block_size) are extra training samples, but evaluation must score each token
        # once, so the overlap is masked out of the labels of every split other than train.
        packed = DatasetDict(
            {
                split: group_texts(
                    dataset,
                    block_size,
                    stride=data_args.stride,
                    mask_overlap=split != "train",
                    num_proc=data_args.preprocessing_num_workers,
                )
                for split, dataset in tokenized.items()
            }
        )
        collator = default_data_collator
    else:
        raise UsageError(f"--packing {packing!r} is unknown; choose 'blocks' or 'padding_free'.")
    check_token_ids(packed, len(tokenizer))
    return packed, collator
