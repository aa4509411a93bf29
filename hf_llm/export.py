"""`hf-llm export`: an hf_llm checkpoint as a plain GPT-2 checkpoint that every GPT-2 tool loads without remote code,
or as a GGUF file for llama.cpp and Ollama.

```bash
hf-llm export outputs/pipeline/sft --format gpt2 --output_dir outputs/sft-gpt2
transformers serve outputs/sft-gpt2          # or pipeline("text-generation", "outputs/sft-gpt2"), vLLM
hf-llm export outputs/pipeline/sft --format gguf --outtype q8_0 --output_dir outputs/sft-gguf
llama-cli -m outputs/sft-gguf/model-q8_0.gguf -p "def fibonacci(n):"
```

GGUF uses llama.cpp's `gpt2` architecture: q, k and v are fused into `attn_qkv`, every bias is kept, the embedding is
tied (no `output` tensor) unless the model unties it, and the byte-level BPE tokenizer is written as GGUF's `gpt2`
tokenizer (GPT-2's pre-tokenizer regex, the vocabulary padded to the embedding table with unused tokens).

The export is lossless for the configurations GPT-2 can express (learned positions, biases; the default): logits equal
the source's to float rounding (`GPTForCausalLM.to_gpt2`). A rotary or bias-free model is refused in one line naming
the config field. A LoRA adapter is merged first (`hf-llm merge`), as `transformers serve` needs a full model anyway.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

from transformers.utils import logging

from hf_llm.command_output import check_command_output_dir
from hf_llm.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from transformers import GPT2LMHeadModel

logger = logging.get_logger(__name__)

EXPORT_FORMATS = ("gpt2", "gguf")
#: GGUF weight types: f32 and f16 for every matrix; q8_0 (8-bit blocks of 32) where a row is whole blocks.
GGUF_OUTTYPES = ("f32", "f16", "q8_0")


def _load_for_export(model_name_or_path: str, output_dir: str, overwrite_output_dir: bool, *, example_suffix: str):
    """The checks every export makes before writing anything, then the model as a `GPT2LMHeadModel` and its tokenizer.

    Raises:
        `UsageError`: When the output directory would lose files, the checkpoint is an adapter or not an hf_llm
            causal LM, or GPT-2 cannot express its configuration (rotary positions, no biases).
    """
    from transformers import AutoModelForCausalLM

    from hf_llm import GPTForCausalLM
    from hf_llm.loading import check_model_source, from_pretrained, is_adapter, tokenizer_from_pretrained

    check_command_output_dir(
        output_dir,
        inputs={"MODEL": model_name_or_path},
        overwrite_output_dir=overwrite_output_dir,
        example_suffix=example_suffix,
    )
    check_model_source(model_name_or_path, "MODEL")
    if is_adapter(model_name_or_path):
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
        gpt2 = model.eval().to_gpt2()  # refuses, naming the field, what GPT-2 (and GGUF's gpt2 layout) cannot express
    except ValueError as error:
        raise UsageError(f"{model_name_or_path}: {error}") from None
    return gpt2, tokenizer_from_pretrained(model_name_or_path, flag="MODEL")


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
    gpt2, tokenizer = _load_for_export(model_name_or_path, output_dir, overwrite_output_dir, example_suffix="-gpt2")
    gpt2.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    logger.info(f"Exported {model_name_or_path} as GPT2LMHeadModel to {os.path.abspath(output_dir)}")
    return output_dir


def gguf_tensors(gpt2: GPT2LMHeadModel) -> dict[str, np.ndarray]:
    """
    The GGUF `gpt2` tensors of a transformers `GPT2LMHeadModel` (from `GPTForCausalLM.to_gpt2`), named and laid out as
    llama.cpp's own converter writes them: GPT-2's Conv1D weights transposed to (out, in), q|k|v already fused in
    `c_attn`, no `output` tensor when the head is tied to the embedding.
    """
    state = {name: tensor.detach().float().cpu().numpy() for name, tensor in gpt2.state_dict().items()}
    tensors = {
        "token_embd.weight": state["transformer.wte.weight"],
        "position_embd.weight": state["transformer.wpe.weight"],
        "output_norm.weight": state["transformer.ln_f.weight"],
        "output_norm.bias": state["transformer.ln_f.bias"],
    }
    if not gpt2.config.tie_word_embeddings:
        tensors["output.weight"] = state["lm_head.weight"]
    names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}  # fmt: skip
    for index in range(gpt2.config.n_layer):
        for theirs, ours in names.items():
            weight = state[f"transformer.h.{index}.{theirs}.weight"]
            tensors[f"blk.{index}.{ours}.weight"] = weight.T if weight.ndim == 2 else weight  # Conv1D: (in, out)
            tensors[f"blk.{index}.{ours}.bias"] = state[f"transformer.h.{index}.{theirs}.bias"]
    return tensors


def export_gguf(
    model_name_or_path: str, output_dir: str, *, outtype: str = "f32", overwrite_output_dir: bool = False
) -> str:
    """
    Export an hf_llm causal-LM checkpoint as one GGUF file (`OUTPUT_DIR/model-<outtype>.gguf`) that llama.cpp runs.

    Args:
        model_name_or_path (`str`): A local `save_pretrained` directory or a Hub repo id of a `GPTForCausalLM`.
        output_dir (`str`): Where to write the file (a new or empty directory).
        outtype (`str`, defaults to `"f32"`): `"f32"`, `"f16"` or `"q8_0"` for the matrices (norms and biases stay
            f32, and the position table too, as llama.cpp's own converter keeps them).
        overwrite_output_dir (`bool`, defaults to `False`): Replace what `output_dir` holds.

    Returns:
        `str`: The GGUF file's path.

    Raises:
        `UsageError`: As [`export_gpt2`]; also when the tokenizer is not a byte-level BPE (GGUF's `gpt2` tokenizer).
    """
    try:
        import gguf
    except ImportError:
        raise UsageError('--format gguf needs the gguf package: pip install "hf_llm[export]"') from None
    import numpy as np

    if outtype not in GGUF_OUTTYPES:
        raise UsageError(f"--outtype {outtype} is not one of {list(GGUF_OUTTYPES)}.")
    gpt2, tokenizer = _load_for_export(model_name_or_path, output_dir, overwrite_output_dir, example_suffix="-gguf")
    config = gpt2.config
    backend = tokenizer.backend_tokenizer
    state = json.loads(backend.to_str())
    if state.get("model", {}).get("type") != "BPE" or "ByteLevel" not in json.dumps(state.get("pre_tokenizer")):
        raise UsageError(
            f"{model_name_or_path}: GGUF's gpt2 tokenizer is a byte-level BPE, and this tokenizer is not one; export "
            "with --format gpt2 instead."
        )
    vocab = {token: index for token, index in backend.get_vocab(with_added_tokens=True).items()}
    tokens = [f"[PAD{index}]" for index in range(config.vocab_size)]
    types = [gguf.TokenType.UNUSED] * config.vocab_size
    special = set(tokenizer.all_special_tokens)
    for token, index in vocab.items():
        tokens[index] = token
        types[index] = gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in state["model"].get("merges", [])]

    path = os.path.join(output_dir, f"model-{outtype}.gguf")
    os.makedirs(output_dir, exist_ok=True)
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.add_name(os.path.basename(os.path.normpath(model_name_or_path)))
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        }[outtype]
    )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if tokenizer.bos_token_id is not None:
        writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    if tokenizer.pad_token_id is not None:
        writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)  # hf_llm's tokenizer adds no special token to a text
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
    for name, tensor in gguf_tensors(gpt2).items():
        data, qtype = tensor.astype(np.float32), gguf.GGMLQuantizationType.F32
        if tensor.ndim == 2 and name != "position_embd.weight" and outtype != "f32":
            if outtype == "q8_0" and tensor.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
                qtype = gguf.GGMLQuantizationType.Q8_0
                data = gguf.quants.quantize(data, qtype)
            else:  # f16, and q8_0 rows that are not whole blocks of 32
                qtype, data = gguf.GGMLQuantizationType.F16, data.astype(np.float16)
        writer.add_tensor(name, data, raw_dtype=qtype)  # a quantized (uint8) tensor's shape is derived from its bytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    logger.info(f"Exported {model_name_or_path} as GGUF ({outtype}) to {os.path.abspath(path)}")
    return path


def run_export(args: argparse.Namespace) -> int:
    if args.format == "gguf":
        path = export_gguf(
            args.model_name_or_path,
            args.output_dir,
            outtype=args.outtype,
            overwrite_output_dir=args.overwrite_output_dir,
        )
        print(f"hf-llm export: wrote {path} (llama.cpp: llama-cli -m {path})")
        return 0
    if args.outtype != "f32":
        raise UsageError("--outtype applies to --format gguf; a --format gpt2 export keeps the checkpoint's dtype.")
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
    export.add_argument("--outtype", choices=GGUF_OUTTYPES, default="f32", help="--format gguf: the matrices' type")
    export.add_argument("--output_dir", required=True, help="a new or empty directory")
    export.add_argument("--overwrite_output_dir", action="store_true", help="replace what --output_dir holds")
    export.set_defaults(run=run_export)
