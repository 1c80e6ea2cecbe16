"""What `vlmft env` reports for bug reports: versions, accelerators, plugins and the environment variables
that change behaviour (as `llamafactory-cli env` does).

Package versions come from their installed metadata, so nothing heavy is imported for them (tensorflow and
bitsandbytes are never imported); torch is imported for CUDA, cuDNN and the GPUs.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from vlmft_cli import __version__

#: Distributions whose versions matter for a report, in the order shown; alternatives share a row.
PACKAGES: tuple[tuple[str, ...], ...] = (
    ("torch",),
    ("transformers",),
    ("peft",),
    ("accelerate",),
    ("safetensors",),
    ("tokenizers",),
    ("bitsandbytes",),
    ("flash-attn", "flash_attn"),
    ("liger-kernel", "liger_kernel"),
    ("tensorflow", "tensorflow-cpu"),
    ("av",),
    ("pillow",),
    ("pydantic",),
    ("pydantic-settings",),
    ("typer",),
    ("sacrebleu",),
    ("vllm",),
)
#: Environment variables that change what vlmft or its libraries do.
VARIABLES = ("CUDA_VISIBLE_DEVICES", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PYTORCH_CUDA_ALLOC_CONF", "OMP_NUM_THREADS")


def package_version(*names: str) -> str | None:
    """The installed version of the first of `names` that is installed, or None."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def accelerator_info() -> dict[str, Any]:
    """torch's build (CUDA, cuDNN) and every visible GPU with its memory and compute capability."""
    import torch

    info: dict[str, Any] = {"torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "gpus": []}
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append({"index": index, "name": props.name, "memory_gb": round(props.total_memory / 1e9, 1), "compute_capability": f"{props.major}.{props.minor}"})
    return info


def host_memory_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 1e9, 1)
    except Exception:  # noqa: BLE001 - a missing figure is not worth failing a bug report
        return None


def collect_environment() -> dict[str, Any]:
    """Everything `vlmft env` shows, JSON-ready."""
    from vlmft_cli.plugin_status import statuses_as_dicts

    return {
        "vlmft": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "memory_gb": host_memory_gb(),
        "packages": {names[0]: package_version(*names) for names in PACKAGES},
        **accelerator_info(),
        "plugins": [{k: row[k] for k in ("group", "name", "distribution", "version", "status", "reason")} for row in statuses_as_dicts()],
        "environment": {name: os.environ[name] for name in VARIABLES if name in os.environ}
        | {name: value for name, value in sorted(os.environ.items()) if name.startswith("VLMFT_")},
    }
