"""A matmul peak measured on this device in this run, the honest denominator of a utilization figure.

Published peaks are optimistic (and some are unknown), so `vlmft bench step` divides by a square matmul's
throughput measured beside the step, and shows the datasheet figure next to it. On CUDA the default is
an 8192³ bf16 matmul (about 800 TFLOP/s on an H100 SXM, against 989 on the datasheet); on the CPU a
2048³ one in the run's dtype. The peak is the fastest of the repeats (a shared machine only ever slows a
repeat down); the median is kept beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vlmft_cli.bench.device import synchronizer
from vlmft_cli.bench.results import significant
from vlmft_cli.bench.timing import Stats, repeat_timed

DEFAULT_SIZE = {"cuda": 8192, "cpu": 2048}


@dataclass(frozen=True)
class MatmulPeak:
    tflops: float  # from the fastest repeat: the peak
    median_tflops: float  # from the median time
    size: int
    dtype: str
    repeats: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tflops": significant(self.tflops), "median_tflops": significant(self.median_tflops)}


def measure_matmul_peak(device: str, dtype: str, size: int | None = None, *, warmup: int = 3, repeats: int = 10) -> MatmulPeak:
    """TFLOP/s of a size³ matmul in `dtype` ("bf16", "fp16", "fp32") on `device`."""
    import torch

    from vlmft_cli.runtime import dtype_for

    size = size or DEFAULT_SIZE.get(device, 1024)
    a = torch.randn(size, size, device=device, dtype=dtype_for(dtype))
    b = torch.randn(size, size, device=device, dtype=dtype_for(dtype))
    times = Stats.of(repeat_timed(lambda: a @ b, warmup=warmup, repeats=repeats, synchronize=synchronizer(device)))
    flops = 2 * size**3
    return MatmulPeak(flops / times.min / 1e12, flops / times.median / 1e12, size, dtype, repeats)
