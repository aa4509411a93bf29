"""`hf-llm serve`: transformers' OpenAI-compatible server on an hf_llm checkpoint, spoken to with the `openai` client.

The checkpoint is written by `save_and_push` (so it ships the sampling defaults of its `generation_config.json`) with
a 128-position context; the Alpaca chat template alone takes 89 of them, which makes "past the context" cheap to hit.
Two servers start, once per module: one plain, one with continuous batching.
"""

import dataclasses
import io
import json
import urllib.request

import httpx
import pytest
import torch
from conftest import tiny_gpt_config
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer, GenerationConfig, Trainer, TrainingArguments

from hf_llm import GPTForCausalLM
from hf_llm.cli import main
from hf_llm.data import DataArguments
from hf_llm.errors import UsageError
from hf_llm.serving import (
    CHAT_COMPLETIONS,
    CPU_CB_NUM_BLOCKS,
    RequestError,
    ServedModel,
    check_request,
    fit_to_context,
    serve_arguments,
    serve_in_background,
)
from hf_llm.training.finalize import SAMPLING_DEFAULTS, save_and_push

openai = pytest.importorskip("openai", reason="the serving extra: pip install 'hf_llm[serving]'")

CONTEXT = 128
QUESTION = [{"role": "user", "content": "Explain the with statement."}]
TOO_LONG = [{"role": "user", "content": "def add(a, b): return a + b. " * 40}]
TOOLS = [{"type": "function", "function": {"name": "word_count", "parameters": {"type": "object", "properties": {}}}}]


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
    save_and_push(trainer, "pretrain", (data_args, training_args), dataset, {})
    return output_dir


