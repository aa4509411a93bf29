"""`hf-llm serve`: transformers' own OpenAI-compatible server (`transformers serve`) on hf_llm checkpoints.

No server of our own: `hf-llm serve DIR [FLAGS]` is `transformers serve DIR [FLAGS]` (every flag of
`transformers serve --help` passes through, but `--api-server-count`) after the adjustments that transformers needs
for a model family that is not part of it (DESIGN §12):

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

```bash
pip install "hf_llm[serving]"
hf-llm serve outputs/pipeline/sft --host 127.0.0.1 --port 8000 [--continuous-batching]
curl http://127.0.0.1:8000/v1/chat/completions -H "Content-Type: application/json" \\
    -d '{"messages": [{"role": "user", "content": "What does the json module do?"}], "max_tokens": 64}'
```
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from hf_llm.errors import UsageError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

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


# ---- Where `hf-llm serve` touches transformers' serving code (private API, so kept to these) ----
#
# - `transformers.cli.serving.model_manager.ModelLoader` and `.EngineClient`: the serve command looks both up there by
#   name when it builds them, so `adjust_transformers_serve` puts our subclasses there.
# - `ModelLoader.load_model_and_processor(model_id, on_progress)`: loads in the model's process, returns both.
# - `EngineClient.generate_streaming` / `generate_non_streaming` (`inputs`, `generation_kwargs`): the way of every text
#   request to the model; `EngineClient.generation_state.context_length(EngineClient.model_config)`: its limit.
#
# The subclasses are built on first use: their bases come with the serving extra, which `hf-llm` must not need.


def __getattr__(name: str) -> type:
    # Pickle finds the loader here by name in the model's process (see `_model_loader_class`).
    if name == "HfLlmModelLoader":
        return _model_loader_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            generation_config = model.generation_config
            if generation_config.do_sample and generation_config.top_k is None:
                # Continuous batching decodes a greedy request (`temperature: 0`) as top-k 1, which it can only set per
                # request when the model's generation config has a top-k step: without one, the request is sampled. A
                # top-k of the whole vocabulary keeps every token, so sampling is unchanged.
                generation_config.top_k = model.config.get_text_config().vocab_size
            return model, processor

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


def adjust_transformers_serve() -> None:
    """
    Install hf_llm's two serving classes where `transformers serve` builds its own, by the names it builds them by:
    `ModelLoader` (looked up in `transformers.cli.serving.model_manager` when the serve command starts) and
    `EngineClient` (looked up there for each model the server runs). Call before the serve command.
    """
    from transformers.cli.serving import model_manager

    loader_class, engine_client_class = _model_loader_class(), _context_bound_engine_client_class()
    model_manager.ModelLoader = loader_class
    model_manager.EngineClient = engine_client_class


def _runs_on_cpu(device: str) -> bool:
    import torch

    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def serve_arguments(argv: list[str]) -> list[str]:
    """
    The `transformers serve` command line for `hf-llm serve ARGV`: ARGV as given, plus the CPU KV-cache bound under
    `--continuous-batching` when no cache size is given.

    Args:
        argv (`list[str]`): The model (a directory or Hub repo id), then any flags of `transformers serve`.

    Raises:
        UsageError: when no model comes first, it is a LoRA adapter (which `transformers serve` cannot load), or
            `--api-server-count` asks for more than the one API server that bounds requests to the context.
    """
    if not argv or argv[0].startswith("-"):
        raise UsageError(
            "hf-llm serve needs a model first: `hf-llm serve DIR_OR_REPO_ID [--host 127.0.0.1 --port 8000 ...]` "
            "(`hf-llm serve --help` lists the flags of transformers serve)."
        )
    model = argv[0]
    if not os.path.exists(model) and (model.startswith(("/", ".", "~")) or model.count("/") > 1):
        raise UsageError(f"{model} does not exist; pass a directory written by save_pretrained or a Hub repo id.")
    # Only the flags that decide the KV-cache bound or the API servers are read here; transformers' CLI parses (and
    # checks) them all.
    parser = argparse.ArgumentParser(prog="hf-llm serve", add_help=False)
    parser.add_argument("--continuous-batching", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--api-server-count")
    known, _ = parser.parse_known_args(argv[1:])
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
    given = {arg.split("=", 1)[0] for arg in argv}
    if known.continuous_batching and _runs_on_cpu(known.device) and not given & set(_CB_SIZE_FLAGS):
        extra = ["--cb-num-blocks", str(CPU_CB_NUM_BLOCKS)]
    return ["serve", *argv, *extra]


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
        arguments = ["serve", "--help"]
    else:
        arguments = serve_arguments(argv)
        expose_architectures()  # here too, so that a name clash stops `hf-llm serve` before any process starts
        adjust_transformers_serve()
    try:
        app(args=arguments, prog_name="hf-llm")
    except SystemExit as exit:  # typer's standalone mode ends with sys.exit, also on success
        return exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
    return 0
