"""The pieces of `train_scripts/pretrain.py` that other entry points (benchmarks, the pipeline) reuse.

Tokenizer: load one, or train a byte-level BPE on the training split. Model: continue from a checkpoint / Hub id, or
build a new `GPTForCausalLM` from a preset. Data: tokenize and pack a `text` dataset for next-token prediction, in
memory or (`--streaming`) on the fly, with [`StreamingPretrainTrainer`] saving and restoring where the stream stands.
"""

from __future__ import annotations

import json
import os
from typing import Any

from accelerate.data_loader import prepare_data_loader
from datasets import Dataset, DatasetDict
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForCausalLM,
    DataCollator,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainingArguments,
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
from hf_llm.data.loading import TextStream
from hf_llm.data.packing import PackedBlockStream, take_blocks
from hf_llm.errors import UsageError
from hf_llm.loading import from_pretrained, tokenizer_from_pretrained
from hf_llm.tokenizer import ALPACA_CHAT_TEMPLATE, PAD_TOKEN, train_tokenizer

from .arguments import ModelArguments, attn_implementation_errors, build_gpt_config
from .checkpointing import AtomicCheckpointTrainer
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
    distinct from eos (GPT-2's) gets `<|pad|>` added, as classification, reward models and PPO need one, and one
    without a chat template gets the Alpaca template (`ALPACA_CHAT_TEMPLATE`), as SFT and its evaluation need one.

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
        if model_args.model_name_or_path is None and tokenizer.chat_template is None:
            # As for a tokenizer trained here and a converted GPT-2 checkpoint: SFT and its evaluation render prompts
            # with the Alpaca template, so the new model's tokenizer carries it from the first save.
            tokenizer.chat_template = ALPACA_CHAT_TEMPLATE
            logger.info(f"Tokenizer {source} had no chat template: set the Alpaca template hf_llm's tokenizers carry.")
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


def _block_size(data_args: DataArguments, max_length: int) -> int:
    """`--block_size` (default: the model's context), refused beyond the context and warned about below it."""
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
    return block_size


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
        block_size = _block_size(data_args, max_length)
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


# ----------------------------------------------------------------------------------------------------------------
# Streaming (--streaming)
# ----------------------------------------------------------------------------------------------------------------


def check_streaming_args(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> None:
    """
    Refuse, before anything is loaded, the flags a streamed pretraining run cannot honour (`--streaming` unset: no-op).

    Raises:
        `UsageError`: Naming the flag and what to pass instead.
    """
    if not data_args.streaming:
        return
    if training_args.max_steps <= 0:
        raise UsageError(
            "--streaming needs --max_steps: a stream has no length, so the run's length (and its learning-rate "
            "schedule) must be given, e.g. --max_steps 1000."
        )
    if getattr(training_args, "packing", "blocks") != "blocks":
        raise UsageError("--packing padding_free does not apply with --streaming, which packs --block_size blocks.")
    if training_args.dataloader_num_workers:
        raise UsageError(
            f"--dataloader_num_workers {training_args.dataloader_num_workers} does not apply with --streaming: the "
            "stream is read in the training process so that every checkpoint records where it stands; pass "
            "--dataloader_num_workers 0."
        )
    if tokenizer_needs_training(model_args):
        raise UsageError(
            "--streaming needs an existing tokenizer (training one would read the whole stream first): pass "
            "--tokenizer_name_or_path or --model_name_or_path."
        )


def stream_for_pretraining(
    stream: TextStream,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    *,
    max_length: int,
    process_index: int = 0,
    num_processes: int = 1,
    with_validation: bool = True,
) -> tuple[PackedBlockStream, Dataset | None]:
    """
    The training stream of this process and the fixed validation set of a streamed pretraining run.

    Each process reads its own share of the training documents (`datasets.distributed.split_dataset_by_node`: whole
    files when their number divides by the processes, else every N-th document) and packs it into `--block_size`
    blocks on the fly. The validation set is the first `--streaming_eval_blocks` blocks of the validation split, or of
    the held-out training documents when the source has none; every process reads the same ones.

    Args:
        stream ([`TextStream`]): From `hf_llm.data.loading.load_text_stream`.
        tokenizer (`PreTrainedTokenizerBase`): Appends eos to every document.
        data_args ([`DataArguments`]): `block_size`, `streaming_eval_blocks`.
        max_length (`int`): The model's context length; blocks must fit it.
        process_index (`int`, defaults to 0): This process's rank.
        num_processes (`int`, defaults to 1): How many processes read the stream.
        with_validation (`bool`, defaults to `True`): Build the validation set (skip it when nothing evaluates).

    Returns:
        `tuple[PackedBlockStream, Dataset | None]`: The training stream and the validation blocks.
    """
    block_size = _block_size(data_args, max_length)
    train_documents = stream.documents("train")
    if num_processes > 1:
        share = "whole files" if train_documents.num_shards % num_processes == 0 else "every N-th document"
        logger.info(
            f"Process {process_index} of {num_processes} reads its own share of {stream.source} ({share}: "
            f"{train_documents.num_shards} files)"
        )
        train_documents = split_dataset_by_node(train_documents, rank=process_index, world_size=num_processes)
    train = PackedBlockStream(
        train_documents,
        tokenizer,
        block_size,
        text_column=stream.text_column,
        hold_out_percentage=stream.hold_out_percentage,
    )
    if not with_validation:
        return train, None
    if "validation" in stream.splits:
        validation = PackedBlockStream(
            stream.documents("validation"), tokenizer, block_size, text_column=stream.text_column, repeat=False
        )
    elif stream.hold_out_percentage > 0:
        validation = PackedBlockStream(
            stream.documents("train"),
            tokenizer,
            block_size,
            text_column=stream.text_column,
            hold_out_percentage=stream.hold_out_percentage,
            keep_held_out=True,
            repeat=False,
        )
    else:
        raise UsageError(
            f"evaluation needs validation data, but {stream.source} has no validation split and "
            "--validation_split_percentage is 0; pass --validation_split_percentage (e.g. 1), "
            "--dataset_validation_split <name>, or --eval_strategy no."
        )
    return train, take_blocks(validation, data_args.streaming_eval_blocks)


STREAM_STATE_NAME = "stream_state_{}.json"


class StreamingPretrainTrainer(AtomicCheckpointTrainer):
    """
    [`AtomicCheckpointTrainer`] training on a [`PackedBlockStream`]: its one concern is the training stream.

    - The stream already holds this process's share of the documents (`split_dataset_by_node`), so its dataloader is
      not sharded again by accelerate (which would split it once more, or have one process read for all).
    - Every checkpoint records where each process's stream stands (`stream_state_<rank>.json`, written next to the
      RNG state of the same rank, inside the atomic save).
    - `train(resume_from_checkpoint=...)` puts every stream back at its recorded position, so the resumed run reads
      exactly the blocks the uninterrupted run would have read, without re-reading the ones before (Trainer's
      default resume skips batches by reading them again: hours of tokenization into a long run). With
      `--ignore_data_skip` the stream starts again from its first document, as Trainer's own flag says.

    The stream is read in the training process (`--dataloader_num_workers 0`), so its position is known at every
    step; the dataloader reads one batch ahead, and the position saved is the one after the last batch trained on.
    """

    train_dataset: PackedBlockStream

    def get_train_dataloader(self) -> DataLoader:
        dataloader = DataLoader(
            self.train_dataset,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            num_workers=0,
            pin_memory=self.args.dataloader_pin_memory,
        )
        # Device placement as accelerate gives it, without its sharding: this process's share is already split off.
        return prepare_data_loader(
            dataloader,
            device=self.accelerator.device,
            num_processes=1,
            process_index=0,
            put_on_device=True,
            dispatch_batches=False,
            non_blocking=self.accelerator.non_blocking,
        )

    def get_resumed_dataloader(self, dataloader: DataLoader, num_batches: int) -> DataLoader:
        # `train` restored the stream to the checkpoint's position: nothing to skip. Check that it is the position
        # Trainer expects (a changed batch size would make them differ).
        position = self.train_dataset.state_dict()["blocks"]
        if position != num_batches * self._train_batch_size:
            raise UsageError(
                f"--resume_from_checkpoint: the stream was saved after {position} blocks, but this run resumes after "
                f"{num_batches} batches of {self._train_batch_size}; resume with the batch size and "
                "--gradient_accumulation_steps of the run that saved it (its recipe.yaml)."
            )
        return dataloader

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        if isinstance(resume_from_checkpoint, str) and not self.args.ignore_data_skip:
            self.train_dataset.load_state_dict(self._read_stream_state(resume_from_checkpoint))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        trained_blocks = self.state.global_step * self.args.gradient_accumulation_steps * self._train_batch_size
        state = {
            "process_index": self.args.process_index,
            "num_processes": self.args.world_size,
            "stream": self.train_dataset.state_after(trained_blocks),
        }
        path = os.path.join(output_dir, STREAM_STATE_NAME.format(self.args.process_index))
        with open(path, "w", encoding="utf-8") as file:
            json.dump(state, file)

    def _read_stream_state(self, checkpoint: str) -> dict:
        path = os.path.join(checkpoint, STREAM_STATE_NAME.format(self.args.process_index))
        if not os.path.isfile(path):
            raise UsageError(
                f"--resume_from_checkpoint {checkpoint} holds no stream position for process "
                f"{self.args.process_index} ({os.path.basename(path)}): it was saved by a run without --streaming or "
                "with fewer processes; resume it the way it was started."
            )
        with open(path, encoding="utf-8") as file:
            state = json.load(file)
        if state["num_processes"] != self.args.world_size:
            raise UsageError(
                f"--resume_from_checkpoint {checkpoint} was saved by {state['num_processes']} processes, each reading "
                f"its own share of the stream; resume it with {state['num_processes']} processes, not "
                f"{self.args.world_size}."
            )
        return state["stream"]
