"""`hf-llm serve`: transformers' own OpenAI-compatible server (`transformers serve`) on hf_llm checkpoints.

No server of our own: `hf-llm serve DIR [FLAGS]` is `transformers serve DIR [FLAGS]` (every flag of
`transformers serve --help` passes through, but `--api-server-count`; `--served-model-name NAME` is ours) after the
adjustments that transformers needs for a model family that is not part of it, and for OpenAI's clients (DESIGN §12):

- **Our classes on the `transformers` module, in the model's process.** The server loads the model in a process of its
  own, started with spawn, and resolves the checkpoint's class there as
  `getattr(transformers, config.architectures[0])`, so `GPTForCausalLM` must be an attribute of `transformers` in that
  process. Registering it with the Auto classes (what `import hf_llm` does) is not enough, nor is
  `--trust-remote-code`, and nothing set in the `hf-llm` process reaches a spawned one. The server pickles its model
  loader into that process: ours, a subclass of transformers' loader, puts the classes there before loading.
- **Every request fits the context.** The server refuses a prompt that leaves no room for an answer (400, naming the
  numbers), but a request without `max_tokens` still asks for at least 1024 new tokens, and a prompt plus
  `max_tokens` past `max_position_embeddings` fails inside the model's forward once it gets there: the request fails
  (a 400, or an error event in a 200 stream) without continuous batching; under `--continuous-batching` the exception
  kills the batching worker, and with it the server. Here `max_new_tokens` is clamped to the room the prompt leaves
  (`finish_reason: "length"` says so) before the request leaves the API server. The clamp lives in that one process,
  so `--api-server-count` (more API servers, spawned without it) is refused.
- **Greedy stays greedy under continuous batching.** A request with `temperature: 0` is decoded as top-k 1, which
  continuous batching can only set per request when the model's generation config has a top-k step; our checkpoints
  sample without one (`SAMPLING_DEFAULTS`), so the loader gives them a top-k of the whole vocabulary, which keeps
  every token.
- **A bounded KV cache on CPU.** Continuous batching sizes its paged cache from free memory (60% of RAM on CPU)
  unless told otherwise: on CPU we pass `--cb-num-blocks 32` (32 blocks of 256 token positions) unless a `--cb-*`
  size is given.
- **The model under a short name.** transformers lists a pinned model under the path it was given and answers only to
  that path. `/v1/models` lists it under `--served-model-name` (default: the checkpoint directory's name, or the Hub
  repo id), and requests may name it so; the path keeps working.
- **Every field honoured, or refused by name.** transformers takes fields it then ignores (`n`, `logprobs`, `tools`
  on a template without them, `response_format`; under `--continuous-batching` also `stop`, `frequency_penalty`,
  `logit_bias`, most of `generation_config`), and fails with a bare 500 on malformed requests (no `messages`, an
  unknown role). Each text request is checked before transformers sees it (`check_request`): what the server cannot
  honour, or cannot read, is a 400 in OpenAI's error shape, whose `param` names the field.

```bash
pip install "hf_llm[serving]"
hf-llm serve outputs/pipeline/sft --host 127.0.0.1 --port 8000 [--continuous-batching] [--served-model-name sft]
curl http://127.0.0.1:8000/v1/chat/completions -H "Content-Type: application/json" \\
    -d '{"model": "sft", "messages": [{"role": "user", "content": "What does the json module do?"}], "max_tokens": 64}'
```
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import reprlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from hf_llm.errors import UsageError

if TYPE_CHECKING:
    from transformers import GenerationConfig, PretrainedConfig, PreTrainedModel

# A paged KV cache of 32 blocks x 256 positions (transformers' default page size) on CPU: 8192 token slots, about
# 0.6 GB for a 124M-parameter GPT instead of most of the machine's RAM. `--cb-num-blocks`, `--cb-block-size` or
# `--cb-max-memory-percent` override it.
CPU_CB_NUM_BLOCKS = 32
_CB_SIZE_FLAGS = ("--cb-num-blocks", "--cb-block-size", "--cb-max-memory-percent")


def expose_architectures() -> None:
    """
    Make hf_llm's model classes attributes of the `transformers` module, where `transformers serve` looks them up
    (`getattr(transformers, config.architectures[0])`).

    Raises:
        RuntimeError: when `transformers` already has a different class of the same name (a future transformers
            release): a checkpoint naming it would then load the wrong model.
    """
    import transformers

    from hf_llm import GPTForCausalLM, GPTForSequenceClassification, GPTModel

    for cls in (GPTModel, GPTForCausalLM, GPTForSequenceClassification):
        existing = getattr(transformers, cls.__name__, None)
        if existing is not None and existing is not cls:
            raise RuntimeError(
                f"transformers {transformers.__version__} has its own {cls.__name__} ({existing.__module__}); "
                "`hf-llm serve` cannot expose hf_llm's class under that name. Use transformers<6 as pyproject pins."
            )
        setattr(transformers, cls.__name__, cls)


def context_length(model: PreTrainedModel) -> int | None:
    """The most positions the model can attend over (`max_position_embeddings`), or `None` when it has no limit."""
    return getattr(model.config.get_text_config(), "max_position_embeddings", None)


def fit_to_context(model: PreTrainedModel, prompt_length: int, max_new_tokens: int | None) -> int | None:
    """
    `max_new_tokens` clamped so that prompt plus generated tokens fit the model's positions.

    Args:
        model (`PreTrainedModel`): The model that will generate.
        prompt_length (`int`): Tokens in the prompt (the chat template applied).
        max_new_tokens (`int`, *optional*): What the request asked for; `None` means "as many as fit".

    Returns:
        `int | None`: The clamped number of new tokens (`None` when the model has no position limit and none was
        asked for).

    Raises:
        ValueError: when the prompt leaves no room for a single new token.
    """
    return _fit_to_length(context_length(model), prompt_length, max_new_tokens)


def _fit_to_length(context: int | None, prompt_length: int, max_new_tokens: int | None) -> int | None:
    """[`fit_to_context`] for a context of `context` positions (`None`: no limit)."""
    if context is None:
        return max_new_tokens
    room = context - prompt_length
    if room < 1:
        raise ValueError(
            f"the prompt is {prompt_length} tokens and the model's context is {context} "
            f"positions, which leaves no room for an answer; shorten the messages to fewer than {context} tokens."
        )
    return room if max_new_tokens is None else min(max_new_tokens, room)


# ---- Requests: every field honoured, or refused by name ----

CHAT_COMPLETIONS, COMPLETIONS, RESPONSES = "/v1/chat/completions", "/v1/completions", "/v1/responses"
TEXT_ENDPOINTS = (CHAT_COMPLETIONS, COMPLETIONS, RESPONSES)


class RequestError(ValueError):
    """A request the server cannot serve as asked: a 400 whose `param` is `field`, the request field at fault."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"`{field}` {problem}")
        self.field = field

    def content(self) -> dict:
        """The error as OpenAI's API answers one (the `openai` client reads `message` and `param` from it)."""
        return {"error": {"message": str(self), "type": "invalid_request_error", "param": self.field, "code": None}}


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """What the request checks need to know of the model a server runs."""

    generation_config: GenerationConfig  # the model's: each request's settings go on top of it
    continuous_batching: bool  # whether it generates with `--continuous-batching`
    text_only: bool  # whether it reads text only (transformers drops the image and audio parts of its messages)
    tools: bool  # whether its chat template renders tools and the server parses tool calls out of its answers


