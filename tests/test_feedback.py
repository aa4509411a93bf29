"""Human feedback (`hf_llm.feedback`): rank sampled answers in the Gradio page, export preference pairs, train on them.

The ranking app runs as `hf-llm rank` in a subprocess on a tiny saved GPT and is driven over HTTP with
`gradio_client`, as a browser would: two prompts ranked, the server killed (SIGKILL), restarted, and the third prompt
comes up while the file holds exactly the two rankings. Export turns rankings into all ordered pairs (ties skipped),
splits them by prompt, measures agreement between labelers, and pushes a dataset repo that `load_dataset` reads back
from the local Hub server; a reward model trains on the pairs. Model output reaches the page as text only.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from conftest import tiny_gpt_config
from datasets import load_dataset
from gradio_client import Client
from gradio_client.exceptions import AuthenticationError

from hf_llm import GPTForCausalLM
from hf_llm.data import load_formatted_dataset
from hf_llm.errors import UsageError
from hf_llm.feedback import (
    RankingSession,
    append_record,
    export_rankings,
    labeler_agreement,
    normalize_ranks,
    rankings_to_preferences,
    read_records,
)
from hf_llm.feedback.launch import check_binding, read_auth_file

PROMPTS = ["Explain the with statement.", "What does len return?", "Name a function of the json module."]
HF_LLM = [sys.executable, "-m", "hf_llm.cli"]
XSS = '<script>document.body.dataset.pwned = "script"</script><img src=x onerror="document.body.dataset.pwned=1">'


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_tokenizer, tmp_path_factory):
    """A tiny GPT (2 layers, 32 wide, 256 positions: the Alpaca template alone takes ~90) with its tokenizer."""
    output_dir = tmp_path_factory.mktemp("feedback") / "tiny-sft"
    torch.manual_seed(0)
    GPTForCausalLM(tiny_gpt_config(tiny_tokenizer, max_position_embeddings=256)).save_pretrained(output_dir)
    tiny_tokenizer.save_pretrained(output_dir)
    return str(output_dir)


def stub_sampler(num_answers: int):
    """Answers that depend only on the prompt, so tests know them without a model."""
    return lambda prompt, pid: (f"<user>{prompt}</user>", [f"answer {i} to {prompt}" for i in range(num_answers)])


def new_session(tmp_path, labeler="alice", num_answers=3, prompts=PROMPTS, sample=None) -> RankingSession:
    metadata = {"model_name_or_path": "tiny", "generation": {"temperature": 0.8}, "chat_template": True}
    return RankingSession(
        prompts, tmp_path / "rankings.jsonl", labeler, sample or stub_sampler(num_answers), metadata=metadata
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def rank_server(argv: list[str], log_path):
    """`hf-llm rank ARGV` in a subprocess; yields `(url, process)` once the page answers; killed on exit."""
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen([*HF_LLM, "rank", *argv, "--port", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise AssertionError(f"hf-llm rank exited with {process.returncode}:\n{open(log_path).read()}")
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"hf-llm rank did not start:\n{open(log_path).read()}") from None
                time.sleep(0.5)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


# ---- the ranking page over HTTP: rank, kill, resume ----


@pytest.mark.slow
def test_rank_two_prompts_kill_restart_resumes_at_the_third(tiny_model_dir, tmp_path):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS) + "\n")
    rankings = tmp_path / "rankings.jsonl"
    argv = [
        "--model_name_or_path", tiny_model_dir, "--dataset_name", str(prompts_file), "--num_samples", "3",
        "--max_new_tokens", "6", "--labeler", "alice", "--output_file", str(rankings),
    ]  # fmt: skip
    log = tmp_path / "server.log"
    with rank_server(argv, log) as (url, process):
        client = Client(url, verbose=False)
        first = client.predict(api_name="/current")  # (progress, prompt id, prompt, 3 answers, 3 ranks, status)
        assert first[2] == PROMPTS[0] and "0 / 3 ranked" in first[0]
        second = client.predict(first[1], 2, 1, 3, api_name="/submit")  # a full ranking: B > A > C
        assert second[2] == PROMPTS[1] and "1 / 3 ranked" in second[0] and second[-1] == "Saved."
        third = client.predict(second[1], 1, None, 3, api_name="/submit")  # best and worst only
        assert third[2] == PROMPTS[2] and "2 / 3 ranked" in third[0]
        process.send_signal(signal.SIGKILL)  # a crash: nothing gets to flush or close
        process.wait(timeout=30)

    records = read_records(rankings)
    assert len(rankings.read_text().splitlines()) == 2
    assert [r["prompt"] for r in records] == PROMPTS[:2]
    assert [(r["verdict"], r["ranks"]) for r in records] == [("ranked", [2, 1, 3]), ("best_worst", [1, 2, 3])]
    assert records[0]["answers"] == list(first[3:6]) and records[1]["answers"] == list(second[3:6])
    assert records[0]["labeler"] == "alice" and records[0]["model_name_or_path"] == tiny_model_dir
    assert records[0]["generation"]["temperature"] == 0.8 and records[0]["generation"]["num_samples"] == 3
    assert "### Response:" in records[0]["formatted_prompt"]  # the SFT chat template, as the model saw it

    with rank_server(argv, log) as (url, _):
        client = Client(url, verbose=False)
        resumed = client.predict(api_name="/current")
        assert resumed[2] == PROMPTS[2] and "2 / 3 ranked" in resumed[0]
        assert resumed[3:6] == third[3:6]  # each prompt's answers are fixed by the seed and the prompt
        stale = client.predict(first[1], 1, 2, 3, api_name="/submit")  # a tab still showing the first prompt
        assert stale[-1].startswith("Not saved") and stale[2] == PROMPTS[2]
        done = client.predict(resumed[1], api_name="/skip")
        assert "2 / 3 ranked" in done[0] and "1 skipped" in done[0] and "All 3 prompts answered" in done[-1]
    assert [r["verdict"] for r in read_records(rankings)] == ["ranked", "best_worst", "skipped"]


# ---- session and rankings file ----


def test_session_records_each_verdict_and_resumes_per_labeler(tmp_path):
    session = new_session(tmp_path)
    item = session.current()
    assert item.prompt == PROMPTS[0] and item.answers[1] == f"answer 1 to {PROMPTS[0]}"
    with pytest.raises(ValueError, match="give every answer a rank"):
        session.submit(item.prompt_id, [1, None, None])
    session.submit(item.prompt_id, [3, 1, 2])
    session.tie(session.current().prompt_id)
    assert session.progress() == {"ranked": 2, "skipped": 0, "total": 3}

    assert new_session(tmp_path).current().prompt == PROMPTS[2]  # alice resumes after her two
    bob = new_session(tmp_path, labeler="bob", sample=lambda prompt, pid: pytest.fail("bob must see alice's answers"))
    assert bob.current().prompt == PROMPTS[0] and bob.current().answers == item.answers
    assert [r["verdict"] for r in read_records(tmp_path / "rankings.jsonl")] == ["ranked", "tie"]


def test_normalize_ranks():
    assert normalize_ranks([3, 1, 2]) == ([3, 1, 2], "ranked")
    assert normalize_ranks([5, 2, 2]) == ([2, 1, 1], "ranked")  # dense, ties kept
    assert normalize_ranks([1, None, None, 4]) == ([1, 2, 2, 3], "best_worst")
    for bad in ([1], [0, 1], [1, None, None], [1, None, 1]):
        with pytest.raises(ValueError):
            normalize_ranks(bad)


def test_a_torn_last_line_is_left_out_and_cut_off_by_the_next_append(tmp_path):
    path = tmp_path / "rankings.jsonl"
    record = {"prompt_id": "p", "prompt": "q", "answers": ["a", "b"], "ranks": [1, 2], "verdict": "ranked"}
    append_record(path, {**record, "labeler": "alice"})
    with open(path, "a") as f:
        f.write('{"prompt_id": "p", "prom')  # a crash mid-write
    assert [r["labeler"] for r in read_records(path)] == ["alice"]
    append_record(path, {**record, "labeler": "bob"})
    assert [r["labeler"] for r in read_records(path)] == ["alice", "bob"]
    assert len(path.read_text().splitlines()) == 2
    path.write_text(path.read_text().replace('"labeler": "alice"', '"labeler": "alice"}}'))
    with pytest.raises(ValueError, match="rankings.jsonl:1 is not valid JSON"):
        read_records(path)


# ---- export ----


def test_export_yields_every_ordered_pair_split_by_prompt(tmp_path):
    session = new_session(tmp_path, num_answers=4, prompts=[*PROMPTS, "Define a class.", "What is a decorator?"])
    session.submit(session.current().prompt_id, [2, 1, 4, 3])  # B > A > D > C: 6 pairs
    session.submit(session.current().prompt_id, [1, None, None, 4])  # A best, D worst: 5 pairs
    session.submit(session.current().prompt_id, [1, 1, 2, 2])  # ties give no pair: 4 pairs
    session.all_bad(session.current().prompt_id)
    session.skip(session.current().prompt_id)
    records = read_records(tmp_path / "rankings.jsonl")

    pairs = rankings_to_preferences(records)
    first = [(p["chosen"][0]["content"][7], p["rejected"][0]["content"][7]) for p in pairs[:6]]
    assert sorted(first) == sorted([("1", "0"), ("1", "3"), ("1", "2"), ("0", "3"), ("0", "2"), ("3", "2")])
    assert len(pairs) == 6 + 5 + 4
    assert pairs[0]["prompt"] == [{"role": "user", "content": PROMPTS[0]}]
    assert pairs[0]["chosen"][0]["role"] == "assistant"

    summary = export_rankings(tmp_path / "rankings.jsonl", tmp_path / "prefs", validation_fraction=0.34)
    assert summary["pairs"] == 15 and summary["rankings"] == 4 and summary["skipped"] == 1
    loaded = load_formatted_dataset(str(tmp_path / "prefs"), "preference")
    assert sum(len(split) for split in loaded.values()) == 15 and set(loaded) == {"train", "validation"}
    raw = load_dataset(str(tmp_path / "prefs"))  # the card's `configs` name the splits' files
    assert not set(raw["train"]["prompt_id"]) & set(raw["validation"]["prompt_id"])
    assert len(raw["train"]) == len(loaded["train"]) and raw["train"][0]["labeler"] == "alice"
    card = (tmp_path / "prefs" / "README.md").read_text()
    assert "path: data/validation-*.parquet" in card and f"| train | {len(loaded['train'])} |" in card


def test_rank_export_writes_only_into_a_new_empty_or_overwritten_directory(tmp_path, capsys):
    from hf_llm.cli import main as cli_main

    session = new_session(tmp_path)
    session.submit(session.current().prompt_id, [1, 2, 3])
    rankings = str(tmp_path / "rankings.jsonl")
    export = ["rank", "--output_file", rankings, "--validation_fraction", "0"]
    users = tmp_path / "users"
    users.mkdir()
    (users / "README.md").write_text("mine")
    for target, message in (
        (users, "already holds README.md"),
        (tmp_path / "rankings.jsonl", "is the input --output_file"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*export, "--export", str(target)])
        assert exit_info.value.code == 2 and f"--export {target} {message}" in capsys.readouterr().err
    assert (users / "README.md").read_text() == "mine"
    assert cli_main([*export, "--export", str(users), "--overwrite_output_dir"]) == 0
    assert (users / "README.md").read_text() != "mine"
    assert sum(map(len, load_formatted_dataset(str(users), "preference").values())) == 3  # A>B, A>C, B>C


def test_labeler_agreement(tmp_path):
    for labeler, ranks in (("alice", [1, 2, 3]), ("bob", [1, 3, 2]), ("carol", [1, 2, 3])):
        session = new_session(tmp_path, labeler=labeler)
        session.submit(session.current().prompt_id, ranks)
    alone = new_session(tmp_path, labeler="alice")
    alone.submit(alone.current().prompt_id, [1, 2, 3])  # a second prompt only alice ranked: not compared
    agreement = labeler_agreement(read_records(tmp_path / "rankings.jsonl"))
    # alice/bob and bob/carol agree on 2 of 3 answer pairs (A over B, A over C; not B vs C), alice/carol on all 3.
    assert agreement["by_labelers"]["alice|bob"] == {"prompts": 1, "pair_judgments": 3, "agreement": 0.6667}
    assert agreement["by_labelers"]["alice|carol"]["agreement"] == 1.0
    assert agreement["prompts"] == 1 and agreement["pair_judgments"] == 9 and agreement["agreement"] == 0.7778


def test_export_push_to_hub_loads_back_with_load_dataset(hub_server, tmp_path, monkeypatch):
    from hub_server import patch_hub_env

    url, env = hub_server
    patch_hub_env(monkeypatch, env)
    session = new_session(tmp_path)
    for ranks in ([1, 2, 3], [3, 2, 1], [2, 3, 1]):
        session.submit(session.current().prompt_id, ranks)
    summary = export_rankings(
        tmp_path / "rankings.jsonl", tmp_path / "prefs", push_to_hub=True, hub_dataset_id="tester/prefs"
    )
    assert summary["hub_url"].endswith("/datasets/tester/prefs")
    script = "import json; from datasets import load_dataset; d = load_dataset('tester/prefs'); " + (
        "print(json.dumps({s: [len(d[s]), d[s][0]['chosen'][0]['content']] for s in d}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    splits = json.loads(result.stdout.strip().splitlines()[-1])
    assert splits.keys() == {"train", "validation"} and splits["train"][0] + splits["validation"][0] == 9
    assert splits["train"][1].startswith("answer ")


def test_export_without_pairs_or_hub_id_fails_clearly(tmp_path):
    session = new_session(tmp_path)
    session.tie(session.current().prompt_id)
    with pytest.raises(ValueError, match="no preference pair"):
        export_rankings(tmp_path / "rankings.jsonl", tmp_path / "prefs")
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_dataset_id"):
        export_rankings(tmp_path / "rankings.jsonl", tmp_path / "prefs", push_to_hub=True)


# ---- a reward model trains on the pairs ----


def test_reward_model_trains_on_exported_pairs_and_on_the_rankings_file(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    session = new_session(tmp_path, num_answers=3, prompts=[*PROMPTS, "Define a class."])
    for ranks in ([1, 2, 3], [2, 1, 3], [3, 1, 2], [1, 3, 2]):
        session.submit(session.current().prompt_id, ranks)
    export_rankings(tmp_path / "rankings.jsonl", tmp_path / "prefs", validation_fraction=0.25)
    exported = load_formatted_dataset(str(tmp_path / "prefs"), "preference")
    direct = load_formatted_dataset(str(tmp_path / "rankings.jsonl"), "preference", validation_split_percentage=25)
    for split in ("train", "validation"):  # the rankings file loads as the same pairs as the export
        assert sorted(map(json.dumps, direct[split].to_list())) == sorted(map(json.dumps, exported[split].to_list()))

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    score_before = model.score.weight.detach().clone()
    config = RewardConfig(
        output_dir=str(tmp_path / "reward"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
        max_length=256, logging_steps=1, report_to="none", bf16=False, use_cpu=True, save_strategy="no",
        activation_checkpointing=False, disable_tqdm=True,
    )  # fmt: skip
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=exported["train"],
        eval_dataset=exported["validation"],
        processing_class=tokenizer,
    )
    assert len(trainer.train_dataset) == len(exported["train"]) == 9  # no pair dropped as too long
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(model.score.weight.detach(), score_before)
    assert 0 <= trainer.evaluate()["eval_accuracy"] <= 1


# ---- chat ----


def test_chat_forgets_the_oldest_exchanges_to_fit_the_context(tiny_model_dir):
    from hf_llm.feedback import SamplingConfig, stream_reply
    from hf_llm.loading import load_model_for_evaluation

    model, tokenizer = load_model_for_evaluation(tiny_model_dir, task="sft")
    config = SamplingConfig(num_samples=1, max_new_tokens=8, temperature=0)
    long_turn = "The json module encodes and decodes JSON documents. " * 4  # ~50 tokens
    conversation = [{"role": role, "content": long_turn} for _ in range(4) for role in ("user", "assistant")] + [
        {"role": "user", "content": "What does len return?"}
    ]
    assert len(tokenizer.apply_chat_template(conversation, add_generation_prompt=True)["input_ids"]) > 256
    replies = list(stream_reply(model, tokenizer, conversation, config))  # the oldest turns left out, no error
    assert replies and len(tokenizer(replies[-1], add_special_tokens=False).input_ids) <= 8
    with pytest.raises(ValueError, match="leaves no room for an answer"):
        list(stream_reply(model, tokenizer, [{"role": "user", "content": long_turn * 5}], config))


def test_chat_page_starts_from_the_checkpoints_sampling_unless_flags_say_otherwise():
    from transformers import GenerationConfig

    from hf_llm.feedback.commands import checkpoint_sampling

    sampling = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9)
    assert checkpoint_sampling(sampling, None, None) == (0.7, 0.9)
    assert checkpoint_sampling(sampling, 0.0, None) == (0.0, 0.9)  # --temperature 0: greedy, as asked
    assert checkpoint_sampling(sampling, 1.2, 0.5) == (1.2, 0.5)
    assert checkpoint_sampling(GenerationConfig(do_sample=False), None, None) == (0.0, 0.95)
    assert checkpoint_sampling(None, None, None) == (0.0, 0.95)


def test_chat_page_length_slider_stops_at_what_the_context_leaves(tiny_model_dir):
    import gradio as gr

    from hf_llm.feedback import SamplingConfig
    from hf_llm.feedback.app import build_chat_tab
    from hf_llm.loading import load_model_for_evaluation

    model, tokenizer = load_model_for_evaluation(tiny_model_dir, task="sft")
    with gr.Blocks() as page:
        build_chat_tab(model, tokenizer, SamplingConfig(num_samples=1, max_new_tokens=4096, temperature=0.7))
    sliders = {block.label: block for block in page.blocks.values() if isinstance(block, gr.Slider)}
    context = model.config.max_position_embeddings
    assert sliders["max_new_tokens"].maximum == context - 1 and sliders["max_new_tokens"].value == context - 1
    assert sliders["temperature (0 = greedy)"].value == 0.7


# ---- page safety ----


def test_binding_beyond_localhost_needs_allow_remote_and_auth(tmp_path, capsys):
    check_binding("127.0.0.1", allow_remote=False, auth_file=None)
    check_binding("::1", allow_remote=False, auth_file=None)
    with pytest.raises(UsageError, match="--allow_remote together with --auth_file"):
        check_binding("0.0.0.0", allow_remote=False, auth_file=None)
    with pytest.raises(UsageError, match="needs --auth_file"):
        check_binding("0.0.0.0", allow_remote=True, auth_file=None)
    auth = tmp_path / "auth"
    auth.write_text("# labelers\nalice:s3cret\n\nbob:pa:ss\n")
    assert read_auth_file(auth) == [("alice", "s3cret"), ("bob", "pa:ss")]
    auth.write_text("alice\n")
    with pytest.raises(UsageError, match="is not `user:password`"):
        read_auth_file(auth)
    from hf_llm.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["rank", "--model_name_or_path", "x", "--dataset_name", "y", "--host", "0.0.0.0"])
    assert exited.value.code == 2
    assert "hf-llm rank: error: --host 0.0.0.0 would serve the page" in capsys.readouterr().err


def test_a_login_guards_the_page_when_an_auth_file_is_given(tmp_path):
    from hf_llm.feedback.app import build_ranking_app
    from hf_llm.feedback.launch import serve

    auth = tmp_path / "auth"
    auth.write_text("alice:s3cret\n")
    app = build_ranking_app(new_session(tmp_path), 3)
    port = free_port()
    serve(app, "127.0.0.1", port, auth_file=str(auth), block=False)
    try:
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(f"http://127.0.0.1:{port}/", verbose=False)
        client = Client(f"http://127.0.0.1:{port}/", auth=("alice", "s3cret"), verbose=False)
        assert client.predict(api_name="/current")[2] == PROMPTS[0]
    finally:
        app.close()


@pytest.fixture
def html_app(tiny_model_dir, tmp_path, monkeypatch):
    """The ranking app (with its chat tab) in this process, its model's output replaced by HTML: `(url, app)`."""
    import hf_llm.feedback.app as app_module
    from hf_llm.feedback import SamplingConfig
    from hf_llm.feedback.launch import serve
    from hf_llm.loading import load_model_for_evaluation

    def html_reply(model, tokenizer, messages, config):
        yield "<b>bold"
        yield "<b>bold</b> " + XSS

    monkeypatch.setattr(app_module, "stream_reply", html_reply)
    model, tokenizer = load_model_for_evaluation(tiny_model_dir, task="sft")
    session = new_session(tmp_path, prompts=[XSS], sample=lambda prompt, pid: (prompt, [XSS, "<i>x</i>", "a & b"]))
    app = app_module.build_ranking_app(session, 3, chat=(model, tokenizer, SamplingConfig(num_samples=1)))
    port = free_port()
    serve(app, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/", app
    app.close()


def test_generated_html_reaches_the_page_as_text(html_app):
    url, app = html_app
    components = {block["id"]: block for block in app.get_config_file()["components"]}
    shown = [c for c in components.values() if c.get("props", {}).get("label", "").startswith(("Answer", "Prompt"))]
    assert len(shown) == 4 and {c["type"] for c in shown} == {"textbox"}  # a <textarea>: never rendered as HTML
    chatbot = next(c for c in components.values() if c["type"] == "chatbot")
    assert chatbot["props"]["render_markdown"] is False and chatbot["props"]["sanitize_html"] is True

    client = Client(url, verbose=False)
    current = client.predict(api_name="/current")
    assert current[2] == XSS and current[3] == XSS  # the text itself, into text boxes
    reply = client.predict("show me <u>html</u>", 0.8, 0.95, 0, 8, 1.0, api_name="/chat")
    user, assistant = (message["content"][0]["text"] for message in reply[1])
    escaped_xss = XSS.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    assert user == "show me &lt;u&gt;html&lt;/u&gt;" and assistant == "&lt;b&gt;bold&lt;/b&gt; " + escaped_xss


class HeadlessChromium:
    """Debian's `chromium`, headless, driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
    messages ending in NUL on file descriptors 3 and 4), so a test can wait for the page, type and click."""

    def __init__(self, profile_dir):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        command = (
            f"exec 3<&{to_browser} 4>&{from_browser}; exec chromium --headless --no-sandbox --disable-gpu "
            f"--user-data-dir={profile_dir} --remote-debugging-pipe --window-size=1280,1000 about:blank"
        )
        self.process = subprocess.Popen(
            ["bash", "-c", command], pass_fds=(to_browser, from_browser), stderr=subprocess.DEVNULL
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id, self._session = b"", 0, None
        page = next(t for t in self._call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self._session = self._call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def _call(self, method: str, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 20)
                assert chunk, "chromium exited"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply["error"]
                return reply.get("result", {})

    def js(self, expression: str):
        return self._call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.3)

    def open(self, url: str) -> None:
        self._call("Page.navigate", url=url)

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium package is not installed")
def test_a_generated_script_does_not_run_in_a_browser(html_app, tmp_path):
    """The check a person makes: open the page in a real browser, let the model's HTML arrive, chat, and see that
    nothing ran (the injected `<script>`/`<img onerror>` would set `data-pwned` on `<body>`) and the text is shown."""
    url, _ = html_app
    browser = HeadlessChromium(tmp_path / "profile")
    try:
        browser.open(url)
        textareas = "Array.from(document.querySelectorAll('textarea'))"
        browser.wait_for(f"{textareas}.filter(t => t.value.includes('onerror=')).length === 2")  # prompt, answer A
        browser.js(
            "Array.from(document.querySelectorAll('button[role=tab]')).find(b => b.innerText === 'Chat').click()"
        )
        browser.wait_for(f"{textareas}.some(t => t.placeholder.startsWith('Type an instruction'))")
        browser.js(
            f"const box = {textareas}.find(t => t.placeholder.startsWith('Type an instruction'));"
            "box.value = 'show me <u>html</u>'; box.dispatchEvent(new Event('input', {bubbles: true}));"
        )
        browser.js("Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Send').click()")
        chat = "document.querySelector('.hf-llm-text')"
        browser.wait_for(f"{chat}.innerText.includes('onerror=')")
        time.sleep(1)  # anything injected would have run by now
        assert browser.js("document.body.dataset.pwned") is None
        assert browser.js(f"{chat}.querySelectorAll('img, script, b, u').length") == 0
        shown = browser.js(f"{chat}.innerText")
        assert "show me <u>html</u>" in shown and "<b>bold</b> " + XSS in shown
    finally:
        browser.close()
