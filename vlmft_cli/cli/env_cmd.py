"""`vlmft env`: the versions, GPUs and plugins of this machine, to paste into a bug report."""

from __future__ import annotations

from vlmft_cli.cli import output
from vlmft_cli.cli.options import JsonOption


def env(json: JsonOption = False) -> None:
    """Show versions (Python, torch with CUDA and cuDNN, transformers, PEFT, accelerate, bitsandbytes, flash-attn, …), the GPUs and their memory, and the plugins: paste it into a bug report.

    Example: vlmft env
    """
    from vlmft_cli.env_report import collect_environment

    report = collect_environment()
    if json:
        output.print_json(report)
        return
    gpus = "; ".join(f"{g['index']}: {g['name']} ({g['memory_gb']:g} GB, sm {g['compute_capability']})" for g in report["gpus"]) or "none visible"
    rows = [
        ["vlmft", report["vlmft"]],
        ["python", report["python"]],
        ["platform", report["platform"]],
        ["CPU cores / memory", f"{report['cpu_cores']} / {report['memory_gb']} GB"],
        ["torch CUDA / cuDNN", f"{report['torch_cuda'] or 'CPU build'} / {report.get('cudnn') or '-'}"],
        ["GPUs", gpus],
        *[[name, version or "not installed"] for name, version in report["packages"].items()],
        *[[f"${name}", value] for name, value in report["environment"].items()],
    ]
    output.print_table("Environment", ["", "version / value"], rows)
    plugins = [[p["group"], p["name"], f"{p['distribution']} {p['version']}", p["status"] + (f": {p['reason']}" if p["reason"] else "")] for p in report["plugins"]]
    output.print_table("Plugins", ["group", "name", "from", "status"], plugins)