def _show(value: object) -> str:
    return reprlib.repr(value)


def _integer(minimum: int | None = None) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            return f"must be an integer{'' if minimum is None else f' >= {minimum}'}, not {_show(value)}"
        return None

    return check


def _number(low: float, high: float) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            return f"must be a number from {low} to {high}, not {_show(value)}"
        return None

    return check


def _of_type(kind: type, name: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        return None if isinstance(value, kind) else f"must be {name}, not {_show(value)}"

    return check


def _frequency_penalty(value: object) -> str | None:
    # transformers applies it as generate's `repetition_penalty = 1 + frequency_penalty`, which must be positive.
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1 < value <= 2:
        return f"must be a number above -1 and at most 2 (it becomes repetition_penalty 1 + it), not {_show(value)}"
    return None


def _stop(value: object) -> str | None:
    if isinstance(value, str) or (
        isinstance(value, list) and len(value) <= 4 and all(isinstance(stop, str) and stop for stop in value)
    ):
        return None
    return f"must be a string or a list of at most 4 non-empty strings, not {_show(value)}"


def _logit_bias(value: object) -> str | None:
    if isinstance(value, dict) and all(
        isinstance(token, str) and token.isdigit() and _number(-100, 100)(bias) is None
        for token, bias in value.items()
    ):
        return None
    return f"must map token ids (strings of digits) to numbers from -100 to 100, not {_show(value)}"


def _generation_config(value: object) -> str | None:
    try:
        settings = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        return f"must be a JSON object in a string, such as '{{\"top_k\": 20}}', not {_show(value)}"
    return None


def _checked_below(value: object) -> str | None:
    return None  # the messages, prompt or input: their checks need the model (`_check_prompt`)


_SETTINGS = {
    "model": _of_type(str, "a string"),
    "stream": _of_type(bool, "true or false"),
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "seed": _integer(),
    "generation_config": _generation_config,
    # Nothing to do for these but take them: they do not change the answer.
    "stream_options": _of_type(dict, "an object"),
    "user": _of_type(str, "a string"),
    "metadata": _of_type(dict, "an object"),
    "service_tier": _of_type(str, "a string"),
    "parallel_tool_calls": _of_type(bool, "true or false"),
    "prompt_cache_key": _of_type(str, "a string"),
    "prompt_cache_retention": _of_type(str, "a string"),
    "safety_identifier": _of_type(str, "a string"),
}
# The fields each endpoint honours (transformers' handlers read them), with their checks, and those it requires.
_ENDPOINT_FIELDS = {
    CHAT_COMPLETIONS: (
        {
            **_SETTINGS,
            "messages": _checked_below,
            "max_tokens": _integer(1),
            "max_completion_tokens": _integer(1),
            "stop": _stop,
            "frequency_penalty": _frequency_penalty,
            "logit_bias": _logit_bias,
            "chat_template_kwargs": _of_type(dict, "an object"),
            "tools": _of_type(list, "a list"),
            "tool_choice": _of_type(str | dict, "a string or an object"),
        },
        "messages",
    ),
    COMPLETIONS: (
        {
            **_SETTINGS,
            "prompt": _checked_below,
            "max_tokens": _integer(1),
            "stop": _stop,
            "frequency_penalty": _frequency_penalty,
        },
        "prompt",
    ),
    RESPONSES: (
        {
            **_SETTINGS,
            "input": _checked_below,
            "instructions": _of_type(str, "a string"),
            "max_output_tokens": _integer(1),
            "tools": _of_type(list, "a list"),
            "tool_choice": _of_type(str | dict, "a string or an object"),
        },
        "input",
    ),
}
# Fields of OpenAI's API that transformers takes and ignores, with the values that ask for nothing (null always does):
# a client sending its defaults is served, one asking for more is told why not.
_IGNORED_FIELDS = {
    "n": ((1,), "one answer per request: send the request n times"),
    "best_of": ((1,), "one answer per request"),
    "logprobs": ((False,), "no log probabilities are returned"),
    "top_logprobs": ((0,), "no log probabilities are returned"),
    "response_format": (({"type": "text"},), "the answer is free text, not held to a format"),
    "text": (({"format": {"type": "text"}},), "the answer is free text, not held to a format"),
    "presence_penalty": ((0,), "only frequency_penalty is applied"),
    "logit_bias": (({},), "only chat completions apply it"),
    "echo": ((False,), "the prompt is not echoed"),
    "suffix": (("",), "the model does not see the suffix (no fill-in-the-middle)"),
    "modalities": ((["text"],), "the answer is text"),
    "functions": (([],), "the deprecated functions API is not supported; use tools"),
    "function_call": (("none", "auto"), "the deprecated functions API is not supported; use tools"),
    "store": ((False,), "answers are not stored"),
    "background": ((False,), "answers are not stored"),
    "truncation": (("disabled",), "an over-long input is refused, not truncated"),
    "include": (([],), "nothing more is returned"),
}


def _asks_nothing(value: object, neutral_values: tuple) -> bool:
    # False is 0 and 1 is True to Python: a boolean only matches a boolean.
    return any(value == neutral and isinstance(value, bool) == isinstance(neutral, bool) for neutral in neutral_values)


def check_request(endpoint: str, body: dict, model: ServedModel) -> None:
    """
    Refuse a request that `transformers serve` would answer with something other than what it asks for, or fail on.

    Args:
        endpoint (`str`): The path it was sent to, one of `TEXT_ENDPOINTS`.
        body (`dict`): Its JSON body.
        model (`ServedModel`): What the request checks need to know of the model.

    Raises:
        RequestError: naming the first field the server cannot honour, or cannot read (a 400).
    """
    fields, required = _ENDPOINT_FIELDS[endpoint]
    if body.get(required) is None:
        raise RequestError(required, f"is missing: {endpoint} needs it")
    for field, value in body.items():
        if value is None:  # as if not sent
            continue
        if field in fields:
            problem = fields[field](value)
            if problem is not None:
                raise RequestError(field, problem)
        elif field in _IGNORED_FIELDS:
            neutral_values, reason = _IGNORED_FIELDS[field]
            if not _asks_nothing(value, neutral_values):
                raise RequestError(field, f"= {_show(value)} is not supported by this server: {reason}.")
        else:
            raise RequestError(field, f"is not a field this server honours at {endpoint}.")
    _check_prompt(endpoint, body, model)
    _check_tools(body, model)
    _check_generation_settings(body, model)


_CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
_INPUT_ROLES = ("system", "developer", "user", "assistant")
_TEXT_PARTS = ("text", "input_text", "output_text")
_NO_TOOLS = "this model's chat template does not render tools, or the server cannot read tool calls in its answers"


def _check_prompt(endpoint: str, body: dict, model: ServedModel) -> None:
    """The request's messages (chat completions), prompt (completions) or input (responses)."""
    if endpoint == COMPLETIONS:
        if not isinstance(body["prompt"], str) or not body["prompt"]:
            raise RequestError(
                "prompt", f"must be a non-empty string (one prompt per request), not {_show(body['prompt'])}"
            )
    elif endpoint == CHAT_COMPLETIONS:
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise RequestError(
                "messages", f"must be a non-empty list of {{'role', 'content'}} objects, not {_show(messages)}"
            )
        for index, message in enumerate(messages):
            _check_message(message, f"messages[{index}]", _CHAT_ROLES, model)
    else:
        items = body["input"]
        if isinstance(items, str):
            return
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise RequestError("input", f"must be a string or a non-empty list of objects, not {_show(items)}")
        if "role" not in items[0]:  # the parts of one user message, as transformers reads it
            _check_content(items, "input", model)
            return
        for index, item in enumerate(items):
            field = f"input[{index}]"
            if "role" in item:
                _check_message(item, field, _INPUT_ROLES, model)
            elif item.get("type") in ("function_call", "function_call_output"):
                if not model.tools:
                    raise RequestError(field, f"is a {item['type']} item, and {_NO_TOOLS}.")
            elif item.get("type") != "reasoning":
                raise RequestError(
                    f"{field}.type", f"{_show(item.get('type'))} is not an input item this server takes."
                )


def _check_message(message: object, field: str, roles: tuple[str, ...], model: ServedModel) -> None:
    if not isinstance(message, dict):
        raise RequestError(field, f"must be an object with a role and a content, not {_show(message)}")
    role = message.get("role")
    if role not in roles:
        raise RequestError(f"{field}.role", f"{_show(role)} is not a role; roles are {', '.join(roles)}.")
    if (role == "tool" or message.get("tool_calls")) and not model.tools:
        kind = "a tool message" if role == "tool" else "an assistant message with tool calls"
        raise RequestError(field, f"is {kind}, and {_NO_TOOLS}.")
    content = message.get("content")
    if content is None and role == "assistant" and message.get("tool_calls"):
        return
    _check_content(content, f"{field}.content", model)


def _check_content(content: object, field: str, model: ServedModel) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise RequestError(field, f"must be a string or a list of content parts, not {_show(content)}")
    for index, part in enumerate(content):
        part_type = part.get("type") if isinstance(part, dict) else None
        if part_type in _TEXT_PARTS:
            if not isinstance(part.get("text"), str):
                raise RequestError(f"{field}[{index}].text", f"must be a string, not {_show(part.get('text'))}")
        elif not isinstance(part_type, str):
            raise RequestError(f"{field}[{index}]", f"must be a content part with a type, not {_show(part)}")
        elif model.text_only:
            raise RequestError(
                f"{field}[{index}]", f"is a part of type {part_type!r}, and this model reads text only."
            )


def _check_tools(body: dict, model: ServedModel) -> None:
    tools, tool_choice = body.get("tools"), body.get("tool_choice")
    if tools and not model.tools:
        raise RequestError("tools", f"cannot be honoured: {_NO_TOOLS}; send the request without tools.")
    if tool_choice is None or (tool_choice == "auto" and tools) or (tool_choice in ("auto", "none") and not tools):
        return
    raise RequestError(
        "tool_choice",
        f"= {_show(tool_choice)} is not supported by this server: the model calls the tools it is given as it sees "
        "fit ('auto'), without tools it calls none.",
    )


# The settings continuous batching takes from each request (`CBGenerateRunner`); the others are the model's.
_PER_REQUEST_UNDER_CB = ("max_new_tokens", "eos_token_id", "temperature", "top_k", "top_p")


def _check_generation_settings(body: dict, model: ServedModel) -> None:
    """Sampling settings that the model's decoding would ignore, and what continuous batching ignores."""
    config = model.generation_config
    requested = json.loads(body["generation_config"]) if body.get("generation_config") is not None else {}
    do_sample = requested.get("do_sample", config.do_sample)
    temperature = body["temperature"] if body.get("temperature") is not None else requested.get("temperature")
    top_p = body["top_p"] if body.get("top_p") is not None else requested.get("top_p")
    top_k = requested.get("top_k")
    if model.continuous_batching:
        cb = "continuous batching (--continuous-batching)"
        ignored = sorted(set(requested) - {*_PER_REQUEST_UNDER_CB, "do_sample"})
        if ignored:
            raise RequestError(
                "generation_config",
                f"sets {', '.join(ignored)}, which {cb} ignores: it takes {', '.join(_PER_REQUEST_UNDER_CB)} per "
                "request.",
            )
        if do_sample != config.do_sample:
            raise RequestError("generation_config", f"sets do_sample, which {cb} takes from the model only.")
        if body.get("stop"):
            raise RequestError("stop", f"is ignored by {cb}, which stops at eos or max_tokens only.")
        if body.get("frequency_penalty"):
            raise RequestError("frequency_penalty", f"is ignored by {cb}.")
        if body.get("logit_bias"):
            raise RequestError("logit_bias", f"is ignored by {cb}.")
    if temperature == 0:  # greedy: transformers sets do_sample false; continuous batching decodes top-k 1
        if model.continuous_batching and config.do_sample and not config.top_k:
            raise RequestError(
                "temperature", "= 0 (greedy) cannot be honoured: continuous batching needs a top_k in the model's "
                "generation config to decode a request greedily."
            )  # fmt: skip
        return
    # Each sampling setting, the request field that sets it, and whether continuous batching can set it per request
    # (it can when the model's generation config has a step for it: transformers builds one unless the setting is
    # neutral).
    for setting, field, value, neutral, has_step in (
        ("temperature", "temperature", temperature, 1.0, config.temperature not in (None, 1.0)),
        ("top_p", "top_p", top_p, 1.0, config.top_p is not None and config.top_p < 1.0),
        ("top_k", "generation_config", top_k, 0, bool(config.top_k)),
    ):
        if value is None:
            continue
        if not do_sample and (setting == "temperature" or value != neutral):  # any temperature asks to sample
            fix = (
                "continuous batching cannot sample per request"
                if model.continuous_batching
                else 'to sample, add "generation_config": "{\\"do_sample\\": true}"'
            )
            raise RequestError(
                field, f"sets {setting}, which this model ignores: it decodes greedily (do_sample is false in its "
                f"generation config); {fix}."
            )  # fmt: skip
        if model.continuous_batching and do_sample and not has_step and value != neutral:
            raise RequestError(
                field, f"sets {setting}, which continuous batching sets per request only when the model's generation "
                f"config sets one."
            )  # fmt: skip


# ---- Where `hf-llm serve` touches transformers' serving code (private API, so kept to these) ----
#
# - `transformers.cli.serving.model_manager.ModelLoader` and `.EngineClient`, `transformers.cli.serving.server.
#   build_server`: the serve command looks them up there by name when it builds them, so `adjust_transformers_serve`
#   puts ours there.
# - `ModelLoader.load_model_and_processor(model_id, on_progress)`: loads in the model's process, returns both;
#   `ModelLoader.load_config(model_id)`: the model's config and generation config, read in the API server.
# - `EngineClient.generate_streaming` / `generate_non_streaming` (`inputs`, `generation_kwargs`): the way of every text
#   request to the model; `EngineClient.generation_state.context_length(EngineClient.model_config)`: its limit;
#   `EngineClient.generation_config`, `.use_cb`, `.modality`, `.processor`: what the request checks read.
# - `build_server(model_manager, ...)`: returns the FastAPI app, which we put the request checks in front of;
#   `ModelManager.force_model` (the model the command line pinned), `.get_engine(model)`, `.list_models()`.
# - `transformers.cli.serving.utils.get_response_template(processor, config)`: whether the server reads tool calls.
#
# The subclasses are built on first use: their bases come with the serving extra, which `hf-llm` must not need.


def __getattr__(name: str) -> type:
    # Pickle finds the loader here by name in the model's process (see `_model_loader_class`).
    if name == "HfLlmModelLoader":
        return _model_loader_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _give_sampling_a_top_k(generation_config: GenerationConfig, config: PretrainedConfig) -> None:
    if generation_config.do_sample and generation_config.top_k is None:
        # Continuous batching decodes a greedy request (`temperature: 0`) as top-k 1, which it can only set per
        # request when the model's generation config has a top-k step: without one, the request is sampled. A top-k of
        # the whole vocabulary keeps every token, so sampling is unchanged.
        generation_config.top_k = config.get_text_config().vocab_size


@functools.cache
def _model_loader_class() -> type:
    """
    transformers' `ModelLoader`, with hf_llm's classes put on the `transformers` module before the model loads.

    The loader's `load_model_and_processor` runs in the model's process, which transformers starts with spawn and
    where it resolves the checkpoint's class by name on `transformers`. The loader reaches that process pickled, so
    this class must be found by name in this module there: it is `hf_llm.serving.HfLlmModelLoader`.
    """
    from transformers.cli.serving.model_manager import ModelLoader

    class HfLlmModelLoader(ModelLoader):
        def load_model_and_processor(self, model_id: str, on_progress: Callable | None = None) -> tuple:
            expose_architectures()
            model, processor = super().load_model_and_processor(model_id, on_progress=on_progress)
            _give_sampling_a_top_k(model.generation_config, model.config)
            return model, processor

        def load_config(self, model_id: str) -> tuple:
            # The API server's copy, which requests' settings go on top of: the same as the model's process has.
            config, generation_config = super().load_config(model_id)
            _give_sampling_a_top_k(generation_config, config)
            return config, generation_config

    HfLlmModelLoader.__module__, HfLlmModelLoader.__qualname__ = __name__, "HfLlmModelLoader"
    return HfLlmModelLoader


@functools.cache
def _context_bound_engine_client_class() -> type:
    """
    transformers' `EngineClient` (the API server's handle on a model's process), with every request's
    `max_new_tokens` clamped to the room its prompt leaves first.

    Every text endpoint (chat completions, completions, responses) hands its request to the model through
    `generate_streaming` or `generate_non_streaming`, then reads its finish reason from the same `generation_kwargs`:
    clamped in place, an answer cut at the context ends with `finish_reason: "length"`. The limit is the server's own
    (`--max-model-len`, else `max_position_embeddings`), the one it refuses prompts by.
    """
    from transformers.cli.serving.model_manager import EngineClient

    class ContextBoundEngineClient(EngineClient):
        def _fit_to_context(self, inputs: dict, generation_kwargs: dict) -> None:
            input_ids = inputs["input_ids"]
            # Continuous batching takes a list of ids, sequential generation a (1, T) tensor.
            prompt_length = len(input_ids) if isinstance(input_ids, list) else input_ids.shape[-1]
            context = self.generation_state.context_length(self.model_config)
            # A ValueError is the server's 400.
            max_new_tokens = _fit_to_length(context, prompt_length, generation_kwargs.get("max_new_tokens"))
            generation_kwargs["max_new_tokens"] = max_new_tokens

        async def generate_non_streaming(self, inputs: dict, generation_kwargs: dict) -> tuple:
            self._fit_to_context(inputs, generation_kwargs)
            return await super().generate_non_streaming(inputs, generation_kwargs)

        def generate_streaming(self, inputs: dict, generation_kwargs: dict, response_parser=None) -> tuple:
            self._fit_to_context(inputs, generation_kwargs)
            return super().generate_streaming(inputs, generation_kwargs, response_parser=response_parser)

    ContextBoundEngineClient.__module__, ContextBoundEngineClient.__qualname__ = __name__, "ContextBoundEngineClient"
    return ContextBoundEngineClient


class RequestChecks:
    """
    ASGI middleware in front of transformers' routes: lists the model under its served name (`/v1/models`), takes that
    name for the model's path, and answers a text request that `check_request` refuses with a 400 before transformers
    reads it.

    Args:
        app: The app it is in front of.
        model_manager (`ModelManager`): transformers' models of the server, pinned to one (`force_model`).
        served_model_name (`str`): The name the model is listed under.
    """

    def __init__(self, app: Callable, model_manager: object, served_model_name: str):
        self.app, self.model_manager, self.served_model_name = app, model_manager, served_model_name
        self.served_models: dict[str, ServedModel] = {}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "GET" and scope["path"] == "/v1/models":
            return await _send_json(send, 200, {"object": "list", "data": self.list_models()})
        if scope["method"] != "POST" or scope["path"] not in TEXT_ENDPOINTS:
            return await self.app(scope, receive, send)
        raw, message = b"", {"more_body": True}
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            raw += message.get("body", b"")
        try:
            body = json.loads(raw)
        except ValueError:  # not JSON: transformers' app answers it (422)
            body = None
        if isinstance(body, dict):
            try:
                checked = self.check(scope["path"], body)
            except RequestError as error:
                return await _send_json(send, 400, error.content())
            if checked is not body:
                raw = json.dumps(checked).encode()
        read = False

        async def receive_body_again() -> dict:
            nonlocal read
            if read:  # then what comes after the body (the client leaving)
                return await receive()
            read = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(scope, receive_body_again, send)

    def list_models(self) -> list[dict]:
        path = self.model_manager.force_model
        return [
            {**model, "id": self.served_model_name, "root": path} if model["id"] == path else model
            for model in self.model_manager.list_models()
        ]

    def check(self, endpoint: str, body: dict) -> dict:
        """The body, with the served name replaced by the model's path, after `check_request`."""
        path, model = self.model_manager.force_model, body.get("model")
        if model == self.served_model_name and model != path:
            body = {**body, "model": path}
        elif isinstance(model, str) and model != path:
            raise RequestError(
                "model", f"{model!r} is not served here: this server serves {self.served_model_name!r} ({path})."
            )
        engine = self.model_manager.get_engine(path)
        if engine.model_id not in self.served_models:
            self.served_models[engine.model_id] = ServedModel(
                generation_config=engine.generation_config,
                continuous_batching=engine.use_cb,
                text_only=engine.modality.value == "LLM",
                tools=_reads_tools(engine.processor, engine.model_config),
            )
        check_request(endpoint, body, self.served_models[engine.model_id])
        return body


async def _send_json(send: Callable, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _reads_tools(processor: object, config: PretrainedConfig) -> bool:
    """Whether tools reach the model (its chat template renders them) and its tool calls reach the client (the server
    knows where they are in its answers)."""
    from jinja2 import TemplateError
    from transformers.cli.serving.utils import get_response_template

    response_template = get_response_template(processor, config)
    if response_template is None or "tool_calls" not in response_template.get("fields", {}):
        return False
    tokenizer = getattr(processor, "tokenizer", processor)
    tool = {"type": "function", "function": {"name": "hf_llm_probe", "parameters": {"type": "object"}}}
    try:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "?"}], tools=[tool], tokenize=False, add_generation_prompt=True
        )
    except (TemplateError, ValueError):  # no chat template, or one that refuses tools
        return False
    return "hf_llm_probe" in prompt


