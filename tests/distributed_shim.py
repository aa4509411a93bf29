"""Test-only shim: run a training script under accelerate's FSDP or DeepSpeed modes on CPU processes (gloo).

accelerate 1.15 turns FSDP and DeepSpeed on only for accelerator devices. On CPU processes the launcher exports
`ACCELERATE_USE_FSDP` / `ACCELERATE_USE_DEEPSPEED` from the config, but every worker stays `DistributedType.MULTI_CPU`
and trains as plain DDP (or, without `--use_cpu`, every rank trains alone) with exit code 0. This shim re-applies,
for `MULTI_CPU` only, the lines of `accelerate/state.py` that make that switch on GPUs:

- `PartialState.__init__`, the `if not cpu and self.backend != "xla":` block: `if ACCELERATE_USE_DEEPSPEED: ...
  dist.init_distributed(dist_backend=self.backend, auto_mpi_discovery=False)` and `use_deepspeed = True`, then
  `if use_deepspeed: self.distributed_type = DistributedType.DEEPSPEED` (here: DeepSpeed's comm layer wraps the gloo
  process group accelerate already opened).
- `AcceleratorState.__init__`: `if self.distributed_type == DistributedType.DEEPSPEED ...: self._mixed_precision =
  "no"` and `elif ACCELERATE_USE_DEEPSPEED and not cpu: self.distributed_type = DistributedType.DEEPSPEED;
  deepspeed_plugin.set_mixed_precision(...); deepspeed_plugin.select(_from_accelerator_state=True);
  self.deepspeed_plugins = deepspeed_plugin`.
- `AcceleratorState.__init__`, the `elif self.distributed_type in [DistributedType.MULTI_GPU, ...]:` branch:
  `if ACCELERATE_USE_FSDP or fsdp_plugin is not None: self.distributed_type = DistributedType.FSDP;
  fsdp_plugin.set_mixed_precision(...); self.fsdp_plugin = fsdp_plugin`.
- The last line of `AcceleratorState.__init__`: `PartialState._shared_state["distributed_type"] =
  self.distributed_type` (every later `AcceleratorState()` copies the `PartialState` fields back over its own).

Everything after that (wrapping with `fully_shard` / `deepspeed.initialize`, sharded saves and loads) is accelerate's
and transformers' own code. The library code under test is not patched: `hf_llm.training.distributed.check_sharded`
still verifies that the model really is sharded.

Usage (the worker script and its arguments follow the shim; pass `--use_cpu true` to the script):

    accelerate launch --config_file accelerate_configs/fsdp.yaml --num_processes 2 --mixed_precision no \
        tests/distributed_shim.py train_scripts/pretrain.py --config train_scripts/configs/pretrain/tiny.yaml \
        --use_cpu true --output_dir outputs/pretrain-tiny-fsdp
"""

import importlib
import os
import runpy
import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


_accelerator_state_init = AcceleratorState.__init__


def _accelerator_state_init_for_cpu(self, mixed_precision=None, cpu=False, **kwargs):
    first_init = "_mixed_precision" not in AcceleratorState._shared_state  # set only by the first, real __init__
    _accelerator_state_init(self, mixed_precision=mixed_precision, cpu=cpu, **kwargs)
    if not first_init or self.distributed_type != DistributedType.MULTI_CPU:
        return
    mixed_precision = self._mixed_precision
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        from deepspeed import comm

        # Not accelerate's: DeepSpeed's CPU comm layer JIT-compiles a shared-memory all-reduce with g++ on first use
        # (1-3 minutes on a fresh machine) that only its inference all-reduce calls; training never does. Skip it.
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
        if not comm.is_initialized():
            comm.init_distributed(dist_backend=self.backend, auto_mpi_discovery=False)
        deepspeed_plugin = kwargs["deepspeed_plugin"]
        self.distributed_type = DistributedType.DEEPSPEED
        self._mixed_precision = "no"
        deepspeed_plugin.set_mixed_precision(mixed_precision)
        deepspeed_plugin.select(_from_accelerator_state=True)
        self.deepspeed_plugins = deepspeed_plugin
    elif _flag("ACCELERATE_USE_FSDP") or kwargs.get("fsdp_plugin") is not None:
        fsdp_plugin = kwargs["fsdp_plugin"]
        self.distributed_type = DistributedType.FSDP
        if mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(mixed_precision)
        self.fsdp_plugin = fsdp_plugin
    else:
        return
    PartialState._shared_state["distributed_type"] = self.distributed_type


AcceleratorState.__init__ = _accelerator_state_init_for_cpu

if __name__ == "__main__":
    script, sys.argv = sys.argv[1], sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    # Seen once in CI: a rank aborted at interpreter exit ("terminate called without an active exception") after the
    # run had finished and saved, as gloo's threads were torn down by garbage collection. Tear the group down
    # explicitly once every rank is done.
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
