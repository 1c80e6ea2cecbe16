"""Peak memory of a region of code: CUDA's allocator statistics, or the process's peak resident set.

On CUDA the peak is `torch.cuda.max_memory_allocated` after a reset (tensors only, what a memory cap
counts); reserved memory is recorded beside it. On the CPU tracemalloc cannot see torch's allocations, so
the peak is the resident set's high-water mark (`VmHWM` in /proc/self/status, reset by writing 5 to
/proc/self/clear_refs, Linux ≥ 4.0), after glibc's `malloc_trim` has handed freed memory back so that
reused pages do not hide a region's needs; where the mark cannot be reset the kind is "n/a" and no
figure is given.
Both are reported in MiB, absolute and as the growth over the memory in use when the region started.
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

MIB = 2**20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class MemoryReading:
    """Peak memory of a region: `kind` says what was measured ("cuda_max_allocated", "rss_peak", "n/a")."""

    kind: str
    peak_mib: float | None = None  # absolute peak during the region
    start_mib: float | None = None  # in use when the region started
    reserved_mib: float | None = None  # CUDA only: the allocator's peak reservation

    @property
    def growth_mib(self) -> float | None:
        if self.peak_mib is None or self.start_mib is None:
            return None
        return max(0.0, self.peak_mib - self.start_mib)

    def as_dict(self) -> dict[str, Any]:
        rounded = {k: None if v is None else round(v, 1) for k, v in (("peak_mib", self.peak_mib), ("start_mib", self.start_mib), ("growth_mib", self.growth_mib), ("reserved_mib", self.reserved_mib))}
        return {"kind": self.kind, **rounded}


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _trim_heap() -> None:
    """Return memory freed to glibc's heap to the system (best effort; nothing happens elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_rss_peak() -> bool:
    _trim_heap()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """`with PeakMemory(device) as peak: …` then `peak.reading`."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.reading = MemoryReading("n/a")
        self._start: float | None = None
        self._rss_resettable = False

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated() / MIB
        else:
            self._rss_resettable = _reset_rss_peak()
            rss = _status_kib("VmRSS")
            self._start = None if rss is None else rss / 1024
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.reading = MemoryReading(
                "cuda_max_allocated", torch.cuda.max_memory_allocated() / MIB, self._start, torch.cuda.max_memory_reserved() / MIB
            )
            return
        peak = _status_kib("VmHWM")
        if self._rss_resettable and peak is not None:
            self.reading = MemoryReading("rss_peak", peak / 1024, self._start)