def greedy_answer(model_dir, messages, max_new_tokens: int) -> str:
    """What `generate()` answers locally: the reference the server must match."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = GPTForCausalLM.from_pretrained(model_dir).eval()
    input_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    input_ids = input_ids if isinstance(input_ids, torch.Tensor) else input_ids["input_ids"]
    output = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0, input_ids.shape[-1] :], skip_special_tokens=True)


def hf_llm_serve(model_dir, log_path, *flags):
    """Run `hf-llm serve MODEL_DIR FLAGS` on a free 127.0.0.1 port until the block ends; yield its base URL."""
    return serve_in_background(str(model_dir), *flags, log_path=log_path)


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

    def arguments(*argv):
        return serve_arguments(list(argv))[0]

    assert arguments(model, "--port", "9") == ["serve", model, "--port", "9"]
    assert arguments(model, "--continuous-batching")[-2:] == ["--cb-num-blocks", str(CPU_CB_NUM_BLOCKS)]
    assert arguments(model, "--continuous-batching", "--cb-num-blocks", "8").count("--cb-num-blocks") == 1
    assert "--cb-num-blocks" not in arguments(model, "--continuous-batching", "--device", "cuda:0")
    assert arguments(model, "--api-server-count", "1")[-2:] == ["--api-server-count", "1"]
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


def test_served_model_name_defaults_to_the_directory_name_and_leaves_the_transformers_flags(tmp_path):
    model_dir = tmp_path / "sft"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    assert serve_arguments([f"{model_dir}/", "--port", "9"]) == (["serve", f"{model_dir}/", "--port", "9"], "sft")
    assert serve_arguments(["openai-community/gpt2"])[1] == "openai-community/gpt2"  # a Hub repo id as it is
    for named in (["--served-model-name", "tiny"], ["--served-model-name=tiny"]):
        assert serve_arguments([str(model_dir), "--port", "9", *named, "--host", "h"]) == (
            ["serve", str(model_dir), "--port", "9", "--host", "h"],
            "tiny",
        )
    with pytest.raises(UsageError, match="--served-model-name is empty"):
        serve_arguments([str(model_dir), "--served-model-name", ""])


def refused_field(endpoint: str, body: dict, model: ServedModel) -> str | None:
    """The field `check_request` names when it refuses `body`, or None when it takes it."""
    try:
        check_request(endpoint, body, model)
    except RequestError as error:
        assert f"`{error.field}`" in str(error)
        return error.field
    return None


def test_settings_the_model_would_ignore_are_refused_and_the_rest_taken():
    """The decisions that need another checkpoint than the test server's (which samples) or a tool-calling model."""
    greedy = ServedModel(GenerationConfig(do_sample=False), continuous_batching=False, text_only=True, tools=False)
    chat = {"messages": QUESTION}
    assert refused_field(CHAT_COMPLETIONS, {**chat, "temperature": 0.7}, greedy) == "temperature"
    assert refused_field(CHAT_COMPLETIONS, {**chat, "temperature": 1.0}, greedy) == "temperature"  # 1 still samples
    assert refused_field(CHAT_COMPLETIONS, {**chat, "top_p": 0.5}, greedy) == "top_p"
    sample = {**chat, "temperature": 0.7, "top_p": 0.5, "generation_config": '{"do_sample": true}'}
    assert refused_field(CHAT_COMPLETIONS, sample, greedy) is None
    assert refused_field(CHAT_COMPLETIONS, {**chat, "temperature": 0, "top_p": 1.0}, greedy) is None

    # Continuous batching sets a request's temperature, top-k and top-p only where the model's config has that step.
    batched_greedy = dataclasses.replace(greedy, continuous_batching=True)
    assert refused_field(CHAT_COMPLETIONS, sample, batched_greedy) == "generation_config"  # do_sample is the model's
    assert refused_field(CHAT_COMPLETIONS, {**chat, "temperature": 0.7}, batched_greedy) == "temperature"
    batched = ServedModel(GenerationConfig(do_sample=True, top_k=50), True, text_only=True, tools=False)
    assert refused_field(CHAT_COMPLETIONS, {**chat, "temperature": 0.5}, batched) == "temperature"
    assert refused_field(CHAT_COMPLETIONS, {**chat, "top_p": 0.5}, batched) == "top_p"
    assert (
        refused_field(CHAT_COMPLETIONS, {**chat, "temperature": 0, "generation_config": '{"top_k": 5}'}, batched)
        is None
    )
    assert refused_field(CHAT_COMPLETIONS, {**chat, "temperature": 1.0, "top_p": 1.0}, batched) is None  # the defaults

    # Tools, where the model takes them: `auto` is what it does, `required` or a named tool it cannot promise.
    with_tools = dataclasses.replace(greedy, tools=True)
    assert refused_field(CHAT_COMPLETIONS, {**chat, "tools": TOOLS, "tool_choice": "auto"}, with_tools) is None
    for tool_choice in ("required", "none", {"type": "function", "function": {"name": "word_count"}}):
        assert refused_field(CHAT_COMPLETIONS, {**chat, "tools": TOOLS, "tool_choice": tool_choice}, with_tools) == (
            "tool_choice"
        )


