"""No silent fallback from sharded training: a run whose accelerate config asks for FSDP or DeepSpeed is sharded.

`accelerate launch` with an FSDP or DeepSpeed config exports `ACCELERATE_USE_FSDP` / `ACCELERATE_USE_DEEPSPEED` to
every process (so do `Accelerator(fsdp_plugin=...)` and `--fsdp` / `--deepspeed`), but whether the run is then
sharded is decided inside each process by `accelerate.state.AcceleratorState`, which turns FSDP and DeepSpeed on
only for accelerator devices (GPU, XPU, NPU, ...). Elsewhere the run goes on as something else with exit code 0:
plain DDP on CPU processes, or every rank training its own copy when accelerate counts one process (seen on CPU:
`fsdp.yaml` ran as DDP or as two independent runs, `deepspeed_zero2.yaml` as DDP; docs/upstream-facts.md).

[`check_sharding`] turns that into one clear error before the first step. [`AtomicCheckpointMixin`], which every
stage's trainer uses, calls it around the model wrapping, so each stage script gets it without a line of its own.
"""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from hf_llm.errors import UsageError

_REQUESTS = {
    "FSDP": ("ACCELERATE_USE_FSDP", DistributedType.FSDP),
    "DeepSpeed": ("ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED),
}


def requested_sharding() -> str | None:
    """
    The sharded mode this process was asked to run in: `"FSDP"`, `"DeepSpeed"`, or `None` for neither.

    Read from the variables `accelerate launch` exports from its config (and `Accelerator` sets when given a plugin).
    """
    for name, (variable, _) in _REQUESTS.items():
        if os.environ.get(variable, "false").lower() in ("true", "1"):
            return name
    return None


def check_sharding(accelerator: Accelerator, model: torch.nn.Module | None = None) -> None:
    """
    Stop a run that was asked to shard (FSDP or DeepSpeed) but is not sharded.

    Checks the mode accelerate settled on (`accelerator.distributed_type`), that accelerate counts every process the
    launcher started (`WORLD_SIZE`), and, given `model`, that the prepared model is really wrapped (an FSDP2
    `FSDPModule`, an FSDP1 `FullyShardedDataParallel` or a `deepspeed.DeepSpeedEngine`). Does nothing for a run
    that asked for neither.

    Args:
        accelerator (`accelerate.Accelerator`): The run's accelerator (`trainer.accelerator`).
        model (`torch.nn.Module`, *optional*): The model returned by `accelerator.prepare`.

    Raises:
        [`UsageError`]: One line naming the requested mode, what the run is instead, why, and what to do.
    """
    requested = requested_sharding()
    if requested is None:
        return
    variable, mode = _REQUESTS[requested]
    actual = accelerator.distributed_type
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    asked = f"the accelerate config asks for {requested} ({variable}=true)"
    if actual != mode:
        if actual == DistributedType.MULTI_CPU:
            why = (
                f"but this run is plain data parallel ({actual.value}) over {accelerator.num_processes} CPU "
                f"processes, not sharded: accelerate switches to {requested} only on accelerator devices (GPUs), "
                "never for CPU processes (--use_cpu or no GPU)"
            )
        elif actual == DistributedType.NO and launched > 1:
            why = (
                f"but accelerate found no accelerator device (and --use_cpu is off), so each of the {launched} "
                "launched processes would train its own unsharded copy"
            )
        else:
            why = f"but accelerate runs it as {actual.value}, so the model would not be sharded"
        raise UsageError(
            f"{asked} {why}. Launch on GPUs, or drop the {requested} config (accelerate_configs/multi_cpu.yaml "
            "trains data parallel on CPU processes)."
        )
    if accelerator.num_processes != launched:
        raise UsageError(
            f"{asked} and accelerate is in {requested} mode, but it counts {accelerator.num_processes} process(es) "
            f"where the launcher started {launched} (WORLD_SIZE): without an accelerator device accelerate does not "
            "join the processes into one group, so each would train alone. Launch on GPUs, one process per device."
        )
    if model is not None and not _is_sharded_wrapper(getattr(model, "_orig_mod", model), mode):
        raise UsageError(
            f"{asked} and accelerate is in {requested} mode, but the prepared model is a plain "
            f"{type(model).__name__}, not a {requested} wrapper: nothing would be sharded. Check the {requested} "
            "section of the accelerate config."
        )


def _is_sharded_wrapper(model: torch.nn.Module, mode: DistributedType) -> bool:
    if mode == DistributedType.DEEPSPEED:
        from deepspeed import DeepSpeedEngine

        return isinstance(model, DeepSpeedEngine)
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return isinstance(model, (FSDPModule, FullyShardedDataParallel))
