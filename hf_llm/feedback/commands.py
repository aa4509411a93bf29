"""`hf-llm rank` (rank sampled answers in a web page, or `--export` the rankings) and `hf-llm chat --web`: their flags
and what they run. `hf_llm/cli.py` registers them."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from transformers import GenerationConfig


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    """`--host`, `--port`, `--allow_remote`, `--auth_file`: where a page listens, and who may open it."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--allow_remote",
        action="store_true",
        help="allow a --host other machines can reach; needs --auth_file",
    )
    parser.add_argument("--auth_file", default=None, help="file of `user:password` lines: the page asks for a login")


def add_rank_command(commands: argparse._SubParsersAction) -> None:
    """`hf-llm rank` and its flags."""
    parser = commands.add_parser(
        "rank",
        help="rank sampled answers in a web page (or --export the rankings as a preference dataset)",
        description="Sample --num_samples answers per prompt from a checkpoint and rank them in a page served on "
        "127.0.0.1; every submission is appended to --output_file at once. With --export DIR, write the rankings' "
        "preference pairs as a dataset (train/validation, inter-labeler agreement; --push_to_hub).",
    )
    parser.set_defaults(run=run_rank)
    parser.add_argument("--model_name_or_path", help="checkpoint directory, merged model, LoRA adapter or Hub repo id")
    parser.add_argument(
        "--dataset_name",
        "--prompts_file",
        dest="dataset_name",
        help="prompts: a .txt file (one a line), a .jsonl/.json/.csv/.parquet file or folder, a Hub id, or pydocs",
    )
    parser.add_argument("--prompt_column", default=None, help="column of prompts (default: prompt, instruction, ...)")
    parser.add_argument("--split", default="train", help="dataset split to take prompts from")
    parser.add_argument("--max_prompts", type=int, default=None, help="rank only the first N prompts")
    parser.add_argument("--num_samples", type=int, default=2, help="answers sampled per prompt, shown side by side")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_p", type=float, default=0.95)
    parser.add_argument("--top_k", type=int, default=0, help="0 turns top-k off")
    parser.add_argument("--repetition_penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42, help="with each prompt, fixes the answers shown for it")
    parser.add_argument("--output_file", default="rankings.jsonl", help="the rankings file, appended to")
    parser.add_argument("--labeler", default=None, help="who is ranking (default: your user name)")
    parser.add_argument("--trust_remote_code", action="store_true")
    add_serving_arguments(parser)
    export = parser.add_argument_group("export (instead of ranking)")
    export.add_argument(
        "--export", metavar="DIR", default=None, help="write --output_file's pairs as a dataset into a new DIR"
    )
    export.add_argument("--overwrite_output_dir", action="store_true", help="delete what --export DIR holds first")
    export.add_argument("--validation_fraction", type=float, default=0.1, help="share of prompts held out")
    export.add_argument("--push_to_hub", action="store_true", help="push DIR as the dataset repo --hub_dataset_id")
    export.add_argument("--hub_dataset_id", default=None, help="namespace/name of the dataset repo")
    export.add_argument("--hub_private_repo", action="store_true")
    export.add_argument("--hub_token", default=None, help="default: HF_TOKEN or the saved login")


def add_chat_web_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `hf-llm chat` gets for `--web` (its sampling flags are its own)."""
    parser.add_argument("--web", action="store_true", help="serve a chat page instead of the terminal chat")
    parser.add_argument("--top_k", type=int, default=0, help="0 turns top-k off")
    parser.add_argument("--repetition_penalty", type=float, default=1.0)
    add_serving_arguments(parser)


def run_export(args: argparse.Namespace) -> int:
    from ..command_output import check_command_output_dir
    from ..data.preferences import export_rankings

    check_command_output_dir(
        args.export,
        inputs={"--output_file": args.output_file},
        overwrite_output_dir=args.overwrite_output_dir,
        example_suffix="-dataset",
        flag="--export",
    )
    summary = export_rankings(
        args.output_file,
        args.export,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        push_to_hub=args.push_to_hub,
        hub_dataset_id=args.hub_dataset_id,
        hub_private_repo=args.hub_private_repo,
        hub_token=args.hub_token,
    )
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    print(
        f"{summary['pairs']} preference pairs ({splits}) from {summary['rankings']} rankings of "
        f"{summary['prompts']} prompts by {', '.join(summary['labelers'])}; {summary['skipped']} skipped."
    )
    agreement = summary["agreement"]
    if agreement["agreement"] is None:
        print("Inter-labeler agreement: no prompt was ranked by two labelers.")
    else:
        print(
            f"Inter-labeler agreement: {agreement['agreement']:.1%} of {agreement['pair_judgments']} answer pairs on "
            f"{agreement['prompts']} prompts ranked by two or more labelers."
        )
        for pair, stats in agreement["by_labelers"].items():
            print(f"  {pair.replace('|', ' / ')}: {stats['agreement']:.1%} of {stats['pair_judgments']}")
    print(f"Dataset: {args.export}" + (f" (pushed to {summary['hub_url']})" if "hub_url" in summary else ""))
    return 0


def run_rank(args: argparse.Namespace) -> int:
    """`hf-llm rank`: serve the ranking page (or, with `--export`, write the pairs)."""
    if args.export:
        return run_export(args)
    if not args.model_name_or_path or not args.dataset_name:
        raise UsageError(
            "hf-llm rank needs --model_name_or_path (the model whose answers to rank) and --dataset_name (the "
            "prompts); or --export DIR to turn --output_file into a preference dataset"
        )
    from ..loading import load_model_for_evaluation
    from .app import build_ranking_app
    from .launch import check_binding, serve
    from .prompts import load_prompts
    from .sampling import SamplingConfig, answer_sampler, fits_model
    from .session import RankingSession

    check_binding(args.host, args.allow_remote, args.auth_file)  # before minutes of loading, not after
    config = SamplingConfig(
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    if config.num_samples < 2:
        raise UsageError(f"--num_samples {config.num_samples}: ranking needs at least two answers per prompt")
    prompts = load_prompts(args.dataset_name, args.prompt_column, args.split, args.max_prompts)
    model, tokenizer = load_model_for_evaluation(
        args.model_name_or_path, task="sft", trust_remote_code=args.trust_remote_code
    )
    fits = fits_model(model, tokenizer, prompts, config.max_new_tokens)
    if not all(fits):
        print(
            f"hf-llm rank: left out {fits.count(False)} of {len(prompts)} prompts too long for the model's "
            f"{model.config.max_position_embeddings} positions with --max_new_tokens {config.max_new_tokens}",
            file=sys.stderr,
        )
        prompts = [prompt for prompt, fit in zip(prompts, fits, strict=True) if fit]
        if not prompts:
            raise UsageError("no prompt fits the model; lower --max_new_tokens or use shorter prompts")
    session = RankingSession(
        prompts,
        args.output_file,
        args.labeler or getpass.getuser(),
        answer_sampler(model, tokenizer, config),
        metadata={
            "model_name_or_path": args.model_name_or_path,
            "generation": config.to_dict(),
            "chat_template": tokenizer.chat_template is not None,
        },
    )
    counts = session.progress()
    print(
        f"hf-llm rank: {counts['ranked']} / {counts['total']} prompts ranked by {session.labeler} so far "
        f"({counts['skipped']} skipped); each submission is appended to {args.output_file}. Ctrl-C stops.",
        flush=True,
    )
    chat = (model, tokenizer, config) if tokenizer.chat_template is not None else None
    serve(
        build_ranking_app(session, config.num_samples, chat=chat),
        args.host,
        args.port,
        allow_remote=args.allow_remote,
        auth_file=args.auth_file,
    )
    return 0


def checkpoint_sampling(
    generation_config: GenerationConfig | None, temperature: float | None, top_p: float | None
) -> tuple[float, float]:
    """The chat page's starting temperature and top-p: the flags when given, else what the checkpoint's
    `generation_config.json` says (hf_llm's training stages write 0.7 / 0.9; greedy decoding loops on small models),
    else greedy with top-p 0.95."""
    samples = generation_config is not None and bool(generation_config.do_sample)
    if temperature is None:
        temperature = float(generation_config.temperature or 1.0) if samples else 0.0
    if top_p is None:
        top_p = float(generation_config.top_p or 1.0) if samples else 0.95
    return temperature, top_p


def run_chat_web(args: argparse.Namespace) -> int:
    """`hf-llm chat --web`: a streaming chat page for any checkpoint with a chat template."""
    from transformers import set_seed

    from ..loading import load_model_for_evaluation
    from .app import build_chat_app
    from .launch import check_binding, serve
    from .sampling import SamplingConfig

    check_binding(args.host, args.allow_remote, args.auth_file)
    set_seed(args.seed)
    model, tokenizer = load_model_for_evaluation(
        args.model_name_or_path, task="sft", trust_remote_code=args.trust_remote_code
    )
    temperature, top_p = checkpoint_sampling(model.generation_config, args.temperature, args.top_p)
    defaults = SamplingConfig(
        num_samples=1,
        max_new_tokens=args.max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    if tokenizer.chat_template is None:
        raise UsageError(
            f"the tokenizer of {args.model_name_or_path} has no chat template; use a tokenizer trained by hf_llm "
            "(train_scripts/train_tokenizer.py) or `hf-llm generate` for plain text."
        )
    print(f"hf-llm chat: serving {args.model_name_or_path}. Ctrl-C stops.", flush=True)
    serve(
        build_chat_app(model, tokenizer, defaults, args.model_name_or_path),
        args.host,
        args.port,
        allow_remote=args.allow_remote,
        auth_file=args.auth_file,
    )
    return 0