def _add_request_checks(app: object, model_manager: object, served_model_name: str) -> None:
    """
    Put [`RequestChecks`] in front of a `transformers serve` app, and answer a chat template's refusal of a request's
    messages (a `TemplateError`, a bare 500 in transformers) with a 400.
    """
    from fastapi.responses import JSONResponse
    from jinja2 import TemplateError

    async def template_refused(request: object, error: TemplateError) -> JSONResponse:
        field = "input" if request.url.path == RESPONSES else "messages"
        refusal = RequestError(field, f"cannot be rendered by the model's chat template: {error}")
        return JSONResponse(refusal.content(), status_code=400)

    app.add_exception_handler(TemplateError, template_refused)
    app.add_middleware(RequestChecks, model_manager=model_manager, served_model_name=served_model_name)


def adjust_transformers_serve(served_model_name: str) -> None:
    """
    Install hf_llm's serving pieces where `transformers serve` builds its own, by the names it builds them by:
    `ModelLoader` (looked up in `transformers.cli.serving.model_manager` when the serve command starts), `EngineClient`
    (looked up there for each model the server runs) and `build_server` (looked up in `transformers.cli.serving.server`
    when the server starts), whose app gets the request checks. Call before the serve command.

    Args:
        served_model_name (`str`): The name `/v1/models` lists the model under, which requests may use.
    """
    from transformers.cli.serving import model_manager, server

    loader_class, engine_client_class = _model_loader_class(), _context_bound_engine_client_class()
    model_manager.ModelLoader = loader_class
    model_manager.EngineClient = engine_client_class
    build_server = getattr(server.build_server, "__wrapped__", server.build_server)  # transformers' own

    @functools.wraps(build_server)
    def build_checked_server(manager: object, *args, **kwargs) -> object:
        app = build_server(manager, *args, **kwargs)
        _add_request_checks(app, manager, served_model_name)
        return app

    server.build_server = build_checked_server


