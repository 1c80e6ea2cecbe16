import json

from typer.testing import CliRunner

from vlmft_cli import __version__
from vlmft_cli.cli.app import app

runner = CliRunner()


def test_help_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("plugins", "profiles"):
        assert group in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"vlmft {__version__}"


def test_plugins_list_json():
    result = runner.invoke(app, ["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["group"], r["name"]): r for r in json.loads(result.stdout)}
    assert rows[("vlmft.models", "internvl3")]["status"] == "available"
    assert rows[("vlmft.attention", "sdpa")]["status"] == "available"
    assert rows[("vlmft.attention", "eager")]["status"] == "available"
    flash = rows[("vlmft.attention", "flash-attn-sm121")]
    assert flash["status"] == "unavailable" and flash["reason"]
    assert all(r["distribution"] == "vlmft" and r["version"] == __version__ for r in rows.values())


def test_profiles_list_and_show():
    result = runner.invoke(app, ["profiles", "list", "--json"])
    assert result.exit_code == 0
    assert {"gb10", "cpu", "h100-80gb"} <= {r["name"] for r in json.loads(result.stdout)}
    result = runner.invoke(app, ["profiles", "show", "gb10", "--stage", "2", "--json"])
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    by_key = {row["key"]: row for row in shown["settings"]}
    assert by_key["memory_cap_gb"]["value"] == 100 and by_key["memory_cap_gb"]["source"].startswith("profile gb10")
    assert by_key["learning_rate"]["value"] == 2e-5 and by_key["learning_rate"]["source"] == "stage 2 default"
    assert shown["gradient_accumulation_steps"] == 16
    human = runner.invoke(app, ["profiles", "show", "gb10"])
    assert human.exit_code == 0 and "memory_cap_gb" in human.output


def test_bad_profile_value_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "box.yaml"
    bad.write_text("hardware: {device: cuda, memory_gb: 8, unified_memory: false}\nstages:\n  1: {micro_batch_size: -3}\n")
    result = runner.invoke(app, ["profiles", "show", str(bad)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("Error: invalid setting micro_batch_size=-3 from profile box")
    assert str(bad) in result.output.replace("\n", "")


def test_debug_flag_shows_the_traceback():
    result = runner.invoke(app, ["--debug", "profiles", "show", "no-such-box"])
    assert result.exit_code == 2
    assert "Traceback" in result.output and "unknown profile 'no-such-box'" in result.output


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "vlmft_cli", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"vlmft {__version__}"
