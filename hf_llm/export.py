"""`hf-llm export`: an hf_llm checkpoint as a plain GPT-2 checkpoint that every GPT-2 tool loads without remote code.

```bash
hf-llm export outputs/pipeline/sft --format gpt2 --output_dir outputs/sft-gpt2
transformers serve outputs/sft-gpt2          # or pipeline("text-generation", "outputs/sft-gpt2"), vLLM, llama.cpp
```

The export is lossless for the configurations GPT-2 can express (learned positions, biases; the default): logits equal
the source's to float rounding (`GPTForCausalLM.to_gpt2`). A rotary or bias-free model is refused in one line naming
the config field. A LoRA adapter is merged first (`hf-llm merge`), as `transformers serve` needs a full model anyway.
"""

from __future__ import annotations

import argparse
import os

from transformers.utils import logging

from hf_llm.errors import UsageError
from hf_llm.training.output_dir import check_command_output_dir

logger = logging.get_logger(__name__)

EXPORT_FORMATS = ("gpt2",)


def export_gpt2(model_name_or_path: str, output_dir: str, *, overwrite_output_dir: bool = False) -> str:
    """
    Export an hf_llm causal-LM checkpoint as a transformers `GPT2LMHeadModel` checkpoint with its tokenizer.

    Args:
        model_name_or_path (`str`): A local `save_pretrained` directory or a Hub repo id of a `GPTForCausalLM`.
        output_dir (`str`): Where to write the GPT-2 checkpoint (a new or empty directory).
        overwrite_output_dir (`bool`, defaults to `False`): Replace what `output_dir` holds.

    Returns:
        `str`: The output directory.

    Raises:
        `UsageError`: When the checkpoint is an adapter, not a causal LM, or a configuration GPT-2 cannot express.
    """
    from transformers import AutoModelForCausalLM

    from hf_llm import GPTForCausalLM
    from hf_llm.loading import check_model_source, from_pretrained, local_path_exists, tokenizer_from_pretrained

    check_command_output_dir(
        output_dir,
        inputs={"MODEL": model_name_or_path},
        overwrite_output_dir=overwrite_output_dir,
        example_suffix="-gpt2",
    )
    check_model_source(model_name_or_path, "MODEL")
    if local_path_exists(model_name_or_path, "MODEL") and os.path.isfile(
        os.path.join(os.path.expanduser(model_name_or_path), "adapter_config.json")
    ):
        raise UsageError(
            f"{model_name_or_path} is a LoRA adapter; merge it first (hf-llm merge {model_name_or_path} --output_dir "
            "MERGED) and export MERGED."
        )
    model = from_pretrained(AutoModelForCausalLM, model_name_or_path, flag="MODEL")
    if not isinstance(model, GPTForCausalLM):
        raise UsageError(
            f"{model_name_or_path} holds a {type(model).__name__}, not an hf_llm GPTForCausalLM; only hf_llm language "
            "models are exported (a classifier or reward model has no GPT-2 form)."
        )
    try:
        gpt2 = model.to_gpt2()
    except ValueError as error:
        raise UsageError(f"{model_name_or_path}: {error}") from None
    tokenizer = tokenizer_from_pretrained(model_name_or_path, flag="MODEL")
    gpt2.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    logger.info(f"Exported {model_name_or_path} as GPT2LMHeadModel to {os.path.abspath(output_dir)}")
    return output_dir


def run_export(args: argparse.Namespace) -> int:
    export_gpt2(args.model_name_or_path, args.output_dir, overwrite_output_dir=args.overwrite_output_dir)
    print(f"hf-llm export: wrote a GPT2LMHeadModel checkpoint (no remote code) to {args.output_dir}")
    return 0


def add_export_command(commands: argparse._SubParsersAction) -> None:
    """`hf-llm export MODEL --format gpt2 --output_dir OUT`."""
    export = commands.add_parser(
        "export",
        help="export a checkpoint as plain GPT-2 (no remote code) for transformers serve, vLLM, llama.cpp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("model_name_or_path", help="an hf_llm causal-LM checkpoint (directory or Hub repo id)")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="gpt2", help="the checkpoint format to write")
    export.add_argument("--output_dir", required=True, help="a new or empty directory")
    export.add_argument("--overwrite_output_dir", action="store_true", help="replace what --output_dir holds")
    export.set_defaults(run=run_export)
