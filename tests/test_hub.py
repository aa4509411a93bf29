"""Sharing on the Hub, against the Hub-compatible server in tests/hub_server.py (DESIGN §7).

What is pushed (by `hf_llm.hub.push_output_dir`, by transformers' `push_to_hub`, by `train_scripts/pretrain.py`)
loads back from the server with equal logits: through the Auto classes, through `trust_remote_code=True` in a process
where hf_llm cannot be imported, through `GPTForCausalLM.from_gpt2` and through the evaluation code that takes a repo
id. Model cards carry front matter and metrics; missing repos and flags fail with errors that name them.
"""

import os
import textwrap

import pytest
import torch
from conftest import TINY_PRETRAIN_ARGS, run_without_hf_llm, tiny_gpt_config
from hub_server import git_blob_sha, patch_hub_env
from huggingface_hub import HfApi, ModelCard, hf_hub_download, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from hf_llm import GPTForCausalLM
from hf_llm.evaluation import compute_perplexity, load_metric
from hf_llm.hub import create_model_card, push_output_dir
from hf_llm.loading import load_model_for_evaluation

REPO_ID = "tester/tiny-gpt"
TEXTS = ["def add(a, b):\n    return a + b", "The quick brown fox jumps over the lazy dog."]
METRICS = {"eval_loss": 2.25, "eval_perplexity": 9.4877, "train_runtime": 3.5}
RECIPE = {"ModelArguments": {"hidden_size": 32}, "PretrainConfig": {"learning_rate": 0.003, "hub_token": "SECRET"}}


def tiny_gpt(tokenizer) -> GPTForCausalLM:
    torch.manual_seed(0)
    return GPTForCausalLM(tiny_gpt_config(tokenizer, vocab_size=320)).eval()  # the 300-token tokenizer, padded


def encode(tokenizer, text: str = TEXTS[0]) -> torch.Tensor:
    return tokenizer(text, return_tensors="pt").input_ids


@pytest.fixture
def hub(hub_server, monkeypatch):
    """The server's URL, with this process's huggingface_hub/transformers pointed at it for the test."""
    url, env = hub_server
    patch_hub_env(monkeypatch, env)
    return url


