"""Data-parallel training across processes: launching through torchrun and agreeing on one run folder.

`vlmft train --nproc N` re-executes itself under `torch.distributed.run` (torchrun); a user may also
launch `torchrun --nproc-per-node N -m vlmft_cli train …` directly. Inside, transformers' Trainer and
accelerate do the data sharding, gradient all-reduce and rank-0 saving; this module only starts the
processes and lets rank 0 choose the run folder for everyone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

NPROC_FLAG = "--nproc"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_distributed_launch() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets the env contract)."""
    return "LOCAL_RANK" in os.environ and world_size() > 1


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The torchrun command that runs `vlmft` with `argv` (without --nproc) in `nproc` processes."""
    cleaned: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == NPROC_FLAG:
            skip = True
            continue
        if arg.startswith(NPROC_FLAG + "="):
            continue
        cleaned.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "vlmft_cli", *cleaned]


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run the same command line under torchrun; returns its exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
    return subprocess.call(torchrun_command(nproc, argv), env=env)


def init_process_group(device: str) -> None:
    """Start the process group the Trainer will use (gloo on CPU, nccl on CUDA) before anything needs it."""
    if not is_distributed_launch():
        return
    from accelerate import PartialState

    PartialState(backend="gloo" if device == "cpu" else None)


def on_rank_zero_then_share(make: Callable[[], T]) -> T:
    """Call `make` on rank 0 only and give every rank its (picklable) result."""
    if not is_distributed_launch():
        return make()
    import torch.distributed as dist

    box: list[Any] = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed_launch():
        import torch.distributed as dist

        dist.barrier()
