"""A throwaway third-party distribution, built and installed like any plugin, is listed and usable."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PYPROJECT = """
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "vlmft-example-plugin"
version = "0.3.0"

[tool.setuptools]
packages = ["vlmft_example", "vlmft_example_profiles"]

[tool.setuptools.package-data]
vlmft_example_profiles = ["*.yaml"]

[project.entry-points."vlmft.attention"]
toy = "vlmft_example:ToyAttention"

[project.entry-points."vlmft.models"]
broken = "vlmft_example.missing:Backend"

[project.entry-points."vlmft.profiles"]
example = "vlmft_example_profiles"
"""

MODULE = '''
from vlmft_cli.attention import Availability


class ToyAttention:
    name = "toy"
    description = "eager attention under another name"
    attn_implementation = "eager"
    supports_block_mask = True

    def availability(self):
        return Availability.yes()

    def setup(self):
        pass
'''

PROFILE = """
description: example workstation
hardware: {device: cuda, memory_gb: 48, unified_memory: false, compute_capability: "8.6", peak_bf16_tflops: 150}
defaults: {memory_cap_gb: 44, attention: toy}
stages:
  1: {micro_batch_size: 4}
  2: {micro_batch_size: 2}
"""


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "vlmft_example").mkdir()
    (src / "vlmft_example" / "__init__.py").write_text(textwrap.dedent(MODULE))
    (src / "vlmft_example_profiles").mkdir()
    (src / "vlmft_example_profiles" / "__init__.py").write_text("")
    (src / "vlmft_example_profiles" / "example-box.yaml").write_text(PROFILE)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(src)],
        check=True,
        timeout=300,
    )
    return target


def run_vlmft(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "vlmft_cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_third_party_plugins_are_listed_and_usable(installed_plugin):
    listed = run_vlmft(installed_plugin, "plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {(r["group"], r["name"]): r for r in json.loads(listed.stdout)}
    toy = rows[("vlmft.attention", "toy")]
    assert (toy["distribution"], toy["version"], toy["status"]) == ("vlmft-example-plugin", "0.3.0", "available")
    broken = rows[("vlmft.models", "broken")]
    assert broken["status"] == "broken" and "ModuleNotFoundError" in broken["reason"]
    assert rows[("vlmft.models", "internvl3")]["status"] == "available"  # the rest keeps working

    shown = run_vlmft(installed_plugin, "profiles", "show", "example-box", "--json")
    assert shown.returncode == 0, shown.stderr
    settings = {row["key"]: row for row in json.loads(shown.stdout)["settings"]}
    assert settings["attention"]["value"] == "toy" and settings["micro_batch_size"]["value"] == 4
    assert "vlmft-example-plugin" in json.loads(shown.stdout)["origin"]

    env = {**os.environ, "PYTHONPATH": str(installed_plugin)}
    code = "from vlmft_cli.attention import select_attention; b = select_attention('toy'); print(b.name, b.attn_implementation)"
    used = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert used.stdout.strip() == "toy eager", used.stderr
