"""Loaders: every local format, column mapping, splits, and one clear error for each kind of bad input."""

import json

import pytest
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import HfArgumentParser, TrainingArguments

from hf_llm.data import DataArguments, DataError, check_utf8, dataset_fingerprint, load_formatted_dataset

ROWS = [
    {"text": f"example number {i} about topic {i % 3}", "label": ["neg", "pos", "mixed"][i % 3]} for i in range(30)
]


def _write(path, fmt, rows):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        keys = list(rows[0])
        path.write_text(sep.join(keys) + "\n" + "".join(sep.join(str(r[k]) for k in keys) + "\n" for r in rows))
    elif fmt == "parquet":
        Dataset.from_list(rows).to_parquet(str(path))
    return path


@pytest.fixture(params=["jsonl", "json", "csv", "tsv", "parquet"])
def labeled_file(request, tmp_path):
    return _write(tmp_path / f"data.{request.param}", request.param, ROWS)


def test_every_format_loads_for_classification(labeled_file):
    ds = load_formatted_dataset(str(labeled_file), "classification", validation_split_percentage=20)
    assert set(ds) == {"train", "validation"}
    assert ds["train"].column_names == ["text", "label"]
    assert ds["train"].features["label"] == ClassLabel(names=["mixed", "neg", "pos"])
    assert len(ds["train"]) + len(ds["validation"]) == len(ROWS)
    assert len(ds["validation"]) == 6
    # Labels are encoded through the class names, not reordered.
    names = ds["train"].features["label"].names
    by_text = {r["text"]: r["label"] for r in ROWS}
    for row in ds["train"]:
        assert names[row["label"]] == by_text[row["text"]]


