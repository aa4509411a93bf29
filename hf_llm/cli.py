"""The `hf-llm` command: parses the command line and hands it to the command's module.

hf-llm pipeline --output_dir outputs/pipeline        # every stage on the bundled pydocs data, then a report
hf-llm generate --model_name_or_path outputs/pipeline/pretrain --prompt "The json module"
hf-llm chat --model_name_or_path outputs/pipeline/sft
hf-llm eval --model_name_or_path outputs/pipeline/pretrain --task pretrain --dataset_name pydocs --output_dir DIR
hf-llm serve outputs/pipeline/sft --host 127.0.0.1 --port 8000   # OpenAI-compatible server (transformers serve)
hf-llm rank --model_name_or_path outputs/pipeline/sft --dataset_name pydocs --labeler alice   # rank answers in a page
hf-llm chat --web --model_name_or_path outputs/pipeline/sft                             # a chat page
hf-llm merge outputs/sft-gpt2 --output_dir outputs/sft-gpt2-merged   # LoRA adapter -> standalone model
hf-llm export outputs/pipeline/sft --format gpt2 --output_dir outputs/sft-gpt2   # plain GPT-2, no remote code
hf-llm env                                  # versions, devices, lock check, caches: paste it into bug reports

A command lives in a library module as `add_<name>_command(commands)`: it adds its subparser and sets
`run=<function(args) -> int>` with `set_defaults`; a command that parses its own flags (as `eval` does, with TRL's
parser) also sets `forwards_argv=True` and reads the rest of the command line from `args.forwarded_argv`.
Registering a command is one line in `COMMANDS`. Every command fails through `hf_llm.errors.exit_on_user_error`.
"""

from __future__ import annotations

import argparse
import sys

from .environment import add_env_command
from .errors import exit_on_user_error
from .evaluation.evaluate_model import add_eval_command
from .export import add_export_command
from .feedback.commands import add_rank_command
from .generation import add_chat_command, add_generate_command
from .pipeline import add_pipeline_command
from .serving import add_serve_command
from .training.finetuning import add_merge_command

COMMANDS = (
    add_pipeline_command,
    add_generate_command,
    add_chat_command,
    add_eval_command,
    add_serve_command,
    add_rank_command,
    add_merge_command,
    add_export_command,
    add_env_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The `hf-llm` argument parser, one subparser per entry of `COMMANDS`."""
    parser = argparse.ArgumentParser(prog="hf-llm", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-llm` console script; returns the exit code (2 and one line on a user's mistake)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if rest and not getattr(args, "forwards_argv", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.forwarded_argv = rest
    with exit_on_user_error(f"hf-llm {args.command}"):
        return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
