"""Which device a benchmark runs on, how to wait for it, and what it is (for the JSON documents).

`device_info` records what makes two results comparable or not: versions of torch, CUDA, transformers
and PEFT, the GPU's name, compute capability and memory, or the CPU's model, cores and torch threads;
`host_info` is its torch-free part.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Any

from vlmft_cli import __version__
from vlmft_cli.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> str:
    """"cuda" or "cpu": `auto` takes CUDA where it is visible; asking for CUDA without one is an error."""
    import torch

    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r} (expected one of {', '.join(DEVICES)})")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("no CUDA device is visible here", hint="use --device cpu")
    return name


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    import torch

    if device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info(device: str = "cpu") -> dict[str, Any]:
    """The host alone (vlmft and Python versions, CPU model and cores), without importing torch: for
    benchmarks that never touch it (`bench extract`)."""
    return {
        "device": device,
        "vlmft": __version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
    }


def device_info(device: str) -> dict[str, Any]:
    """Versions and hardware of this run, as a JSON-ready mapping."""
    import peft
    import torch
    import transformers

    info: dict[str, Any] = {
        **host_info(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_count=torch.cuda.device_count(),
            compute_capability=f"{props.major}.{props.minor}",
            gpu_memory_gb=round(props.total_memory / 1e9, 1),
            cudnn=torch.backends.cudnn.version(),
        )
    return info
