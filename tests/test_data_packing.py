"""Tokenizing, fixed-length blocks with stride, padding-free packing, token-id and length checks."""

import logging

import pytest
import torch
from datasets import Dataset, DatasetDict

from hf_llm.data import (
    DataError,
    apply_overlong_strategy,
    check_token_ids,
    count_overlong,
    group_texts,
    padding_free_collator,
    split_documents,
    tokenize_texts,
)


def _ids(*docs):
    return Dataset.from_dict({"input_ids": [list(d) for d in docs]})


def test_tokenize_texts_appends_eos_and_drops_other_columns(tiny_tokenizer):
    ds = Dataset.from_dict({"text": ["hello world", "def add(a, b):"], "other": [1, 2]})
    out = tokenize_texts(ds, tiny_tokenizer)
    assert out.column_names == ["input_ids"]
    for text, ids in zip(ds["text"], out["input_ids"], strict=True):
        assert ids[-1] == tiny_tokenizer.eos_token_id
        assert tiny_tokenizer.decode(ids[:-1]) == text
    with pytest.raises(DataError, match="column 'body' not found.*--text_column"):
        tokenize_texts(ds, tiny_tokenizer, text_column="body")


def test_group_texts_blocks_cover_the_stream():
    ds = _ids(range(0, 7), range(7, 17), range(17, 20))  # a stream 0..19
    out = group_texts(ds, block_size=6)
    assert out["input_ids"] == [list(range(0, 6)), list(range(6, 12)), list(range(12, 18))]
    assert out["labels"] == out["input_ids"]  # the model shifts labels itself


def test_group_texts_stride_gives_overlapping_windows():
    ds = _ids(range(20))
    out = group_texts(ds, block_size=8, stride=4)
    assert out["input_ids"] == [list(range(s, s + 8)) for s in (0, 4, 8, 12)]
    masked = group_texts(ds, block_size=8, stride=4, mask_overlap=True)
    assert masked["labels"][0] == list(range(8))
    assert masked["labels"][1] == [-100] * 4 + list(range(8, 12))
    # Every token is scored exactly once with mask_overlap.
    scored = [t for row in masked["labels"] for t in row if t != -100]
    assert scored == list(range(20))


def test_group_texts_reports_dropped_tail(caplog):
    with caplog.at_level(logging.INFO, logger="hf_llm.data.packing"):
        group_texts(_ids(range(10)), block_size=4)
    assert "packed 10 tokens into 2 blocks of 4" in caplog.text and "2 tokens (20.00%)" in caplog.text
    with pytest.raises(DataError, match="fewer than one block of 64"):
        group_texts(_ids(range(10)), block_size=64)
    with pytest.raises(DataError, match="--stride must be between 1 and --block_size"):
        group_texts(_ids(range(10)), block_size=4, stride=5)


def test_group_texts_works_per_split_and_with_two_processes():
    docs = [list(range(i, i + 13)) for i in range(0, 400, 13)]
    ds = DatasetDict({"train": _ids(*docs), "validation": _ids(*docs[:5])})
    one = group_texts(ds, block_size=16, batch_size=8)
    two = group_texts(ds, block_size=16, batch_size=8, num_proc=2)
    assert set(one) == {"train", "validation"}
    assert one["train"]["input_ids"] == two["train"]["input_ids"]
    assert all(len(row) == 16 for row in one["train"]["input_ids"])


def test_split_documents_keeps_every_token():
    ds = _ids(range(10), range(10, 13))
    out = split_documents(ds, max_length=4)
    assert out["input_ids"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10, 11, 12]]


