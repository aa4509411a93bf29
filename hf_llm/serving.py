"""`hf-llm serve`: transformers' own OpenAI-compatible server (`transformers serve`) on hf_llm checkpoints.

No server of our own: `hf-llm serve DIR [FLAGS]` is `transformers serve DIR [FLAGS]` (every flag of
`transformers serve --help` passes through) after three adjustments that transformers 5.23 needs for a model family
that is not part of it (DESIGN §12):

- **Our classes on the `transformers` module.** The server resolves a checkpoint's class as
  `getattr(transformers, config.architectures[0])`, so `GPTForCausalLM` must be an attribute of `transformers`;
  registering it with the Auto classes (what `import hf_llm` does) is not enough, nor is `--trust-remote-code`.
- **Every request fits the context.** A request without `max_tokens` asks for at least 1024 new tokens, and a prompt
  plus `max_tokens` past `max_position_embeddings` fails inside the model's forward: mid-stream without continuous
  batching, and under `--continuous-batching` the exception kills the batching worker (any forward error is fatal to
  it in 5.23), so every later request gets 503. Here `max_new_tokens` is clamped to the room the prompt leaves
  (`finish_reason: "length"` says so), and a prompt that leaves no room is refused with a 400 that names the numbers.
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
import os
from typing import TYPE_CHECKING

from hf_llm.errors import UsageError

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel

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
    context = context_length(model)
    if context is None:
        return max_new_tokens
    room = context - prompt_length
    if room < 1:
        raise ValueError(
            f"the prompt is {prompt_length} tokens and the model's context is {context} "
            f"positions, which leaves no room for an answer; shorten the messages to fewer than {context} tokens."
        )
    return room if max_new_tokens is None else min(max_new_tokens, room)


def _fit_request(model: PreTrainedModel, inputs: dict, gen_config: GenerationConfig) -> None:
    """Clamp a server request's `max_new_tokens` in place, or refuse it with HTTP 400 (see [`fit_to_context`])."""
    from fastapi import HTTPException

    input_ids = inputs["input_ids"]
    # Continuous batching hands over a list of ids, sequential generation a (1, T) tensor.
    prompt_length = len(input_ids) if isinstance(input_ids, list) else input_ids.shape[-1]
    try:
        gen_config.max_new_tokens = fit_to_context(model, prompt_length, gen_config.max_new_tokens)
    except ValueError as error:
        raise HTTPException(status_code=400, detail=str(error)) from None


def _context_bound(manager_cls: type) -> type:
    """A subclass of one of transformers' generation managers that fits every request to the context first."""

    class ContextBound(manager_cls):
        def generate_streaming(self, model, processor, inputs, gen_config, request_id, response_parser=None):
            _fit_request(model, inputs, gen_config)
            return super().generate_streaming(
                model, processor, inputs, gen_config, request_id=request_id, response_parser=response_parser
            )

        async def generate_non_streaming(self, model, processor, inputs, gen_config, request_id):
            _fit_request(model, inputs, gen_config)
            return await super().generate_non_streaming(model, processor, inputs, gen_config, request_id=request_id)

    ContextBound.__name__ = ContextBound.__qualname__ = f"ContextBound{manager_cls.__name__}"
    return ContextBound


def bound_requests_to_context() -> None:
    """
    Have `transformers serve` fit every request to the model's context before it reaches the model.

    Every endpoint (chat completions, completions, responses) generates through one of two managers in
    `transformers.cli.serving.utils`: `GenerateManager` (sequential `generate()`) and `CBGenerateManager` (continuous
    batching), which `GenerationState.get_manager` builds by those module names. Both are replaced by subclasses
    that clamp `max_new_tokens` (or answer 400) first, so no request ever runs a forward past the position table:
    under continuous batching that forward would kill the batching worker for every later request.
    """
    from transformers.cli.serving import utils

    for name in ("GenerateManager", "CBGenerateManager"):
        manager_cls = getattr(utils, name)
        if not manager_cls.__name__.startswith("ContextBound"):
            setattr(utils, name, _context_bound(manager_cls))


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
        UsageError: when no model comes first, or it is a LoRA adapter (which `transformers serve` cannot load).
    """
    if not argv or argv[0].startswith("-"):
        raise UsageError(
            "hf-llm serve needs a model first: `hf-llm serve DIR_OR_REPO_ID [--host 127.0.0.1 --port 8000 ...]` "
            "(`hf-llm serve --help` lists the flags of transformers serve)."
        )
    model = argv[0]
    if not os.path.exists(model) and (model.startswith(("/", ".", "~")) or model.count("/") > 1):
        raise UsageError(f"{model} does not exist; pass a directory written by save_pretrained or a Hub repo id.")
    # Only the flags that decide the KV-cache bound are read here; transformers' CLI parses (and checks) them all.
    parser = argparse.ArgumentParser(prog="hf-llm serve", add_help=False)
    parser.add_argument("--continuous-batching", action="store_true")
    parser.add_argument("--device", default="auto")
    known, _ = parser.parse_known_args(argv[1:])
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
        expose_architectures()
        bound_requests_to_context()
    try:
        app(args=arguments, prog_name="hf-llm")
    except SystemExit as exit:  # typer's standalone mode ends with sys.exit, also on success
        return exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
    return 0