def _runs_on_cpu(device: str) -> bool:
    import torch

    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def default_served_model_name(model: str) -> str:
    """The name `/v1/models` lists a model under without `--served-model-name`: a directory's own name (`sft` for
    `outputs/pipeline/sft`), a Hub repo id as it is."""
    return os.path.basename(os.path.abspath(model)) if os.path.isdir(model) else model


def serve_arguments(argv: list[str]) -> tuple[list[str], str]:
    """
    The `transformers serve` command line for `hf-llm serve ARGV`: ARGV as given, less our `--served-model-name`, plus
    the CPU KV-cache bound under `--continuous-batching` when no cache size is given; and the served model name.

    Args:
        argv (`list[str]`): The model (a directory or Hub repo id), then any flags of `transformers serve`, and
            `--served-model-name NAME`.

    Returns:
        `tuple[list[str], str]`: The arguments of transformers' CLI, and the name the model is served under
        (`--served-model-name`, else [`default_served_model_name`]).

    Raises:
        UsageError: when no model comes first, it is a LoRA adapter (which `transformers serve` cannot load),
            `--api-server-count` asks for more than the one API server that bounds requests to the context, or
            `--served-model-name` is empty.
    """
    if not argv or argv[0].startswith("-"):
        raise UsageError(
            "hf-llm serve needs a model first: `hf-llm serve DIR_OR_REPO_ID [--host 127.0.0.1 --port 8000 ...]` "
            "(`hf-llm serve --help` lists the flags of transformers serve)."
        )
    model = argv[0]
    if not os.path.exists(model) and (model.startswith(("/", ".", "~")) or model.count("/") > 1):
        raise UsageError(f"{model} does not exist; pass a directory written by save_pretrained or a Hub repo id.")
    ours = argparse.ArgumentParser(prog="hf-llm serve", add_help=False, allow_abbrev=False)
    ours.add_argument("--served-model-name")
    named, flags = ours.parse_known_args(argv[1:])
    if named.served_model_name is not None and not named.served_model_name.strip():
        raise UsageError("--served-model-name is empty; pass a name such as --served-model-name sft, or drop it.")
    served_model_name = named.served_model_name or default_served_model_name(model)
    # Only the flags that decide the KV-cache bound or the API servers are read here; transformers' CLI parses (and
    # checks) them all.
    parser = argparse.ArgumentParser(prog="hf-llm serve", add_help=False, allow_abbrev=False)
    parser.add_argument("--continuous-batching", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--api-server-count")
    known, _ = parser.parse_known_args(flags)
    if known.api_server_count not in (None, "1"):
        # Further API servers are processes that transformers spawns, without hf_llm's context bound.
        raise UsageError(
            f"hf-llm serve runs one API server, the one that fits each request to the model's context; drop "
            f"--api-server-count {known.api_server_count}."
        )
    if os.path.isdir(model) and os.path.isfile(os.path.join(model, "adapter_config.json")):
        merged = os.path.join(model, "merged")
        fix = (
            f"serve the merged model next to it: `hf-llm serve {merged}`"
            if os.path.isfile(os.path.join(merged, "config.json"))
            else f"merge it first (`hf-llm merge {model} --output_dir {merged}`) and serve {merged}"
        )
        raise UsageError(f"{model} is a LoRA adapter, and transformers serve loads full checkpoints only; {fix}.")
    if os.path.isdir(model) and not os.path.isfile(os.path.join(model, "config.json")):
        raise UsageError(f"{model} has no config.json; pass a directory written by save_pretrained or a Hub repo id.")
    extra = []
    given = {arg.split("=", 1)[0] for arg in flags}
    if known.continuous_batching and _runs_on_cpu(known.device) and not given & set(_CB_SIZE_FLAGS):
        extra = ["--cb-num-blocks", str(CPU_CB_NUM_BLOCKS)]
    return ["serve", model, *flags, *extra], served_model_name


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """`hf-llm serve MODEL [FLAGS]`: the flags are those of `transformers serve`, parsed by transformers' CLI."""
    command = commands.add_parser(
        "serve", help="OpenAI-compatible server (transformers serve) on a checkpoint", add_help=False
    )
    command.set_defaults(run=run_serve_command, forwards_argv=True)


def run_serve_command(args: argparse.Namespace) -> int:
    return serve(args.forwarded_argv)


def serve(argv: list[str]) -> int:
    """
    `hf-llm serve ARGV`: run transformers' `serve` command (its typer app, as the `transformers` console script does)
    on an hf_llm checkpoint. Blocks until the server stops.

    Args:
        argv (`list[str]`): The model (a directory or Hub repo id), then any flags of `transformers serve`.

    Returns:
        `int`: The exit code of transformers' CLI.
    """
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        raise UsageError('hf-llm serve needs the serving extra: pip install "hf_llm[serving]"')
    from transformers.cli.transformers import app

    if argv[:1] in (["--help"], ["-h"]):
        print(__doc__.split("\n\n")[0] + "\n")
        print(f"{'--served-model-name NAME':26}The name /v1/models lists the model under, which requests may use too")
        print(
            f"{'':26}(default: the checkpoint directory's name, or the Hub repo id). The flags of transformers serve:"
        )
        arguments = ["serve", "--help"]
    else:
        arguments, served_model_name = serve_arguments(argv)
        expose_architectures()  # here too, so that a name clash stops `hf-llm serve` before any process starts
        adjust_transformers_serve(served_model_name)
    try:
        app(args=arguments, prog_name="hf-llm")
    except SystemExit as exit:  # typer's standalone mode ends with sys.exit, also on success
        return exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
    return 0


@contextlib.contextmanager
def serve_in_background(model: str, *flags: str, log_path: str | os.PathLike, timeout: float = 180.0) -> Iterator[str]:
    """
    Run `hf-llm serve MODEL FLAGS` in a subprocess on a free port of 127.0.0.1 until the `with` block ends, for
    scripts and tests that talk to the server (the `openai` SDK, lm-eval-harness's `local-chat-completions`):

    ```python
    with serve_in_background("outputs/pipeline/sft", "--continuous-batching", log_path="serve.log") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
    ```

    Args:
        model (`str`): A checkpoint directory or Hub repo id.
        flags (`str`): More flags of `hf-llm serve` (`--host` and `--port` are set here).
        log_path (`str` or `os.PathLike`): Where the server's output goes.
        timeout (`float`, defaults to 180): Seconds to wait for `GET /health` to answer 200.

    Yields:
        `str`: The server's base URL (`http://127.0.0.1:PORT`).

    Raises:
        `RuntimeError`: When the server exits or does not answer in time; the message ends with its log.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "hf_llm.cli", "serve", model, "--host", "127.0.0.1", "--port", str(port), *flags]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def log_tail() -> str:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            return log.read()[-3000:]

    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"hf-llm serve exited with {server.returncode}:\n{log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"hf-llm serve did not answer /health in {timeout:.0f} s:\n{log_tail()}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