# ---- the server ----


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """One `hf-llm serve` of the checkpoint for the module's tests (a start takes ~10 s on 2 busy cores)."""
    with hf_llm_serve(checkpoint, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def batching_server(checkpoint, tmp_path_factory):
    """`hf-llm serve --continuous-batching`, its model named `tiny-gpt`."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with hf_llm_serve(checkpoint, log_path, "--continuous-batching", "--served-model-name", "tiny-gpt") as url:
        yield url


def openai_client(url: str):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def assert_refused(field: str, create, **request) -> None:
    """`create(**request)` is a 400 whose `param` and message name `field`."""
    with pytest.raises(openai.BadRequestError) as refused:
        create(**request)
    assert refused.value.param == field, refused.value.message
    assert f"`{field}`" in refused.value.message


@pytest.mark.slow  # the module's server starts (~10 s); runs in `make test`
def test_serve_answers_chat_like_generate(checkpoint, server):
    model = str(checkpoint)
    expected = greedy_answer(checkpoint, QUESTION, max_new_tokens=8)
    client = openai_client(server)
    reply = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert stream_text(client, model, QUESTION, max_tokens=8, temperature=0)[0] == expected

    # The checkpoint's generation_config.json samples: `temperature` alone is enough to leave greedy decoding.
    sampled = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, temperature=1.0, seed=3)
    assert sampled.choices[0].message.content != expected

    assert_request_without_max_tokens_stops_at_the_context(client, model)
    assert_over_long_request_is_refused_and_server_lives_on(client, server, model, expected)


@pytest.mark.slow
def test_serve_lists_the_model_under_its_directory_name_and_answers_to_it(checkpoint, server):
    client = openai_client(server)
    assert [(listed.id, listed.root) for listed in client.models.list()] == [("model", str(checkpoint))]
    expected = greedy_answer(checkpoint, QUESTION, max_new_tokens=4)
    for name in ("model", str(checkpoint)):  # the short name, and the path as before
        reply = client.chat.completions.create(model=name, messages=QUESTION, max_tokens=4, temperature=0)
        assert reply.choices[0].message.content == expected
    assert_refused("model", client.chat.completions.create, model="gpt-4o", messages=QUESTION, max_tokens=4)


@pytest.mark.slow
def test_serve_refuses_by_name_what_it_cannot_honour(server):
    client = openai_client(server)
    chat, responses = client.chat.completions.create, client.responses.create
    request = {"model": "model", "messages": QUESTION, "max_tokens": 4}
    assert_refused("n", chat, **request, n=2)
    assert_refused("logprobs", chat, **request, logprobs=True)
    assert_refused("top_logprobs", chat, **request, top_logprobs=2)
    assert_refused("tools", chat, **request, tools=TOOLS)
    assert_refused("tool_choice", chat, **request, tool_choice="required")
    assert_refused("response_format", chat, **request, response_format={"type": "json_object"})
    assert_refused("presence_penalty", chat, **request, presence_penalty=0.5)
    tool_reply = {"role": "tool", "tool_call_id": "call_0", "content": "3"}
    assert_refused("messages[1]", chat, **{**request, "messages": [*QUESTION, tool_reply]})
    # What a template refuses (the Alpaca one takes system, user and assistant turns) is a 400 too, not a bare 500.
    assert_refused("messages", chat, **{**request, "messages": [{"role": "developer", "content": "Be brief."}]})
    assert_refused(
        "tools", responses, model="model", input="Hi", tools=[{"type": "function", "name": "f", "parameters": {}}]
    )
    assert_refused("text", responses, model="model", input="Hi", text={"format": {"type": "json_object"}})
    assert_refused("echo", client.completions.create, model="model", prompt="def f", max_tokens=4, echo=True)

    # Their neutral values ask for nothing, and are served.
    neutral = {"n": 1, "logprobs": False, "response_format": {"type": "text"}, "tool_choice": "none"}
    assert chat(**request, **neutral).choices[0].finish_reason in ("length", "stop")


@pytest.mark.slow
def test_serve_answers_client_mistakes_with_400s_naming_the_field(server):
    """Raw requests the `openai` client would not send: each was a 500 (or a 200 stream ending in an error event)."""
    question = {"model": "model", "messages": QUESTION}
    mistakes = [
        (CHAT_COMPLETIONS, {"model": "model"}, "messages"),
        (CHAT_COMPLETIONS, {"model": "model", "messages": "Explain the with statement."}, "messages"),
        (CHAT_COMPLETIONS, {"model": "model", "messages": [{"content": "Hi"}]}, "messages[0].role"),
        (CHAT_COMPLETIONS, {"model": "model", "messages": [{"role": "robot", "content": "Hi"}]}, "messages[0].role"),
        (
            CHAT_COMPLETIONS,
            {"model": "model", "messages": [{"role": "user", "content": {"a": 1}}]},
            "messages[0].content",
        ),
        (CHAT_COMPLETIONS, {**question, "max_tokens": -5}, "max_tokens"),
        (CHAT_COMPLETIONS, {**question, "max_tokens": -5, "stream": True}, "max_tokens"),
        (CHAT_COMPLETIONS, {**question, "temperature": -1}, "temperature"),
        (CHAT_COMPLETIONS, {**question, "temperature": -1, "stream": True}, "temperature"),
        (CHAT_COMPLETIONS, {**question, "top_p": 2}, "top_p"),
        (CHAT_COMPLETIONS, {**question, "stop": 5}, "stop"),
        (CHAT_COMPLETIONS, {**question, "stream": "yes"}, "stream"),
        (CHAT_COMPLETIONS, {**question, "generation_config": "{"}, "generation_config"),
        (CHAT_COMPLETIONS, {**question, "best_answers": 3}, "best_answers"),
        ("/v1/completions", {"model": "model", "max_tokens": 4}, "prompt"),
        ("/v1/responses", {"model": "model"}, "input"),
        ("/v1/responses", {"model": "model", "input": ["Hi"]}, "input"),
    ]
    with httpx.Client(base_url=server, timeout=60) as http:
        for endpoint, body, field in mistakes:
            reply = http.post(endpoint, json=body)
            assert reply.status_code == 400, (body, reply.text)
            assert reply.json()["error"]["param"] == field, (body, reply.text)
            assert f"`{field}`" in reply.json()["error"]["message"]
        not_json = http.post(CHAT_COMPLETIONS, content=b"{not json", headers={"content-type": "application/json"})
        assert not_json.status_code == 422  # FastAPI's own answer
    assert health(server) == 200


@pytest.mark.slow
def test_serve_answers_responses_with_json_unless_streaming(checkpoint, server):
    expected = greedy_answer(checkpoint, QUESTION, max_new_tokens=6)
    client = openai_client(server)
    response = client.responses.create(model="model", input=QUESTION, max_output_tokens=6, temperature=0)
    assert response.output_text == expected and response.status == "completed"
    body = {"model": "model", "input": "Hi", "max_output_tokens": 2}
    with httpx.Client(base_url=server, timeout=60) as http:
        assert http.post("/v1/responses", json=body).headers["content-type"] == "application/json"
        streamed = http.post("/v1/responses", json={**body, "stream": True})
        assert streamed.headers["content-type"].startswith("text/event-stream")


@pytest.mark.slow
def test_serve_with_continuous_batching_survives_over_long_requests(checkpoint, batching_server):
    model = "tiny-gpt"
    expected = greedy_answer(checkpoint, QUESTION, max_new_tokens=8)
    client = openai_client(batching_server)
    assert [listed.id for listed in client.models.list()] == [model]

    reply = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == expected
    assert stream_text(client, model, QUESTION, max_tokens=8, temperature=0)[0] == expected
    # Sampling is per request in the batch: without `temperature`, the checkpoint's sampling defaults apply.
    assert stream_text(client, model, QUESTION, max_tokens=8)[0] != expected

    # Unclamped, either request would run a forward past position 128 and kill the batching worker, and the server.
    assert_request_without_max_tokens_stops_at_the_context(client, model)
    assert_over_long_request_is_refused_and_server_lives_on(client, batching_server, model, expected)


@pytest.mark.slow
def test_serve_with_continuous_batching_refuses_the_settings_it_ignores(checkpoint, batching_server):
    client = openai_client(batching_server)
    chat = client.chat.completions.create
    request = {"model": "tiny-gpt", "messages": QUESTION, "max_tokens": 8}
    assert_refused("stop", chat, **request, stop=["\n"])
    assert_refused("stop", client.completions.create, model="tiny-gpt", prompt="def f", max_tokens=4, stop="\n")
    assert_refused("frequency_penalty", chat, **request, frequency_penalty=0.5)
    assert_refused("logit_bias", chat, **request, logit_bias={"5": 10})
    assert_refused(
        "generation_config", chat, **request, extra_body={"generation_config": '{"repetition_penalty": 2.0}'}
    )
    assert_refused("generation_config", chat, **request, extra_body={"generation_config": '{"do_sample": false}'})

    # What it takes per request: max_tokens, temperature (0 is greedy), top_p, and top_k through generation_config.
    expected = greedy_answer(checkpoint, QUESTION, max_new_tokens=8)
    greedy_by_top_k = chat(**request, extra_body={"generation_config": '{"top_k": 1}'}).choices[0].message.content
    assert greedy_by_top_k == expected
    sampled = {"temperature": 1.0, "top_p": 0.95, "seed": 3}
    assert chat(**request, **sampled).choices[0].message.content != expected


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