@pytest.fixture(scope="module")
def pushed_gpt(hub_server, tiny_tokenizer, tmp_path_factory):
    """A tiny GPT + tokenizer saved with a model card and pushed to REPO_ID by `push_output_dir`."""
    url, env = hub_server
    output_dir = tmp_path_factory.mktemp("pushed") / "tiny-gpt"
    model = tiny_gpt(tiny_tokenizer)
    model.save_pretrained(output_dir)
    tiny_tokenizer.save_pretrained(output_dir)
    # What a training run leaves next to the final model and must not be pushed.
    (output_dir / "checkpoint-5").mkdir()
    (output_dir / "checkpoint-5" / "model.safetensors").write_bytes(b"stale")
    (output_dir / "runs").mkdir()
    (output_dir / "runs" / "events.out.tfevents").write_bytes(b"tb")
    create_model_card(
        output_dir,
        stage="pretrain",
        dataset_name="tester/tiny-corpus",
        metrics=METRICS,
        recipe=RECIPE,
        tags=["tiny"],
        hub_model_id=REPO_ID,
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        patch_hub_env(monkeypatch, env)
        repo_url = push_output_dir(output_dir, REPO_ID)
    return model, output_dir, repo_url


# ---------------------------------------------------------------------------------------------------------------
# The server itself speaks the protocol huggingface_hub expects


def test_server_create_exists_private_and_missing_entries(hub):
    api = HfApi()
    assert api.whoami()["name"] == "tester"
    url = api.create_repo("tester/private-one", private=True)
    assert url == f"{hub}/tester/private-one" and url.repo_id == "tester/private-one"
    assert api.create_repo("tester/private-one", exist_ok=True) == url  # 409 + exist_ok
    with pytest.raises(Exception, match="409"):
        api.create_repo("tester/private-one")
    assert api.model_info("tester/private-one").private is True
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data/train.csv", repo_id="tester/private-one")
    first = api.model_info("tester/private-one").sha
    # A commit sha resolves as well as the branch name (snapshot_download needs both).
    path = hf_hub_download("tester/private-one", "data/train.csv", revision=first)
    assert open(path, "rb").read() == b"a,b\n1,2\n"
    api.delete_file("data/train.csv", repo_id="tester/private-one")
    assert api.list_repo_files("tester/private-one") == [".gitattributes"]
    assert "data/train.csv" in api.list_repo_files("tester/private-one", revision=first)
    api.create_repo("tester/corpus", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="train.txt", repo_id="tester/corpus", repo_type="dataset")
    assert api.dataset_info("tester/corpus").siblings[-1].rfilename == "train.txt"
    assert open(hf_hub_download("tester/corpus", "train.txt", repo_type="dataset")).read() == "hello\n"


def test_server_head_has_no_body_and_the_metadata_headers(hub):
    import http.client

    api = HfApi()
    api.create_repo("tester/head")
    api.upload_file(path_or_fileobj=b"x" * 10, path_in_repo="f.bin", repo_id="tester/head")
    connection = http.client.HTTPConnection(hub.removeprefix("http://"))
    connection.request("HEAD", "/tester/head/resolve/main/f.bin")
    response = connection.getresponse()
    assert response.status == 200 and response.read() == b""
    assert response.headers["Content-Length"] == "10"
    assert response.headers["X-Repo-Commit"] == api.model_info("tester/head").sha
    assert response.headers["ETag"] == f'"{git_blob_sha(b"x" * 10)}"'  # a regular file's git blob id
    connection.request("HEAD", "/tester/head/resolve/main/missing.bin")
    response = connection.getresponse()
    assert response.status == 404 and response.headers["X-Error-Code"] == "EntryNotFound" and response.read() == b""
    connection.request("GET", "/api/models/tester/nope/revision/main")
    response = connection.getresponse()
    assert response.status == 404 and response.headers["X-Error-Code"] == "RepoNotFound" and response.read()
    connection.close()


# ---------------------------------------------------------------------------------------------------------------
# push_output_dir + create_model_card


def test_push_output_dir_uploads_model_code_tokenizer_and_card_but_not_checkpoints(pushed_gpt, hub):
    _, _, repo_url = pushed_gpt
    assert repo_url == f"{hub}/{REPO_ID}"
    files = HfApi().list_repo_files(REPO_ID)
    for name in ("config.json", "model.safetensors", "configuration_gpt.py", "modeling_gpt.py", "tokenizer.json"):
        assert name in files
    assert "README.md" in files
    assert not [f for f in files if f.startswith(("checkpoint-", "runs/"))], files


def test_pushed_gpt_loads_with_remote_code_where_hf_llm_cannot_be_imported(pushed_gpt, hub_server, tmp_path):
    model, _, _ = pushed_gpt
    _, env = hub_server
    input_ids = encode(AutoTokenizer.from_pretrained(pushed_gpt[1]))
    torch.save({"input_ids": input_ids, "logits": model(input_ids).logits}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({REPO_ID!r}, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained({REPO_ID!r})
        assert "hf_llm" not in type(model).__module__, type(model).__module__
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        input_ids = tokenizer({TEXTS[0]!r}, return_tensors="pt").input_ids
        assert torch.equal(input_ids, expected["input_ids"]), (input_ids, expected["input_ids"])
        assert torch.allclose(model(input_ids).logits, expected["logits"], atol=1e-6)
        print("REMOTE_OK", type(model).__name__, model.config._name_or_path)
        """
    )
    subprocess_env = {**os.environ, **env, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = run_without_hf_llm(script, subprocess_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"REMOTE_OK GPTForCausalLM {REPO_ID}" in result.stdout


def test_model_card_has_front_matter_metrics_and_recipe(pushed_gpt, hub):
    card = ModelCard.load(REPO_ID)
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "text-generation"
    assert card.data.tags[:3] == ["hf_llm", "pretrain", "custom_code"] and "tiny" in card.data.tags
    assert card.data.datasets == ["tester/tiny-corpus"]
    assert f'AutoModelForCausalLM.from_pretrained("{REPO_ID}", trust_remote_code=True)' in card.text
    assert "| eval_perplexity | 9.4877 |" in card.text and "| eval_loss | 2.2500 |" in card.text
    assert "learning_rate: 0.003" in card.text and "SECRET" not in card.text
    assert "| hidden size | 32 |" in card.text
    assert "## Requirements\n\n`transformers<6,>=5.24`" in card.text


def test_model_card_keeps_local_paths_out_of_front_matter_and_describes_adapters(tmp_path, pretrain_text_file):
    local_base = tmp_path / "base"
    local_base.mkdir()
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    (adapter_dir / "adapter_config.json").write_text(f'{{"base_model_name_or_path": "{local_base}"}}')
    card = ModelCard.load(create_model_card(adapter_dir, stage="instruction", dataset_name=pretrain_text_file))
    assert card.data.library_name == "peft" and {"hf_llm", "instruction", "lora"} <= set(card.data.tags)
    assert card.data.base_model is None and card.data.datasets is None  # local paths: named in the body only
    assert f"trained from `{local_base}`" in card.text and pretrain_text_file in card.text
    assert "AutoPeftModelForCausalLM.from_pretrained" in card.text
    card = ModelCard.load(create_model_card(adapter_dir, stage="reward", base_model="tester/sft-model"))
    assert card.data.base_model == "tester/sft-model" and card.data.pipeline_tag == "text-classification"
    assert "AutoPeftModelForSequenceClassification.from_pretrained" in card.text
    with pytest.raises(FileNotFoundError, match="--output_dir"):
        create_model_card(tmp_path / "missing", stage="pretrain")


# ---------------------------------------------------------------------------------------------------------------
# transformers' own push_to_hub, from_gpt2, evaluation by repo id


def test_transformers_push_to_hub_round_trip(tiny_tokenizer, hub):
    model = tiny_gpt(tiny_tokenizer)
    model.push_to_hub("tester/tiny-gpt-ptm", private=True)
    tiny_tokenizer.push_to_hub("tester/tiny-gpt-ptm")
    api = HfApi()
    assert api.model_info("tester/tiny-gpt-ptm").private is True
    files = api.list_repo_files("tester/tiny-gpt-ptm")
    assert {"modeling_gpt.py", "configuration_gpt.py", "tokenizer.json", "README.md"} <= set(files)
    loaded = AutoModelForCausalLM.from_pretrained("tester/tiny-gpt-ptm").eval()
    assert isinstance(loaded, GPTForCausalLM)
    tokenizer = AutoTokenizer.from_pretrained("tester/tiny-gpt-ptm")
    input_ids = encode(tokenizer)
    assert torch.equal(input_ids, encode(tiny_tokenizer))
    assert torch.allclose(loaded(input_ids).logits, model(input_ids).logits, atol=1e-6)
    snapshot = snapshot_download("tester/tiny-gpt-ptm")
    assert sorted(os.listdir(snapshot)) == sorted(files)


def test_from_gpt2_accepts_a_hub_repo_id(hub):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    gpt2.push_to_hub("tester/gpt2-tiny")
    converted = GPTForCausalLM.from_gpt2("tester/gpt2-tiny").eval()
    input_ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(converted(input_ids).logits, gpt2(input_ids).logits, atol=1e-4)


def test_evaluation_accepts_a_hub_repo_id(pushed_gpt, tiny_tokenizer, hub):
    model, _, _ = pushed_gpt
    expected = compute_perplexity(model, tiny_tokenizer, TEXTS)["perplexity"]
    loaded, tokenizer = load_model_for_evaluation(REPO_ID, task="pretrain", device="cpu")
    assert isinstance(loaded, GPTForCausalLM) and len(tokenizer) == len(tiny_tokenizer)
    result = load_metric("perplexity").compute(predictions=TEXTS, model=REPO_ID, device="cpu")
    assert result["perplexity"] == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Errors name the repo or the flag


def test_missing_repo_errors_name_the_repo(hub, tmp_path):
    with pytest.raises(RepositoryNotFoundError, match="tester/does-not-exist"):
        hf_hub_download("tester/does-not-exist", "config.json")
    with pytest.raises(OSError, match="tester/does-not-exist"):
        AutoModelForCausalLM.from_pretrained("tester/does-not-exist")
    missing = "--model_name_or_path tester/does-not-exist: no such local directory and no such Hub repo"
    with pytest.raises(OSError, match=missing):
        load_model_for_evaluation("tester/does-not-exist", task="pretrain")
    with pytest.raises(ValueError, match="--hub_model_id"):
        push_output_dir(tmp_path, None)
    with pytest.raises(FileNotFoundError, match="--output_dir"):
        push_output_dir(tmp_path / "missing", "tester/x")


# ---------------------------------------------------------------------------------------------------------------
# train_scripts/pretrain.py --push_to_hub


@pytest.fixture(scope="module")
def pretrain_pushed(hub_server, run_pretrain, pretrain_text_file, tmp_path_factory):
    """A 3-step `train_scripts/pretrain.py --push_to_hub --hub_model_id tester/pretrain-tiny` run: its output_dir."""
    output_dir = tmp_path_factory.mktemp("pretrain_push") / "run"
    argv = [
        "--dataset_name", pretrain_text_file, "--output_dir", output_dir, *TINY_PRETRAIN_ARGS,
        "--max_steps", "3", "--eval_strategy", "no", "--save_strategy", "no",
        "--push_to_hub", "true", "--hub_model_id", "tester/pretrain-tiny",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as monkeypatch:
        patch_hub_env(monkeypatch, hub_server[1])
        run_pretrain(argv)
    return output_dir


def test_pretrain_push_to_hub_ships_code_and_loads_back(pretrain_pushed, hub):
    files = HfApi().list_repo_files("tester/pretrain-tiny")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "recipe.yaml"} <= set(files)
    assert {"configuration_gpt.py", "modeling_gpt.py"} <= set(files)  # loadable where hf_llm is not installed
    local = AutoModelForCausalLM.from_pretrained(pretrain_pushed).eval()
    pushed = AutoModelForCausalLM.from_pretrained("tester/pretrain-tiny").eval()
    input_ids = encode(AutoTokenizer.from_pretrained("tester/pretrain-tiny"))
    assert torch.equal(input_ids, encode(AutoTokenizer.from_pretrained(pretrain_pushed)))
    assert torch.allclose(pushed(input_ids).logits, local(input_ids).logits, atol=1e-6)


def test_pretrain_push_to_hub_carries_the_hf_llm_model_card(pretrain_pushed, hub):
    card = ModelCard.load("tester/pretrain-tiny")
    assert "hf_llm" in card.data.tags and "custom_code" in card.data.tags
    assert 'AutoModelForCausalLM.from_pretrained("tester/pretrain-tiny", trust_remote_code=True)' in card.text
    assert "## Training recipe" in card.text