def test_padding_free_collator_restarts_positions():
    batch = padding_free_collator()([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]
    assert "attention_mask" not in batch


@pytest.mark.parametrize("position_embedding_type", ["learned", "rope"])
def test_padding_free_batch_matches_separate_documents(position_embedding_type):
    """Packed documents must not attend to each other: the packed forward equals each document's own forward."""
    from hf_llm import GPTConfig, GPTForCausalLM

    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        position_embedding_type=position_embedding_type,
    )
    model = GPTForCausalLM(config).eval()
    docs = [[3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14]]
    batch = padding_free_collator()([{"input_ids": d} for d in docs])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        separate = torch.cat([model(input_ids=torch.tensor([d]), use_cache=False).logits[0] for d in docs])
    torch.testing.assert_close(packed, separate, atol=1e-5, rtol=1e-4)
    # And the loss of the packed batch skips the document boundaries.
    with torch.no_grad():
        loss = model(**batch, use_cache=False).loss
    assert torch.isfinite(loss)


def test_check_token_ids():
    ds = DatasetDict({"train": _ids([1, 2, 3], [4, 5]), "validation": _ids([1, 99])})
    assert check_token_ids(ds["train"], vocab_size=6) == 5
    with pytest.raises(
        DataError, match=r"token id 99 in split 'validation', example 0 .*\[0, 50\).*resize_token_embeddings"
    ):
        check_token_ids(ds, vocab_size=50)
    with pytest.raises(DataError, match="token id -1"):
        check_token_ids(_ids([0, -1]), vocab_size=50)


def test_overlong_examples_truncated_dropped_or_refused():
    ds = Dataset.from_dict({"input_ids": [[1] * 3, [2] * 8, [3] * 5], "attention_mask": [[1] * 3, [1] * 8, [1] * 5]})
    assert count_overlong(ds, 4) == 2
    truncated = apply_overlong_strategy(ds, 4, "truncate")
    assert [len(x) for x in truncated["input_ids"]] == [3, 4, 4]
    assert [len(x) for x in truncated["attention_mask"]] == [3, 4, 4]
    dropped = apply_overlong_strategy(ds, 4, "drop")
    assert dropped["input_ids"] == [[1] * 3]
    with pytest.raises(DataError, match=r"2 of 3 examples \(66.7%\) are longer than --max_seq_length 4 \(longest: 8"):
        apply_overlong_strategy(ds, 4, "error")
    assert apply_overlong_strategy(ds, 8, "error") is ds
    split = apply_overlong_strategy(DatasetDict({"train": ds}), 4, "drop")
    assert len(split["train"]) == 1


def test_one_overlong_policy_counts_in_the_same_words_and_truncates_where_the_stage_says(caplog):
    from hf_llm.data.validation import OverlongReport, handle_overlong

    ds = Dataset.from_dict({"input_ids": [[1, 2, 3], [1, 2, 3, 4, 5], [1, 2, 3, 4]]})
    lengths = [len(ids) for ids in ds["input_ids"]]

    def keep_the_end(rows):
        return rows.map(lambda b: {"input_ids": [ids[-4:] for ids in b["input_ids"]]}, batched=True)

    with caplog.at_level("WARNING", logger="hf_llm"):
        report = OverlongReport("prompts", "4 tokens", "shorten them", split="train")
        kept = handle_overlong(ds, lengths, 4, "truncate", report, truncate=keep_the_end, kept="their last tokens")
    # Only length > limit is over-long (4 tokens fit a limit of 4), and truncation keeps what the stage says.
    assert kept["input_ids"] == [[1, 2, 3], [2, 3, 4, 5], [1, 2, 3, 4]]
    assert "split 'train': 1 of 3 prompts (33.3%) are longer than 4 tokens (longest: 5 tokens; first: row 1)" in (
        caplog.text
    )
    assert "truncated them to their last tokens" in caplog.text
    dropped = handle_overlong(ds, lengths, 4, "drop", report)
    assert dropped["input_ids"] == [[1, 2, 3], [1, 2, 3, 4]]
    with pytest.raises(DataError, match=r"1 of 3 prompts \(33.3%\) are longer than 4 tokens.*--overlong_strategy"):
        handle_overlong(ds, lengths, 4, "error", report)
