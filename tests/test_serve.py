"""`hf-llm serve`: transformers' OpenAI-compatible server on an hf_llm checkpoint, spoken to with the `openai` client.

The checkpoint is written by `save_and_push` (so it ships the sampling defaults of its `generation_config.json`) with
a 128-position context; the Alpaca chat template alone takes 89 of them, which makes "past the context" cheap to hit.
"""

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from conftest import tiny_gpt_config
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer, GenerationConfig, Trainer, TrainingArguments

from hf_llm import GPTForCausalLM
from hf_llm.cli import main
from hf_llm.data import DataArguments
from hf_llm.errors import UsageError
from hf_llm.serving import CPU_CB_NUM_BLOCKS, fit_to_context, serve_arguments
from hf_llm.training.finalize import SAMPLING_DEFAULTS, save_and_push

openai = pytest.importorskip("openai", reason="the serving extra: pip install 'hf_llm[serving]'")

HF_LLM_SERVE = [sys.executable, "-m", "hf_llm.cli", "serve"]
CONTEXT = 128
QUESTION = [{"role": "user", "content": "Explain the with statement."}]
TOO_LONG = [{"role": "user", "content": "def add(a, b): return a + b. " * 40}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_tokenizer):
    """A tiny GPT saved the way every stage saves: `save_and_push` after (here, instead of) training."""
    output_dir = tmp_path_factory.mktemp("served") / "model"
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config(tiny_tokenizer, max_position_embeddings=CONTEXT))
    training_args = TrainingArguments(output_dir=str(output_dir), use_cpu=True, report_to="none")
    trainer = Trainer(model=model, args=training_args, processing_class=tiny_tokenizer)
    data_args = DataArguments(dataset_name="tiny")
    dataset = DatasetDict({"train": Dataset.from_dict({"text": ["hello"]})})
    save_and_push(trainer, "pretrain", recipe_args=(data_args, training_args), data_args=data_args, dataset=dataset,
                  metrics={})  # fmt: skip
    return output_dir


