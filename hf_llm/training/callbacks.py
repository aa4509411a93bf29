"""Trainer callbacks shared by every training stage (pretraining, fine-tuning, reward modelling, RLHF).

- [`NonFiniteGuardCallback`]: stops a run whose loss or weights became NaN/Inf, before a non-finite checkpoint is
  written.
- [`ThroughputCallback`]: logs tokens/s and, on GPUs with a known bf16 peak, model FLOPs utilization (MFU); under
  an online trainer (TRL's `PPOTrainer`), episodes/s.
- [`PerplexityCallback`]: logs `eval_perplexity = exp(eval_loss)` next to every `eval_loss`.

They work under `Trainer` and every TRL trainer hf_llm uses (`SFTTrainer`, `RewardTrainer`, `DPOTrainer` and
`trl.experimental.ppo.PPOTrainer`). PPO is the odd one: it runs its own loop, logs `loss/policy_avg`,
`loss/value_avg` and `objective/*` instead of `loss`, counts episodes instead of input tokens, never calls
`on_step_begin`, and logs before `on_step_end` (Trainer logs after it). The guard watches PPO's keys too, and the
throughput clock closes its save pause at `on_save`, which both loops call.

Callbacks that add values to the logs must run before the reporting integrations (TensorBoard, W&B, the console):
add them with [`add_callbacks`], not `Trainer(callbacks=...)`, which appends them after the reporters.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import DefaultFlowCallback
from transformers.utils import logging

from hf_llm.evaluation.perplexity import perplexity_from_loss

logger = logging.get_logger(__name__)

# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from the vendors' datasheets. Order matters: the first
# pattern that matches `torch.cuda.get_device_name()` wins, so variants come before the generic name.
GPU_PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    (r"\bGH200\b", 989.4e12),
    (r"\bH200\b", 989.4e12),
    (r"\bH100\b.*\bNVL\b", 835.5e12),
    (r"\bH100\b.*\bPCIe\b", 756.5e12),
    (r"\bH100\b", 989.4e12),  # SXM ("NVIDIA H100 80GB HBM3")
    (r"\bB200\b", 2250e12),
    (r"\bA100\b", 312e12),
    (r"\bL40S\b", 362.05e12),
    (r"\bL40\b", 181.05e12),
    (r"\bL4\b", 121e12),
    (r"\bA10\b", 125e12),
    (r"\bMI300X\b", 1307.4e12),
)


def get_peak_bf16_flops(device_name: str) -> float | None:
    """
    Dense bf16 peak FLOP/s of a GPU, looked up by name in [`GPU_PEAK_BF16_FLOPS`].

    Args:
        device_name (`str`): As reported by `torch.cuda.get_device_name()`, e.g. `"NVIDIA H100 80GB HBM3"`.

    Returns:
        `float | None`: Peak FLOP/s, or `None` for devices not in the table (MFU is then not reported).
    """
    for pattern, peak in GPU_PEAK_BF16_FLOPS:
        if re.search(pattern, device_name):
            return peak
    return None


class NonFiniteError(RuntimeError):
    """Raised by [`NonFiniteGuardCallback`] when training produced a NaN or Inf loss or weight."""


# Logged values that must stay finite: Trainer's loss and gradient norm, and PPO's losses and objectives.
WATCHED_LOG_KEYS = ("loss", "eval_loss", "grad_norm")
WATCHED_LOG_PREFIXES = ("loss/", "objective/")


def _is_training_log(logs: dict) -> bool:
    """Whether a log is a training step's (Trainer's `loss`, PPO's `loss/policy_avg`), not an evaluation's."""
    return "loss" in logs or any(key.startswith("loss/") for key in logs)


def _first_non_finite_parameter(model: torch.nn.Module) -> str | None:
    params = [(name, p) for name, p in model.named_parameters() if p.is_floating_point()]
    if not params:
        return None
    # FSDP2 parameters are DTensors: check this rank's shard (a reduction over a DTensor fails after an evaluation);
    # the caller makes all ranks agree. One device sync for the whole model instead of one per tensor.
    local = [p.detach().to_local() if hasattr(p, "to_local") else p.detach() for _, p in params]
    finite = torch.stack([torch.isfinite(p).all().to("cpu", non_blocking=True) for p in local])
    if bool(finite.all()):
        return None
    return params[int((~finite).nonzero()[0])][0]


class NonFiniteGuardCallback(TrainerCallback):
    """
    Stops training with a clear error as soon as the loss or the weights stop being finite.

    Checks every logged `loss`, `eval_loss` and `grad_norm` (the gradient norm is skipped under fp16, where loss
    scaling produces and skips Inf gradients by design) and PPO's `loss/*` and `objective/*`, and the model's
    parameters (under PPO, the policy's and the value model's) at every log, before every checkpoint save and at the
    end of training. On a non-finite value it raises [`NonFiniteError`], so the run ends
    before `Trainer` or the script can write a NaN model.

    Trainer's `logging_nan_inf_filter` hides non-finite losses from the logs; the weights check catches those runs
    anyway. Set `logging_nan_inf_filter=False` to see them in the logs too.

    Must run after `DefaultFlowCallback` (which decides when to save): add it with [`add_callbacks`].
    """

    _hint = (
        "Lower --learning_rate, keep --max_grad_norm > 0, prefer --bf16 over --fp16, and check the data for "
        "empty or corrupt examples; then resume from the last checkpoint with --resume_from_checkpoint latest."
    )

    def _raise(self, what: str, state: TrainerState) -> None:
        raise NonFiniteError(
            f"Training stopped at step {state.global_step}: {what}. No checkpoint was saved. {self._hint}"
        )

    def _check_model(self, model: torch.nn.Module | None, state: TrainerState) -> None:
        if model is None:
            return
        name = _first_non_finite_parameter(model)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Under FSDP / ZeRO-3 each rank holds different shards: all ranks must stop together, or the ones that
            # saw only finite shards would wait forever in the next collective (the checkpoint save).
            device = next(model.parameters()).device
            all_finite = torch.tensor([int(name is None)], device=device)
            torch.distributed.all_reduce(all_finite, op=torch.distributed.ReduceOp.MIN)
            if name is None and not bool(all_finite.item()):
                self._raise("a parameter on another process is NaN/Inf", state)
        if name is not None:
            self._raise(f"parameter '{name}' is NaN/Inf", state)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            watched = key in WATCHED_LOG_KEYS or key.startswith(WATCHED_LOG_PREFIXES)
            if not watched or (key == "grad_norm" and args.fp16):
                continue
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._raise(f"{key} is {value}", state)
        self._check_model(kwargs.get("model"), state)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if control.should_save:
            self._check_model(kwargs.get("model"), state)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if control.should_save:
            self._check_model(kwargs.get("model"), state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._check_model(kwargs.get("model"), state)


def flops_per_token(model: torch.nn.Module, seq_length: int) -> float:
    """
    Training FLOPs per token of a decoder (forward + backward), the PaLM appendix-B estimate.

    `6 * N + 12 * L * H * T`, with `N` the non-embedding parameters, `L` layers, `H` hidden size and `T` the
    sequence length (the attention-score term).

    Args:
        model (`torch.nn.Module`): A transformers model (its `config` gives `L` and `H`).
        seq_length (`int`): Tokens per training sequence.

    Returns:
        `float`: FLOPs per trained token.
    """
    if hasattr(model, "num_parameters"):
        n_params = model.num_parameters(exclude_embeddings=True)
    else:
        n_params = sum(p.numel() for p in model.parameters())
    config = getattr(model, "config", None)
    n_layers = getattr(config, "num_hidden_layers", 0) or 0
    hidden = getattr(config, "hidden_size", 0) or 0
    return 6.0 * n_params + 12.0 * n_layers * hidden * seq_length


class ThroughputCallback(TrainerCallback):
    """
    Logs training throughput with every training log: `tokens_per_second` (all processes),
    `tokens_per_second_per_device` and, on a GPU whose bf16 peak is known, `mfu` (model FLOPs utilization, 0-1).

    Tokens are Trainer's own count (`state.num_input_tokens_seen`), so set `include_num_input_tokens_seen` to
    `"all"` or `"non_padding"` in the training arguments; otherwise nothing is logged and a warning says so.
    TRL's `PPOTrainer` counts no input tokens; its state counts episodes (prompts answered and scored), so under it
    `episodes_per_second` is logged instead. Time is wall time between logs, without the time spent in evaluation
    and checkpoint saves.

    Args:
        seq_length (`int`, *optional*):
            Tokens per training sequence, for the attention term of the FLOPs estimate. Defaults to the mean
            tokens per example seen between two logs.
        peak_flops_per_device (`float`, *optional*):
            Peak FLOP/s of one device; overrides the [`GPU_PEAK_BF16_FLOPS`] lookup (e.g. for an fp32 run).
    """

    def __init__(self, seq_length: int | None = None, peak_flops_per_device: float | None = None):
        self.seq_length = seq_length
        self.peak_flops_per_device = peak_flops_per_device
        self._window_start: float | None = None
        self._window_excluded = 0.0
        self._last_tokens = 0
        self._last_episode = 0
        self._last_step = 0
        self._pause_start: float | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        online = hasattr(state, "episode")  # TRL's OnlineTrainerState (PPO): episodes, not input tokens
        if args.include_num_input_tokens_seen in ("no", False) and not online:
            logger.warning(
                "ThroughputCallback: tokens/s is not logged because include_num_input_tokens_seen is 'no'; "
                "pass --include_num_input_tokens_seen non_padding."
            )
        if self.peak_flops_per_device is None and torch.cuda.is_available():
            self.peak_flops_per_device = get_peak_bf16_flops(torch.cuda.get_device_name())
        self._window_start = time.perf_counter()
        self._window_excluded = 0.0
        self._pause_start = None
        self._last_tokens = state.num_input_tokens_seen
        self._last_episode = getattr(state, "episode", 0)
        self._last_step = state.global_step

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step == self._last_step and self._pause_start is None:
            # No step since the window opened (`eval_on_start`, or a manual evaluate): restart the clock.
            self._window_start, self._window_excluded = time.perf_counter(), 0.0

    # Evaluation and checkpoint saves run between a step's end and the next step's beginning: leave them out.
    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if control.should_evaluate or control.should_save:
            self._pause_start = time.perf_counter()

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._end_pause()

    # PPO never calls on_step_begin; both loops call on_save right after a checkpoint is written.
    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._end_pause()

    def _end_pause(self) -> None:
        if self._pause_start is not None:
            self._window_excluded += time.perf_counter() - self._pause_start
            self._pause_start = None

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if logs is None or not _is_training_log(logs) or self._window_start is None:
            return
        now = time.perf_counter()
        end = self._pause_start if self._pause_start is not None else now
        elapsed = end - self._window_start - self._window_excluded
        tokens = state.num_input_tokens_seen - self._last_tokens
        episode = getattr(state, "episode", 0)
        episodes = episode - self._last_episode
        steps = state.global_step - self._last_step
        self._window_start, self._window_excluded = now, 0.0
        if self._pause_start is not None:
            self._pause_start = now  # the pause goes on into the new window
        self._last_tokens, self._last_episode = state.num_input_tokens_seen, episode
        self._last_step = state.global_step
        if elapsed <= 0 or steps <= 0:
            return
        world_size = max(args.world_size, 1)
        if episodes > 0 and tokens <= 0:
            _add_to_logs(logs, state, {"episodes_per_second": episodes / elapsed})
            return
        if tokens <= 0:
            return
        extra = {
            "tokens_per_second": tokens / elapsed,
            "tokens_per_second_per_device": tokens / elapsed / world_size,
        }
        model = kwargs.get("model")
        if self.peak_flops_per_device and model is not None:
            seq_length = self.seq_length
            if seq_length is None:
                examples = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size
                seq_length = max(1, round(tokens / examples))
            achieved = extra["tokens_per_second_per_device"] * flops_per_token(model, seq_length)
            extra["mfu"] = achieved / self.peak_flops_per_device
        _add_to_logs(logs, state, extra)


class PerplexityCallback(TrainerCallback):
    """
    Adds `<prefix>_perplexity = exp(<prefix>_loss)` to every evaluation log (`eval_loss` -> `eval_perplexity`),
    unless `compute_metrics` already reported it (e.g. `hf_llm.evaluation`'s token-weighted causal-LM metrics).

    The value lands in the dict `Trainer.evaluate()` returns, in `trainer_state.json` and, when the callback is
    added with [`add_callbacks`], in TensorBoard. Exponent overflow gives `inf`, never an error.
    """

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not logs:
            return
        extra = {}
        for key, value in logs.items():
            if not (key.startswith("eval") and key.endswith("_loss") and isinstance(value, (int, float))):
                continue
            name = key[: -len("_loss")] + "_perplexity"
            if name not in logs:
                extra[name] = perplexity_from_loss(value)
        if extra:
            _add_to_logs(logs, state, extra)


def _add_to_logs(logs: dict, state: TrainerState, extra: dict) -> None:
    # Trainer appended a copy of `logs` to the history before calling on_log: update both.
    logs.update(extra)
    if state.log_history and state.log_history[-1].get("step") == state.global_step:
        state.log_history[-1].update(extra)


def add_callbacks(trainer, callbacks: Iterable[TrainerCallback]) -> None:
    """
    Add callbacks right after Trainer's flow control and before the reporting integrations.

    `Trainer(callbacks=...)` and `trainer.add_callback` append, so reporters (TensorBoard, W&B, the console) would
    log before our callbacks add `tokens_per_second` or `eval_perplexity` to the logs. This keeps
    `DefaultFlowCallback` first (guards read its save decision), then `callbacks`, then everything else.

    Args:
        trainer (`transformers.Trainer`): Any Trainer, TRL trainers included.
        callbacks (`Iterable[TrainerCallback]`): Callback instances, in the order they should run.
    """
    existing = list(trainer.callback_handler.callbacks)
    for callback in existing:
        trainer.remove_callback(callback)
    flow = [cb for cb in existing if isinstance(cb, DefaultFlowCallback)]
    rest = [cb for cb in existing if not isinstance(cb, DefaultFlowCallback)]
    for callback in [*flow, *callbacks, *rest]:
        trainer.add_callback(callback)
