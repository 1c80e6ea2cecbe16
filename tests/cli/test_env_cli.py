"""`vlmft env`: the versions it reports are the installed ones, and it imports neither TensorFlow nor
bitsandbytes."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import torch

SCRIPT = """
import json, sys
from typer.testing import CliRunner
from vlmft_cli.cli.app import app
result = CliRunner().invoke(app, ["env", "--json"])
print(json.dumps({"exit": result.exit_code, "report": json.loads(result.output),
                  "imported": sorted(m for m in ("tensorflow", "bitsandbytes") if m in sys.modules)}))
table = CliRunner().invoke(app, ["env"])
assert table.exit_code == 0 and "transformers" in table.output, table.output
"""


def test_env_reports_the_installed_versions_without_importing_tensorflow_or_bitsandbytes():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["exit"] == 0
    assert result["imported"] == []
    report = result["report"]
    for name in ("transformers", "peft", "accelerate", "bitsandbytes", "tensorflow-cpu"):
        key = "tensorflow" if name.startswith("tensorflow") else name
        try:
            expected = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        assert report["packages"][key] == expected, name
    assert report["packages"]["torch"] == torch.__version__
    assert report["packages"]["flash-attn"] is None or report["packages"]["flash-attn"] == metadata.version("flash-attn")
    assert report["cuda_available"] == torch.cuda.is_available() and len(report["gpus"]) == torch.cuda.device_count()
    assert {("vlmft.models", "internvl3"), ("vlmft.attention", "sdpa"), ("vlmft.recipes", "builtin")} <= {(p["group"], p["name"]) for p in report["plugins"]}
