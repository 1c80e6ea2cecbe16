"""Timing helpers shared by the benchmarks: warm-up then repeats, summary statistics, wall and CPU time.

`repeat_timed` calls a function `warmup` times untimed, then `repeats` times timed, with a device
synchronisation around each timed call (pass the device's `synchronize`, see `vlmft_cli.bench.device`),
so asynchronous CUDA work is inside the interval it belongs to. `Stats` summarises the samples: median,
min, max and the interquartile range; medians are what reports quote, because a machine shared with other
work adds outliers, never speed.

`cpu_seconds` and `timed` measure wall and CPU time (this process and its finished children) of a block;
`bench extract` uses them. Nothing here imports torch.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements (in whatever unit the samples are in)."""

    median: float
    min: float
    max: float
    q1: float
    q3: float
    count: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if not samples:
            raise ValueError("no samples to summarise")
        values = sorted(samples)
        if len(values) == 1:
            q1 = q3 = values[0]
        else:
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(statistics.median(values), values[0], values[-1], q1, q3, len(values))

    def scaled(self, factor: float) -> Stats:
        """The same statistics in another unit (e.g. seconds × 1000 → milliseconds)."""
        return Stats(self.median * factor, self.min * factor, self.max * factor, self.q1 * factor, self.q3 * factor, self.count)

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        rounded = {name: round(getattr(self, name), digits) for name in ("median", "min", "max", "q1", "q3", "iqr")}
        return {**rounded, "count": self.count}


def _no_sync() -> None:
    pass


def repeat_timed(
    call: Callable[[], Any], *, warmup: int, repeats: int, synchronize: Callable[[], None] = _no_sync
) -> list[float]:
    """Seconds of each of `repeats` timed calls of `call`, after `warmup` untimed ones."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        call()
    synchronize()
    samples = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        call()
        synchronize()
        samples.append(time.perf_counter() - start)
    return samples


def cpu_seconds() -> float:
    """CPU time of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class WallCpu:
    """Wall-clock and CPU seconds of one timed block."""

    wall_s: float
    cpu_s: float


@contextmanager
def timed(timings: list[WallCpu]) -> Iterator[None]:
    """Append the wall and CPU seconds of the block to `timings`."""
    wall, cpu = time.monotonic(), cpu_seconds()
    yield
    timings.append(WallCpu(time.monotonic() - wall, cpu_seconds() - cpu))
