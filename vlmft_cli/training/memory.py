"""Memory: caps that hold at run time, and peak (not current) usage for metrics.

On CUDA the per-process memory fraction makes an overflow raise instead of spilling; on unified memory
(DGX Spark, CPU) the GPU allocator cannot see the pressure, so system memory is watched as well.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass

import psutil
import torch

GB = 1e9


@dataclass(frozen=True)
class MemoryCap:
    cap_gb: float | None
    unified: bool

    def apply(self) -> str | None:
        """Set the CUDA fraction; returns a line for the log, or None when there is nothing to set."""
        if self.cap_gb is None or not torch.cuda.is_available():
            return None
        total = torch.cuda.get_device_properties(0).total_memory
        fraction = min(1.0, self.cap_gb * GB / total)
        torch.cuda.set_per_process_memory_fraction(fraction)
        return f"CUDA memory capped at {self.cap_gb:g} GB ({fraction:.0%} of {total / GB:.1f} GB)"

    def breach(self) -> str | None:
        """A reason to stop now, or None. Checked every step on unified memory."""
        if self.cap_gb is None or not self.unified:
            return None
        rss = psutil.Process().memory_info().rss
        if rss > self.cap_gb * GB:
            return f"process memory {rss / GB:.1f} GB is over the cap of {self.cap_gb:g} GB"
        available = psutil.virtual_memory().available
        if available < 0.05 * psutil.virtual_memory().total:
            return f"system memory nearly exhausted ({available / GB:.1f} GB available)"
        return None


def peak_memory_gb() -> float:
    """Peak allocated CUDA memory when on a GPU, else the process's peak resident set."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / GB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / GB if sys.platform == "darwin" else peak * 1024 / GB


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()
