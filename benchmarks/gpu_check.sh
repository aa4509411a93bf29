#!/usr/bin/env bash
# The gpt2-124m path on one GPU, with no Hub: one script, one table (issue 20, item 5).
#
# It serves the local Hub of tests/make_local_hub.py (the repos the gpt2-124m recipes name, at their real schemas:
# openai-community/gpt2 with GPT-2 small's shape and random weights, FineWeb-Edu, Alpaca-cleaned, UltraFeedback) on
# 127.0.0.1 and runs the recipes in train_scripts/configs/*/gpt2-124m.yaml against it:
#
#   1. pretraining at GPT-2 small's shape, 200 steps in bf16 with sdpa: eager, then with torch_compile; tokens/s and
#      MFU from ThroughputCallback (one micro-batch of the recipe, 16 x 1024 tokens, a step: accumulation does not
#      change either number);
#   2. 20 steps each of sft (LoRA), reward, ppo (20 PPO updates) and dpo at the recipes' batch sizes: tokens/s
#      (PPO: episodes/s) and peak GPU memory (torch.cuda.max_memory_allocated);
#   3. FSDP2 (accelerate_configs/fsdp.yaml) on the one GPU for 20 steps, and the same 20 steps unsharded, both in
#      fp32: every step's loss must agree within 1e-4.
#
# Evaluation sets are capped (this measures training) and every stage writes its usual output directory. The table
# goes to OUTPUT_DIR/gpu_check.md and to the terminal; each run's log is OUTPUT_DIR/logs/<run>.log.
#
#   benchmarks/gpu_check.sh                        # one H100/H200: GPT-2 small
#   benchmarks/gpu_check.sh --device cpu --tiny    # the same runs on CPU at a tiny shape, to test this script
#
# Options: --output_dir DIR (default outputs/gpu_check, emptied first), --python PATH (default: the repo's .venv if
# present, else python). Exits non-zero when a run fails or the FSDP2 losses differ.
set -euo pipefail

DEVICE=cuda
TINY=0
OUT=outputs/gpu_check
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="$REPO/.venv/bin/python"
[ -x "$PYTHON" ] || PYTHON=python
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --tiny) TINY=1; shift ;;
        --output_dir) OUT="$2"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "gpu_check.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check.sh: error: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;; esac
