"""`hf-llm generate` and `hf-llm chat`: continue a prompt, or talk to an instruction-tuned model, streaming tokens.

Both load a full model or a LoRA adapter (directory or Hub repo id) through `hf_llm.loading`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


# Terminal decoding defaults: greedy, so `hf-llm generate` is repeatable; --top_p applies once --temperature > 0.
TERMINAL_TEMPERATURE = 0.0
TERMINAL_TOP_P = 0.95


def load_for_generation(
    model_name_or_path: str, trust_remote_code: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM (full model or LoRA adapter) and its tokenizer, in eval mode."""
    from hf_llm.loading import load_model_for_evaluation

    return load_model_for_evaluation(model_name_or_path, task="pretrain", trust_remote_code=trust_remote_code)


def check_generation_flags(args: argparse.Namespace) -> None:
    """Refuse decoding flags `generate()` would reject or misread, before the model is loaded."""
    if args.temperature is not None and args.temperature < 0:
        raise UsageError(f"--temperature {args.temperature} is negative; pass 0 for greedy decoding or a value > 0.")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UsageError(f"--top_p {args.top_p} is outside (0, 1]; pass e.g. --top_p 0.95 (1 keeps every token).")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens {args.max_new_tokens} generates nothing; pass 1 or more.")


def prompt_inputs(tokenizer: PreTrainedTokenizerBase, prompt: str) -> dict:
    """`--prompt` as model inputs; an empty prompt (or one that encodes to no token) starts from the BOS token."""
    import torch

    inputs = tokenizer(prompt, return_tensors="pt")
    if inputs["input_ids"].shape[-1] > 0:
        return dict(inputs)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise UsageError("--prompt is empty and the tokenizer has no BOS (or EOS) token to start from; pass a prompt.")
    return {"input_ids": torch.tensor([[start]]), "attention_mask": torch.ones(1, 1, dtype=torch.long)}


def generation_kwargs(
    args: argparse.Namespace, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt_length: int
) -> dict:
    """`generate()` settings from the flags: greedy at `--temperature 0`, nucleus sampling otherwise;
    `--max_new_tokens` clamped to the room the prompt leaves in the context (`ValueError` if it leaves none)."""
    from .serving import fit_to_context

    temperature = TERMINAL_TEMPERATURE if args.temperature is None else args.temperature
    return {
        "max_new_tokens": fit_to_context(model, prompt_length, args.max_new_tokens),
        "do_sample": temperature > 0,
        "temperature": temperature if temperature > 0 else None,
        "top_p": (TERMINAL_TOP_P if args.top_p is None else args.top_p) if temperature > 0 else None,
        "pad_token_id": tokenizer.pad_token_id,
    }


def run_generate(args: argparse.Namespace) -> int:
    """`hf-llm generate`: stream the continuation of `--prompt`."""
    import torch
    from transformers import TextStreamer, set_seed

    check_generation_flags(args)
    set_seed(args.seed)
    model, tokenizer = load_for_generation(args.model_name_or_path, args.trust_remote_code)
    inputs = {name: tensor.to(model.device) for name, tensor in prompt_inputs(tokenizer, args.prompt).items()}
    streamer = TextStreamer(tokenizer, skip_special_tokens=True)
    with torch.inference_mode():
        model.generate(
            **inputs, streamer=streamer, **generation_kwargs(args, model, tokenizer, inputs["input_ids"].shape[-1])
        )
    return 0


def run_chat(args: argparse.Namespace) -> int:
    """`hf-llm chat`: read instructions from stdin and stream answers through the tokenizer's chat template (with
    `--web`, a chat page instead: `hf_llm.feedback`)."""
    if args.web:
        from .feedback.commands import run_chat_web

        return run_chat_web(args)
    import torch
    from transformers import TextStreamer, set_seed

    check_generation_flags(args)
    set_seed(args.seed)
    model, tokenizer = load_for_generation(args.model_name_or_path, args.trust_remote_code)
    if tokenizer.chat_template is None:
        raise UsageError(
            f"the tokenizer of {args.model_name_or_path} has no chat template; use a tokenizer trained "
            "by hf_llm (train_scripts/train_tokenizer.py) or `hf-llm generate` for plain text."
        )
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    print("Type an instruction; an empty line or Ctrl-D quits.")
    while True:
        try:
            instruction = input("\n>>> ").strip()
        except EOFError:
            break
        if not instruction:
            break
        input_ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], add_generation_prompt=True, return_tensors="pt"
        )
        if not isinstance(input_ids, torch.Tensor):
            input_ids = input_ids["input_ids"]
        try:
            settings = generation_kwargs(args, model, tokenizer, input_ids.shape[-1])
        except ValueError as error:  # this instruction is too long; the next one may fit
            print(f"(not answered: {error})")
            continue
        with torch.inference_mode():
            model.generate(input_ids.to(model.device), streamer=streamer, **settings)
    return 0


def _add_generation_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model_name_or_path", required=True, help="directory, Hub repo id or LoRA adapter")
    command.add_argument("--max_new_tokens", type=int, default=128)
    command.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="0 means greedy decoding (default: 0 in the terminal; the checkpoint's generation_config with --web)",
    )
    command.add_argument(
        "--top_p", type=float, default=None, help="nucleus mass (default: 0.95; the checkpoint's with --web)"
    )
    command.add_argument("--seed", type=int, default=42)
    command.add_argument("--trust_remote_code", action="store_true")


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    """`hf-llm generate` and its flags."""
    command = commands.add_parser("generate", help="continue a prompt")
    _add_generation_flags(command)
    command.add_argument("--prompt", required=True)
    command.set_defaults(run=run_generate)


def add_chat_command(commands: argparse._SubParsersAction) -> None:
    """`hf-llm chat` and its flags."""
    from .feedback.commands import add_chat_web_arguments

    command = commands.add_parser("chat", help="talk to an instruction-tuned model (--web: in a browser page)")
    _add_generation_flags(command)
    add_chat_web_arguments(command)
    command.set_defaults(run=run_chat)
