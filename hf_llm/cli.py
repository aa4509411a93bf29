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
import os
import sys

from .environment import add_env_command
from .errors import exit_on_user_error
from .evaluation.evaluate_model import add_eval_command
from .export import add_export_command
from .feedback.commands import add_rank_command
from .generation import add_chat_command, add_generate_command
from .pipeline import add_pipeline_command
from .serving import add_serve_command


def run_merge(args: argparse.Namespace) -> int:
    """`hf-llm merge`: merge an adapter and optionally push the merged model."""
    from .command_output import check_command_output_dir
    from .loading import merge_adapter

    check_command_output_dir(
        args.output_dir,
        inputs={"ADAPTER_DIR": args.adapter_dir},
        overwrite_output_dir=args.overwrite_output_dir,
        example_suffix="-merged",
    )
    output_dir = merge_adapter(
        args.adapter_dir,
        args.output_dir,
        num_labels=args.num_labels,
        revision=args.revision,
        token=args.hub_token,
        trust_remote_code=args.trust_remote_code,
    )
    if args.push_to_hub:
        from .hub import push_output_dir

        push_output_dir(
            output_dir,
            args.hub_model_id,
            private=args.hub_private_repo,
            token=args.hub_token,
            commit_message=f"Merge of {args.adapter_dir}",
        )
    print(f"merged model: {os.path.abspath(output_dir)}")
    return 0


def add_merge_command(commands: argparse._SubParsersAction) -> None:
    """`hf-llm merge ADAPTER_DIR --output_dir DIR` and its flags."""
    command = commands.add_parser(
        "merge", help="merge a LoRA adapter into its base: a standalone model that loads without PEFT"
    )
    command.add_argument("adapter_dir", help="adapter directory or Hub repo id (classifier.py / sft.py output)")
    command.add_argument("--output_dir", required=True, help="where to write the merged model (a new or empty dir)")
    command.add_argument("--overwrite_output_dir", action="store_true", help="delete what --output_dir holds first")
    command.add_argument("--num_labels", type=int, help="classes of a classifier adapter without labels.json")
    command.add_argument("--revision", help="Hub revision of the adapter")
    command.add_argument("--trust_remote_code", action="store_true", help="allow custom code from the Hub")
    command.add_argument("--push_to_hub", action="store_true", help="push the merged model (needs --hub_model_id)")
    command.add_argument("--hub_model_id", help="repo to push to, e.g. your-name/gpt-sft-merged")
    command.add_argument("--hub_private_repo", action="store_true", help="create the repo private")
    command.add_argument("--hub_token", help="Hub token (default: HF_TOKEN or the saved login)")
    command.set_defaults(run=run_merge)


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