cd "$REPO"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -rf "${OUT:?}"/*
mkdir -p "$OUT/logs"
START=$SECONDS
RECIPES=train_scripts/configs

recipe_says() {  # recipe_says STAGE KEY VALUE: does the gpt2-124m recipe set KEY to VALUE?
    grep -Eq "^$2: *$3( |$)" "$RECIPES/$1/gpt2-124m.yaml"
}

# ---- the local Hub ----
if [ "$TINY" = 1 ]; then ROWS=300; else ROWS=2000; fi
"$PYTHON" tests/make_local_hub.py "$OUT/local_hub" --rows "$ROWS" --serve > "$OUT/logs/local_hub.log" 2>&1 &
HUB_PID=$!
trap 'kill "$HUB_PID" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    grep -q '^HF_ENDPOINT=' "$OUT/logs/local_hub.log" && break
    kill -0 "$HUB_PID" 2>/dev/null || { cat "$OUT/logs/local_hub.log" >&2; exit 1; }
    sleep 0.5
done
# shellcheck disable=SC2046  # one KEY=VALUE word per variable
export $(grep '^HF_ENDPOINT=' "$OUT/logs/local_hub.log")
export HF_LLM_CACHE="$OUT/hf_llm_cache" TOKENIZERS_PARALLELISM=false
echo "gpu_check: local Hub at $HF_ENDPOINT ($((SECONDS - START)) s)"

# Every run goes through this wrapper: it runs the script as `python script.py` would and, at exit, writes the
# process's peak GPU memory and resident memory to $GPU_CHECK_MEMORY_FILE (rank 0 only).
cat > "$OUT/measure.py" <<'EOF'
import atexit, json, os, resource, runpy, sys

def report():
    import torch

    if os.environ.get("RANK", "0") == "0":
        gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with open(os.environ["GPU_CHECK_MEMORY_FILE"], "w") as f:
            json.dump({"peak_gpu_bytes": gpu, "peak_rss_bytes": rss}, f)

atexit.register(report)
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
EOF

run() {  # run NAME COMMAND...: one run, its output in logs/NAME.log
    local name=$1 started=$SECONDS
    shift
    echo "gpu_check: $name ..."
    if ! GPU_CHECK_MEMORY_FILE="$OUT/logs/$name.memory.json" "$@" > "$OUT/logs/$name.log" 2>&1; then
        tail -n 30 "$OUT/logs/$name.log" >&2
        echo "gpu_check: error: $name failed (log: $OUT/logs/$name.log)" >&2
        exit 1
    fi
    echo "gpu_check: $name done in $((SECONDS - started)) s"
}
stage() {  # stage NAME SCRIPT FLAGS...: train_scripts/SCRIPT.py with its gpt2-124m recipe
    local name=$1 script=$2
    shift 2
    run "$name" "$PYTHON" "$OUT/measure.py" "train_scripts/$script.py" --config "$RECIPES/$script/gpt2-124m.yaml" \
        --output_dir "$OUT/$name" --report_to none "$@"
}

if [ "$DEVICE" = cpu ]; then
    DEVICE_FLAGS=(--use_cpu true --bf16 false)
    LAUNCH_FSDP=(--mixed_precision no tests/distributed_shim.py)  # accelerate shards only on GPUs: see the shim
else
    DEVICE_FLAGS=(--bf16 true)
    LAUNCH_FSDP=(--mixed_precision no)
fi
if recipe_says pretrain streaming true; then EVAL_CAP=(--streaming_eval_blocks 8); else EVAL_CAP=(--max_eval_samples 64); fi
if [ "$TINY" = 1 ]; then
    SHAPE=(--model_preset tiny --block_size 64 --per_device_train_batch_size 4)
    PRETRAIN_STEPS=(--max_steps 6 --logging_steps 2)
    STEPS=(--max_steps 2 --logging_steps 1 --per_device_train_batch_size 2 --gradient_accumulation_steps 1)
    FROM=(--model_name_or_path "$OUT/pretrain-sdpa")  # the tiny model just pretrained, not GPT-2 small
    LENGTH=(--max_length 128)
    PPO=(--total_episodes 4 --per_device_train_batch_size 2 --gradient_accumulation_steps 1 --num_mini_batches 1)
    PPO+=(--local_rollout_forward_batch_size 2 --response_length 8)
    FSDP_STEPS=(--max_steps 5)
else
    SHAPE=()
    PRETRAIN_STEPS=(--max_steps 200 --logging_steps 10)
    STEPS=(--max_steps 20 --logging_steps 5)
    FROM=()
    LENGTH=()
    PPO=(--total_episodes 1280)  # 20 updates of the recipe's 16 x 4 episodes
    FSDP_STEPS=(--max_steps 20)
fi

# ---- 1. pretraining: eager, then compiled ----
PRETRAIN=("${SHAPE[@]}" "${PRETRAIN_STEPS[@]}" --gradient_accumulation_steps 1 --attn_implementation sdpa)
PRETRAIN+=("${DEVICE_FLAGS[@]}" "${EVAL_CAP[@]}" --save_strategy no)
stage pretrain-sdpa pretrain "${PRETRAIN[@]}" --torch_compile false
stage pretrain-sdpa-compiled pretrain "${PRETRAIN[@]}" --torch_compile true

# ---- 2. the other stages at the recipes' batch sizes (SFT from OpenAI's GPT-2 shape, via from_gpt2) ----
if [ "$TINY" = 1 ]; then
    # The tiny model stands in for OpenAI's GPT-2, whose conversion (from_gpt2) adds the Alpaca chat template.
    "$PYTHON" -c "import sys; from transformers import AutoTokenizer; from hf_llm.tokenizer import ALPACA_CHAT_TEMPLATE
t = AutoTokenizer.from_pretrained(sys.argv[1]); t.chat_template = ALPACA_CHAT_TEMPLATE; t.save_pretrained(sys.argv[1])" \
        "$OUT/pretrain-sdpa"
fi
EVALS=(--max_eval_samples 16 --per_device_eval_batch_size 8)
stage sft sft "${FROM[@]}" "${STEPS[@]}" "${LENGTH[@]}" "${DEVICE_FLAGS[@]}" "${EVALS[@]}" \
    --num_generation_samples 4 --generation_max_new_tokens 16
stage reward reward --model_name_or_path "$OUT/sft" "${STEPS[@]}" "${LENGTH[@]}" "${DEVICE_FLAGS[@]}" "${EVALS[@]}"
ALIGN=(--model_name_or_path "$OUT/sft" --reward_model_path "$OUT/reward/merged")
stage ppo ppo "${ALIGN[@]}" "${PPO[@]}" "${DEVICE_FLAGS[@]}" "${EVALS[@]}" --win_rate_samples 8 \
    --num_sample_generations 0
stage dpo dpo "${ALIGN[@]}" "${STEPS[@]}" "${LENGTH[@]}" "${DEVICE_FLAGS[@]}" "${EVALS[@]}" --win_rate_samples 8 \
    --win_rate_max_new_tokens 16

# ---- 3. FSDP2 on the one device against the same steps unsharded, fp32 ----
FSDP=("${SHAPE[@]}" "${FSDP_STEPS[@]}" --gradient_accumulation_steps 1 --logging_steps 1 --seed 42 --bf16 false)
FSDP+=(--torch_compile false --eval_strategy no --eval_on_start false --save_strategy no --report_to none)
[ "$DEVICE" = cpu ] && FSDP+=(--use_cpu true)
for name in unsharded fsdp2; do
    if [ $name = fsdp2 ]; then config=fsdp.yaml; launch=("${LAUNCH_FSDP[@]}"); else config=cpu.yaml; launch=(--mixed_precision no); fi
    [ "$DEVICE" = cuda ] && [ $name = unsharded ] && config=single_gpu.yaml
    run "pretrain-$name" "$PYTHON" -m accelerate.commands.launch --config_file "accelerate_configs/$config" \
        --num_processes 1 --main_process_port $((29500 + RANDOM % 1000)) "${launch[@]}" "$OUT/measure.py" \
        train_scripts/pretrain.py --config "$RECIPES/pretrain/gpt2-124m.yaml" --output_dir "$OUT/pretrain-$name" "${FSDP[@]}"
done

# ---- the table ----
"$PYTHON" - "$OUT" "$DEVICE" "$TINY" "$((SECONDS - START))" <<'EOF'
import json, statistics, sys
from pathlib import Path

out, device, tiny, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])

def logs(name):
    """The run's training logs, at full precision (trainer_state.json, not the rounded lines it printed)."""
    state = json.loads((out / name / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if not any(key.startswith("eval_") for key in entry)]

def steady(name, key):
    """Median of `key` over the training logs after the first (warm-up, compilation)."""
    values = [log[key] for log in logs(name) if key in log]
    return statistics.median(values[1:] if len(values) > 1 else values) if values else None

def memory(name):
    path = out / "logs" / f"{name}.memory.json"
    return json.loads(path.read_text()) if path.is_file() else {}

def gib(value):
    return f"{value / 2**30:.1f}" if value else "-"

try:
    import torch
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
except Exception:
    device_name = device
rows = []
for name, what in [
    ("pretrain-sdpa", "pretrain, sdpa, eager"),
    ("pretrain-sdpa-compiled", "pretrain, sdpa, torch_compile"),
    ("sft", "sft (LoRA)"),
    ("reward", "reward (LoRA)"),
    ("ppo", "ppo (LoRA policy)"),
    ("dpo", "dpo (LoRA)"),
]:
    tokens, episodes, mfu = steady(name, "tokens_per_second"), steady(name, "episodes_per_second"), steady(name, "mfu")
    rate = f"{episodes:,.2f} episodes/s" if episodes is not None else (f"{tokens:,.0f} tokens/s" if tokens else "-")
    if tokens is None and episodes is None:  # a script without ThroughputCallback: Trainer's running average
        average = [log["train_tokens_per_second"] for log in logs(name) if "train_tokens_per_second" in log]
        rate = f"{average[-1]:,.0f} tokens/s (Trainer's average since the start)" if average else "-"
    used = memory(name)
    rows.append(
        f"| {what} | {rate} | {f'{mfu:.1%}' if mfu is not None else '-'} | {gib(used.get('peak_gpu_bytes'))} "
        f"| {gib(used.get('peak_rss_bytes'))} |"
    )
losses = {name: [log["loss"] for log in logs(f"pretrain-{name}") if "loss" in log] for name in ("unsharded", "fsdp2")}
pairs = list(zip(losses["unsharded"], losses["fsdp2"]))
worst = max((abs(a - b) for a, b in pairs), default=float("inf"))
same = len(pairs) > 0 and len(losses["unsharded"]) == len(losses["fsdp2"]) and worst <= 1e-4
fsdp_line = (
    f"FSDP2 on one device, {len(pairs)} steps in fp32: per-step loss {'equal to' if same else 'DIFFERENT from'} the "
    f"unsharded run's (largest difference {worst:.2e}; step 1: {losses['unsharded'][:1]} vs {losses['fsdp2'][:1]})"
)
shape = "tiny shape" if tiny else "GPT-2 small"
table = "\n".join(
    [
        f"## benchmarks/gpu_check.sh on {device_name} ({shape}), {seconds} s in all",
        "",
        "| run | throughput (median after the first log) | MFU | peak GPU memory (GiB) | peak RSS (GiB) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        fsdp_line,
        "",
    ]
)
(out / "gpu_check.md").write_text(table)
print(table)
sys.exit(0 if same else 1)
EOF