def test_txt_file_sampled_by_paragraph_and_line(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("First paragraph,\nstill first.\n\nSecond one.\n\n\nThird one.\n")
    ds = load_formatted_dataset(str(path), "text", validation_split_percentage=0)
    assert sorted(ds["train"]["text"]) == ["First paragraph,\nstill first.", "Second one.", "Third one."]
    lines = load_formatted_dataset(str(path), "text", validation_split_percentage=0, text_sample_by="line")
    # Blank lines are empty texts: dropped, and counted in the log.
    assert sorted(lines["train"]["text"]) == ["First paragraph,", "Second one.", "Third one.", "still first."]


def test_folder_with_named_splits(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    _write(folder / "train.jsonl", "jsonl", ROWS[:20])
    _write(folder / "dev.jsonl", "jsonl", ROWS[20:25])
    _write(folder / "test.jsonl", "jsonl", ROWS[25:])
    (folder / ".hidden.jsonl").write_text("not json")
    ds = load_formatted_dataset(str(folder), "classification")
    assert {k: len(v) for k, v in ds.items()} == {"train": 20, "validation": 5, "test": 5}
    assert ds["test"].features["label"] == ds["train"].features["label"]


def test_folder_of_txt_files_is_one_train_split(tmp_path):
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text(f"document {i}")
    ds = load_formatted_dataset(str(tmp_path), "text", validation_split_percentage=0)
    assert sorted(ds["train"]["text"]) == ["document 0", "document 1", "document 2"]


def test_column_flags_map_source_columns(tmp_path):
    rows = [{"review": f"text {i}", "stars": i % 2, "id": i} for i in range(10)]
    path = _write(tmp_path / "reviews.jsonl", "jsonl", rows)
    ds = load_formatted_dataset(str(path), "classification", text_column="review", label_column="stars")
    assert ds["train"].column_names == ["text", "label"]
    assert ds["train"].features["label"].names == ["0", "1"]


def test_missing_column_error_lists_columns_and_flag(tmp_path):
    path = _write(tmp_path / "reviews.jsonl", "jsonl", [{"review": "a", "stars": 1}] * 4)
    with pytest.raises(
        ValueError, match=r"column 'text' not found .*reviews.jsonl.*\['review', 'stars'\].*--text_column"
    ):
        load_formatted_dataset(str(path), "classification")
    with pytest.raises(ValueError, match=r"--text_column body: column 'body' not found.*\['review', 'stars'\]"):
        load_formatted_dataset(str(path), "classification", text_column="body", label_column="stars")


def test_instruction_columns_and_optional_input(tmp_path):
    rows = [{"instruction": f"Do {i}", "output": f"Done {i}"} for i in range(5)]
    path = _write(tmp_path / "alpaca.json", "json", rows)
    ds = load_formatted_dataset(str(path), "instruction", validation_split_percentage=0)
    assert ds["train"].column_names == ["instruction", "input", "output"]
    assert ds["train"]["input"] == [""] * 5
    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 3
    ds = load_formatted_dataset(str(_write(tmp_path / "chat.jsonl", "jsonl", chat)), "instruction")
    assert ds["train"].column_names == ["messages"]
    assert ds["train"][0]["messages"][1]["content"] == "hello"


def test_preference_columns(tmp_path):
    rows = [{"question": f"q{i}", "good": f"a{i}", "bad": f"b{i}", "meta": 1} for i in range(6)]
    path = _write(tmp_path / "pairs.jsonl", "jsonl", rows)
    ds = load_formatted_dataset(
        str(path), "preference", prompt_column="question", chosen_column="good", rejected_column="bad"
    )
    assert ds["train"].column_names == ["prompt", "chosen", "rejected"]
    with pytest.raises(ValueError, match="column 'chosen' not found.*--chosen_column"):
        load_formatted_dataset(str(path), "preference")


def test_empty_inputs_raise(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.jsonl is empty"):
        load_formatted_dataset(str(empty), "text")
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "notes.md").write_text("x")
    with pytest.raises(ValueError, match="no data files in folder"):
        load_formatted_dataset(str(folder), "text")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n\n")
    with pytest.raises(ValueError, match="no non-empty"):
        load_formatted_dataset(str(blank), "text", text_sample_by="line")


def test_missing_path_and_unreachable_hub_id():
    with pytest.raises(DataError, match="--dataset_name ./missing.jsonl: no such file"):
        load_formatted_dataset("./missing.jsonl", "text")
    # Tests run offline: a Hub id fails with one message that says what --dataset_name accepts.
    with pytest.raises(ValueError, match="could not load dataset 'someone/not-here'.*pydocs"):
        load_formatted_dataset("someone/not-here", "text")


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv"])
def test_non_utf8_names_file_and_offset_and_replace_works(tmp_path, fmt):
    good = {"txt": b"good line\n", "jsonl": b'{"text": "good"}\n', "csv": b"text\ngood\n"}[fmt]
    bad = {"txt": b"caf\xe9 line\n", "jsonl": b'{"text": "caf\xe9"}\n', "csv": b"caf\xe9\n"}[fmt]
    path = tmp_path / f"latin1.{fmt}"
    path.write_bytes(good + bad)
    offset = len(good) + bad.index(b"\xe9")
    with pytest.raises(
        ValueError,
        match=rf"latin1.{fmt} is not valid UTF-8: byte 0xe9 at byte offset {offset}.*--encoding_errors replace",
    ):
        load_formatted_dataset(str(path), "text", validation_split_percentage=0)
    ds = load_formatted_dataset(str(path), "text", validation_split_percentage=0, encoding_errors="replace")
    assert any("caf\ufffd" in text for text in ds["train"]["text"])


def test_check_utf8_offset_across_chunk_boundary(tmp_path):
    # A valid 3-byte character cut by the chunk boundary, then a bad byte: offsets must count from the file start.
    data = b"ab" + "\u20ac".encode() + b"xyz" + b"\xff" + b"tail"
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    bad_offset = data.index(b"\xff")
    for chunk_size in (1, 2, 3, 4, 1024):
        with pytest.raises(ValueError, match=f"byte offset {bad_offset}"):
            check_utf8(path, chunk_size=chunk_size)
    path.write_bytes(b"ab" + "\u20ac".encode())
    check_utf8(path, chunk_size=3)


def test_labels_outside_class_set(tmp_path):
    path = _write(tmp_path / "train.jsonl", "jsonl", ROWS)
    with pytest.raises(
        ValueError, match=r"labels \['mixed'\] .*outside the class set \['neg', 'pos'\].*--class_names"
    ):
        load_formatted_dataset(str(path), "classification", class_names=["neg", "pos"])
    folder = tmp_path / "split"
    folder.mkdir()
    _write(folder / "train.jsonl", "jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    _write(folder / "validation.jsonl", "jsonl", [{"text": "c", "label": "z"}])
    with pytest.raises(ValueError, match=r"labels \['z'\] in .* \(split 'validation'\) are outside the class set"):
        load_formatted_dataset(str(folder), "classification")
    negative = _write(tmp_path / "neg.jsonl", "jsonl", [{"text": "a", "label": -1}, {"text": "b", "label": 1}])
    with pytest.raises(ValueError, match="label -1 .* is negative"):
        load_formatted_dataset(str(negative), "classification")


@pytest.mark.parametrize(("class_names", "problem"), [(["pos"], "names a single class"), (["pos", "pos"], "repeats")])
def test_bad_class_names_are_named_as_the_flags_fault(tmp_path, class_names, problem):
    from hf_llm.errors import UsageError

    path = _write(tmp_path / "train.jsonl", "jsonl", ROWS)
    with pytest.raises(UsageError, match=f"--class_names {' '.join(class_names)} {problem}"):
        load_formatted_dataset(str(path), "classification", class_names=class_names)


def test_class_names_fix_the_label_order(tmp_path):
    path = _write(tmp_path / "train.jsonl", "jsonl", ROWS)
    ds = load_formatted_dataset(str(path), "classification", class_names=["pos", "neg", "mixed"])
    assert ds["train"].features["label"].names == ["pos", "neg", "mixed"]
    names = ds["train"].features["label"].names
    by_text = {r["text"]: r["label"] for r in ROWS}
    assert all(names[r["label"]] == by_text[r["text"]] for r in ds["validation"])


def test_sample_limits_and_unknown_options(tmp_path):
    path = _write(tmp_path / "train.jsonl", "jsonl", ROWS)
    ds = load_formatted_dataset(str(path), "classification", max_train_samples=4, max_eval_samples=2)
    assert (len(ds["train"]), len(ds["validation"])) == (4, 2)
    with pytest.raises(TypeError, match="unknown options \\['txt_column'\\]"):
        load_formatted_dataset(str(path), "text", txt_column="x")
    with pytest.raises(ValueError, match="unknown data format 'pretraining'"):
        load_formatted_dataset(str(path), "pretraining")


def test_missing_split_names_flag(tmp_path):
    path = _write(tmp_path / "train.jsonl", "jsonl", ROWS)
    with pytest.raises(
        ValueError, match=r"split 'dev' not found .*splits are \['train'\].*--dataset_validation_split"
    ):
        load_formatted_dataset(str(path), "text", dataset_validation_split="dev")


def test_fingerprint_tracks_content(tmp_path):
    a = load_formatted_dataset(str(_write(tmp_path / "a.jsonl", "jsonl", ROWS)), "text")
    a2 = load_formatted_dataset(str(tmp_path / "a.jsonl"), "text")
    b = load_formatted_dataset(str(_write(tmp_path / "b.jsonl", "jsonl", ROWS[:-1])), "text")
    assert dataset_fingerprint(a) == dataset_fingerprint(a2)
    assert dataset_fingerprint(a) != dataset_fingerprint(b)
    assert isinstance(a, DatasetDict)


def test_data_arguments_parse_next_to_trainer_and_trl_configs(tmp_path):
    from trl import RewardConfig, SFTConfig

    for config_cls in (TrainingArguments, SFTConfig, RewardConfig):
        parser = HfArgumentParser((DataArguments, config_cls))
        data_args, _ = parser.parse_args_into_dataclasses(
            [
                "--dataset_name",
                "x.csv",
                "--class_names",
                "neg",
                "pos",
                "--output_dir",
                str(tmp_path),
                "--bf16",
                "False",
            ]
        )
        assert data_args.class_names == ["neg", "pos"]
    assert DataArguments(text_column="body", chosen_column="good").column_mapping() == {
        "text": "body",
        "chosen": "good",
    }
    with pytest.raises(ValueError, match="--overlong_strategy must be one of"):
        DataArguments(overlong_strategy="skip")
    with pytest.raises(ValueError, match="--stride 8 is larger than --block_size 4"):
        DataArguments(block_size=4, stride=8)
    with pytest.raises(ValueError, match="--encoding_errors"):
        DataArguments(encoding_errors="ignore")


# ---- preference formats as they are published ----
def test_anthropic_hh_dialogues_become_prompt_chosen_rejected_messages():
    from hf_llm.data.formatting import preference_conversation

    row = {
        "chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: 6.",
        "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: No idea.",
    }
    assert preference_conversation(row) == {
        "prompt": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": "And 3+3?"},
        ],
        "chosen": [{"role": "assistant", "content": "6."}],
        "rejected": [{"role": "assistant", "content": "No idea."}],
    }


def test_conversation_pairs_split_at_their_last_turn_and_differing_prompts_are_refused():
    from hf_llm.data.formatting import preference_conversation

    user = {"role": "user", "content": "Name a prime."}
    row = {
        "chosen": [user, {"role": "assistant", "content": "7"}],
        "rejected": [user, {"role": "assistant", "content": "8"}],
    }
    assert preference_conversation(row) == {
        "prompt": [user],
        "chosen": [{"role": "assistant", "content": "7"}],
        "rejected": [{"role": "assistant", "content": "8"}],
    }
    other = {"role": "user", "content": "Name an even number."}
    with pytest.raises(
        ValueError, match="prompts differ: chosen opens 'user: Name a prime.', rejected opens 'user: Name an"
    ):
        preference_conversation({**row, "rejected": [other, {"role": "assistant", "content": "8"}]})
    with pytest.raises(ValueError, match="prompts differ"):  # HH dialogues whose human turns differ
        preference_conversation(
            {"chosen": "\n\nHuman: A?\n\nAssistant: x", "rejected": "\n\nHuman: B?\n\nAssistant: y"}
        )


def test_a_bad_preference_pair_is_named_by_its_file_and_line_whatever_the_hold_out(tmp_path):
    """The validation hold-out shuffles rows, and blank lines are skipped: the message still names the file's own line
    (the held-out suite once read "split 'train', row 47" for line 18)."""
    good = [{"prompt": f"Q{i}?", "chosen": "A.", "rejected": "B."} for i in range(30)]
    lines = [json.dumps(row) for row in good[:10]] + ["", "   "] + [json.dumps(row) for row in good[10:]]
    lines.insert(20, json.dumps({"prompt": "Q?", "chosen": "Same.", "rejected": "Same."}))  # line 21
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"^{jsonl}, line 21: chosen and rejected are identical"):
        load_formatted_dataset(str(jsonl), "preference", validation_split_percentage=20)

    # CSV: a quoted answer spanning two lines moves every later record down one line.
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text('prompt,chosen,rejected\nQ1?,"two\nlines",B.\nQ2?,A.,B.\nQ3?,,\nQ4?,Same.,Same.\n')
    with pytest.raises(DataError, match=rf"^{csv_file}, line 6: chosen and rejected are identical"):
        load_formatted_dataset(str(csv_file), "preference", validation_split_percentage=0)

    # A folder of parquet files has no lines: the split and the row in the source's order.
    folder = tmp_path / "parquet"
    folder.mkdir()
    Dataset.from_list(good[:3] + [{"prompt": "Q?", "chosen": "Same.", "rejected": "Same."}]).to_parquet(
        folder / "train.parquet"
    )
    with pytest.raises(DataError, match=rf"^{folder} \(split 'train', row 3\): chosen and rejected are identical"):
        load_formatted_dataset(str(folder), "preference")
