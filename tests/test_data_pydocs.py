"""The bundled `pydocs` corpus: four tasks, clean splits, balanced classes, deterministic, cached."""

import collections
import inspect
import json

import pytest

from hf_llm.data import DataError, hf_llm_cache_dir, load_formatted_dataset, load_pydocs, pydocs_dir, pydocs_manifest
from hf_llm.data.pydocs import build_pydocs_records

TASK_COLUMNS = {
    "text": ["text", "source"],
    "classification": ["text", "label", "source"],
    "instruction": ["instruction", "input", "output", "source"],
    "preference": ["prompt", "chosen", "rejected", "rejected_kind", "source"],
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_llm_cache")


@pytest.mark.parametrize("task", list(TASK_COLUMNS))
def test_every_task_has_three_disjoint_splits(cache_dir, task):
    ds = load_pydocs(task, cache_dir=cache_dir)
    assert list(ds) == ["train", "validation", "test"]
    for split in ds.values():
        assert split.column_names == TASK_COLUMNS[task]
        assert len(split) > 0
    key = {"text": "text", "classification": "text", "instruction": "instruction", "preference": "prompt"}[task]
    train, test, validation = (set(ds[s][key]) for s in ("train", "test", "validation"))
    assert not train & test and not train & validation and not validation & test
    if task in ("instruction", "preference"):
        answer = "output" if task == "instruction" else "chosen"
        assert not set(ds["train"][answer]) & set(ds["test"][answer])


def test_splits_follow_modules_and_topics(cache_dir):
    manifest = pydocs_manifest(cache_dir)
    ds = load_pydocs("text", cache_dir=cache_dir)
    for split, rows in ds.items():
        assert all(manifest["split_of_unit"][source] == split for source in rows["source"])
    # Classification items come from modules in the same split as their module's document.
    cls = load_pydocs("classification", cache_dir=cache_dir)
    units = set(manifest["split_of_unit"])
    for split, rows in cls.items():
        for qualname in rows["source"][:200]:
            module = max((u for u in units if qualname == u or qualname.startswith(u + ".")), key=len)
            assert manifest["split_of_unit"][module] == split


def test_classification_classes_are_named_and_balanced(cache_dir):
    ds = load_pydocs("classification", cache_dir=cache_dir)
    names = ds["train"].features["label"].names
    assert 4 <= len(names) <= 8
    counts = collections.Counter(label for split in ds.values() for label in split["label"])
    total = sum(counts.values())
    assert set(counts) == set(range(len(names)))
    assert min(counts.values()) / total >= 0.05
    assert set(ds["test"]["label"]) == set(range(len(names)))


def test_preference_pairs_differ(cache_dir):
    ds = load_pydocs("preference", cache_dir=cache_dir)
    for split in ds.values():
        assert all(c != r for c, r in zip(split["chosen"], split["rejected"], strict=True))


def test_instruction_examples_read_like_alpaca(cache_dir):
    ds = load_pydocs("instruction", cache_dir=cache_dir)
    rows = [r for split in ds.values() for r in split]
    by_instruction = {r["instruction"]: r for r in rows}
    assert any(i.startswith("Explain the `with` statement") for i in by_instruction)
    assert any(r["input"] for r in rows) and any(not r["input"] for r in rows)
    assert all(r["output"].strip() for r in rows)


def test_build_is_deterministic_and_cached(cache_dir, monkeypatch):
    _, first = build_pydocs_records()
    # What the calling process imports or patches (torch replaces inspect.getfile) must not change the corpus.
    monkeypatch.setattr(inspect, "getfile", lambda obj: "patched")
    _, second = build_pydocs_records()
    assert first["fingerprint"] == second["fingerprint"]
    path = pydocs_dir(cache_dir)
    stamp = (path / "manifest.json").stat().st_mtime_ns
    assert pydocs_dir(cache_dir) == path and (path / "manifest.json").stat().st_mtime_ns == stamp
    assert json.loads((path / "manifest.json").read_text())["fingerprint"] == first["fingerprint"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_LLM_CACHE", str(tmp_path / "c"))
    assert hf_llm_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HF_LLM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_llm_cache_dir() == tmp_path / "xdg" / "hf_llm"


def test_load_formatted_dataset_pydocs_drops_source(cache_dir, monkeypatch):
    monkeypatch.setenv("HF_LLM_CACHE", str(cache_dir))
    ds = load_formatted_dataset("pydocs", "classification", max_train_samples=10)
    assert ds["train"].column_names == ["text", "label"] and len(ds["train"]) == 10
    with pytest.raises(DataError, match="unknown data format 'sft'"):
        load_pydocs("sft", cache_dir=cache_dir)


def test_preference_rejected_kinds(cache_dir):
    from hf_llm.data.pydocs import REJECTED_KINDS

    rows = list(load_pydocs("preference", cache_dir=cache_dir)["train"])
    assert {r["rejected_kind"] for r in rows} == set(REJECTED_KINDS)
    for r in rows:
        if r["rejected_kind"] == "truncated":
            # a prefix of the answer, word for word (the cut joins words with single spaces)
            assert len(r["rejected"]) < len(r["chosen"]) and " ".join(r["chosen"].split()).startswith(r["rejected"])
        if r["rejected_kind"] == "other_answer":
            assert r["rejected"] != r["chosen"]
        if r["rejected_kind"] == "repetitive":
            # the answer's opening, then a 2-4 word phrase looped at least 4 times in a row
            assert r["rejected"].endswith(".") and not r["rejected"].endswith("..")
            words = [word.rstrip(".") for word in r["rejected"].split()]
            assert words[0] == r["chosen"].split()[0]
            assert any(words[-n:] * 4 == words[-4 * n :] for n in (1, 2, 3, 4) if len(words) >= 4 * n), r["rejected"]