def greedy_answer(model_dir, messages, max_new_tokens: int) -> str:
    """What `generate()` answers locally: the reference the server must match."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = GPTForCausalLM.from_pretrained(model_dir).eval()
    input_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    input_ids = input_ids if isinstance(input_ids, torch.Tensor) else input_ids["input_ids"]
    output = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0, input_ids.shape[-1] :], skip_special_tokens=True)


@contextlib.contextmanager
def hf_llm_serve(model_dir, log_path, *flags):
    """Run `hf-llm serve MODEL_DIR --host 127.0.0.1 --port PORT FLAGS` until the block ends; yield its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [*HF_LLM_SERVE, str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "w") as log:
        server = subprocess.Popen([*command, *flags], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(f"hf-llm serve exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"hf-llm serve did not answer /health in 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def health(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def stream_text(client, model: str, messages, **kwargs) -> tuple[str, str]:
    """The streamed answer and its finish reason."""
    text, finish_reason = "", None
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, **kwargs):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish_reason = chunk.choices[0].finish_reason or finish_reason
    return text, finish_reason


def assert_over_long_request_is_refused_and_server_lives_on(client, url: str, model: str, expected: str) -> None:
    """transformers serve refuses a prompt that leaves no room for an answer itself, with a 400 naming the numbers."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=model, messages=TOO_LONG, max_tokens=4)
    assert f"takes at most {CONTEXT}" in refused.value.body["detail"]
    with pytest.raises(openai.BadRequestError) as refused:
        stream_text(client, model, TOO_LONG, max_tokens=4)
    assert f"takes at most {CONTEXT}" in refused.value.body["detail"]
    assert health(url) == 200
    after = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, temperature=0)
    assert after.choices[0].message.content == expected


def assert_request_without_max_tokens_stops_at_the_context(client, model: str) -> None:
    """transformers serve asks for >= 1024 new tokens when `max_tokens` is missing: clamped to what fits."""
    reply = client.chat.completions.create(model=model, messages=QUESTION, temperature=0)
    usage = reply.usage
    assert usage.total_tokens <= CONTEXT
    if reply.choices[0].finish_reason == "length":  # not stopped by eos: ran to the last position
        assert usage.total_tokens == CONTEXT


# ---- the pieces, without a server ----


def test_checkpoints_ship_sampling_defaults(checkpoint):
    saved = json.loads((checkpoint / "generation_config.json").read_text())
    assert {key: saved[key] for key in SAMPLING_DEFAULTS} == SAMPLING_DEFAULTS
    assert GenerationConfig.from_pretrained(checkpoint).do_sample is True


def test_fit_to_context_clamps_and_refuses(tiny_tokenizer):
    model = GPTForCausalLM(tiny_gpt_config(tiny_tokenizer, max_position_embeddings=32))
    assert fit_to_context(model, prompt_length=20, max_new_tokens=1024) == 12
    assert fit_to_context(model, prompt_length=20, max_new_tokens=5) == 5
    assert fit_to_context(model, prompt_length=20, max_new_tokens=None) == 12
    assert fit_to_context(model, prompt_length=31, max_new_tokens=8) == 1
    with pytest.raises(ValueError, match="prompt is 32 tokens .* context is 32 positions"):
        fit_to_context(model, prompt_length=32, max_new_tokens=8)


def test_serve_arguments_bound_the_cpu_kv_cache_and_refuse_adapters(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "config.json").write_text("{}")
    model = str(tmp_path)
    assert serve_arguments([model, "--port", "9"]) == ["serve", model, "--port", "9"]
    assert serve_arguments([model, "--continuous-batching"])[-2:] == ["--cb-num-blocks", str(CPU_CB_NUM_BLOCKS)]
    assert serve_arguments([model, "--continuous-batching", "--cb-num-blocks", "8"]).count("--cb-num-blocks") == 1
    assert "--cb-num-blocks" not in serve_arguments([model, "--continuous-batching", "--device", "cuda:0"])
    assert serve_arguments([model, "--api-server-count", "1"])[-2:] == ["--api-server-count", "1"]
    with pytest.raises(UsageError, match="one API server.*drop --api-server-count 2"):
        serve_arguments([model, "--api-server-count=2"])

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(UsageError, match="LoRA adapter.*hf-llm merge"):
        serve_arguments([str(adapter)])
    with pytest.raises(UsageError, match="needs a model first"):
        serve_arguments(["--port", "9"])
    with pytest.raises(UsageError, match="does not exist"):
        serve_arguments([str(tmp_path / "missing")])


# ---- the server ----


@pytest.mark.slow  # two servers start (~10 s each on 2 busy cores); runs in `make test`
def test_serve_answers_chat_like_generate(checkpoint, tmp_path):
    model = str(checkpoint)
    expected = greedy_answer(checkpoint, QUESTION, max_new_tokens=8)
    with hf_llm_serve(checkpoint, tmp_path / "serve.log") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        assert [listed.id for listed in client.models.list()] == [model]  # a pinned server lists its model

        reply = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, temperature=0)
        assert reply.choices[0].message.content == expected
        assert reply.choices[0].finish_reason in ("length", "stop")
        assert stream_text(client, model, QUESTION, max_tokens=8, temperature=0)[0] == expected

        # The checkpoint's generation_config.json samples: `temperature` alone is enough to leave greedy decoding.
        sampled = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, temperature=1.0, seed=3)
        assert sampled.choices[0].message.content != expected

        assert_request_without_max_tokens_stops_at_the_context(client, model)
        assert_over_long_request_is_refused_and_server_lives_on(client, url, model, expected)


@pytest.mark.slow
def test_serve_with_continuous_batching_survives_over_long_requests(checkpoint, tmp_path):
    model = str(checkpoint)
    expected = greedy_answer(checkpoint, QUESTION, max_new_tokens=8)
    with hf_llm_serve(checkpoint, tmp_path / "serve.log", "--continuous-batching") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)

        reply = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, temperature=0)
        assert reply.choices[0].message.content == expected
        assert stream_text(client, model, QUESTION, max_tokens=8, temperature=0)[0] == expected
        # Sampling is per request in the batch: without `temperature`, the checkpoint's sampling defaults apply.
        assert stream_text(client, model, QUESTION, max_tokens=8)[0] != expected

        # Unclamped, either request would run a forward past position 128 and kill the batching worker (503 after).
        assert_request_without_max_tokens_stops_at_the_context(client, model)
        assert_over_long_request_is_refused_and_server_lives_on(client, url, model, expected)


def test_generate_and_chat_stop_at_the_context(tmp_path, tiny_tokenizer, capsys, monkeypatch):
    """`hf-llm generate`/`chat` clamp `--max_new_tokens` to the context; chat skips an instruction that cannot fit."""
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config(tiny_tokenizer, max_position_embeddings=CONTEXT))
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    prompt_length = len(tiny_tokenizer("def f").input_ids)
    expected_ids = model.generate(
        tiny_tokenizer("def f", return_tensors="pt").input_ids, max_new_tokens=CONTEXT - prompt_length, do_sample=False
    )
    expected = tiny_tokenizer.decode(expected_ids[0], skip_special_tokens=True)

    argv = ["generate", "--model_name_or_path", str(tmp_path), "--prompt", "def f", "--max_new_tokens", "1000"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == expected.strip()

    monkeypatch.setattr("sys.stdin", io.StringIO(TOO_LONG[0]["content"] + "\n" + QUESTION[0]["content"] + "\n"))
    assert main(["chat", "--model_name_or_path", str(tmp_path), "--max_new_tokens", "1000"]) == 0
    out = capsys.readouterr().out
    assert "not answered: the prompt is" in out and f"context is {CONTEXT} positions" in out
    assert out.count(">>> ") == 3  # the over-long instruction, the answered one, the end of input
