"""Issue 12: every error a user can cause is ONE line on stderr and exit code 2, in every command.

The walk enumerates the real command tree (`typer.main.get_command`), so a new command or option is
covered without being listed here: an unknown option, and a bad value for every option that parses one
(a word for a number, a number outside its range, a value outside its choices). Then each command gets
bad inputs that reach its body (missing and nonexistent paths, values the settings refuse), and the cases
of issue 12 are checked through the CLI: settings, the environment, plugins, offline sources, and what an
unexpected error looks like. Nothing here trains or loads a model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from vlmft_cli.cli.app import app
from vlmft_cli.errors import DataError

runner = CliRunner()

#: Every command a user can run (groups only where they run something themselves: `eval`).
EXPECTED_COMMANDS = {
    "train", "report", "eval", "eval compare", "plugins list", "profiles list", "profiles show",
    "data download", "data inspect", "data synth", "data extract", "data verify", "data import",
    "ckpt list", "ckpt verify", "ckpt merge", "ckpt export", "ckpt prune", "ckpt resume",
    "bench extract", "bench packing", "bench attention", "bench step", "bench data", "bench compare", "bench startup",
    "env", "chat", "recipes list", "recipes show", "recipes cp",
}  # fmt: skip


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if hasattr(command, "commands"):
        if path and getattr(command, "invoke_without_command", False):
            yield path, command
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))
    else:
        yield path, command


COMMANDS = dict(_walk(typer.main.get_command(app)))
PATHS = sorted(" ".join(path) for path in COMMANDS)


def error_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def check_one_error_line(result: Any, args: list[str], *expected: str) -> str:
    """For commands that report progress on stderr first: exactly one `Error:` line, the last, exit 2."""
    lines = error_lines(result)
    shown = f"vlmft {' '.join(map(str, args))}\n--- stderr:\n{result.stderr}"
    errors = [line for line in lines if line.startswith("Error: ")]
    assert result.exit_code == 2 and len(errors) == 1 and lines[-1] == errors[0], shown
    assert "Traceback" not in result.output, shown
    for text in expected:
        assert text in errors[0], (text, shown)
    return errors[0]


def check_one_line(result: Any, args: list[str], *expected: str, code: int = 2) -> str:
    """Exit `code`, exactly one line on stderr, `Error: …`, no traceback; returns the line."""
    lines = error_lines(result)
    shown = f"vlmft {' '.join(map(str, args))}\n--- stderr:\n{result.stderr}--- stdout:\n{result.stdout}"
    assert result.exit_code == code, shown
    assert len(lines) == 1 and lines[0].startswith("Error: "), shown
    assert "Traceback" not in result.output, shown
    for text in expected:
        assert text in lines[0], (text, shown)
    return lines[0]


def invoke(args: list[Any], **kwargs: Any) -> Any:
    return runner.invoke(app, [str(arg) for arg in args], **kwargs)


def test_the_walk_finds_every_command():
    assert set(PATHS) == EXPECTED_COMMANDS


# --- the walk: parsing errors of every option -------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_an_unknown_option_is_one_line(path):
    args = [*path.split(), "--no-such-option"]
    check_one_line(invoke(args), args, "No such option: --no-such-option", f"see 'vlmft {path} --help'")


def _bad_values(option: Any) -> list[str]:
    """Values the option cannot take, from what it declares: a word for a number, a number past its
    range, a word outside its choices."""
    if getattr(option, "is_flag", False) or not getattr(option, "opts", None) or not option.opts[0].startswith("--"):
        return []
    descriptor = getattr(option, "type_descriptor", None)
    kind = option.bare_type() if hasattr(option, "bare_type") else type(getattr(option, "type", None)).__name__
    if descriptor is not None and descriptor.is_choice:
        return ["not-a-choice"]
    if kind not in ("int", "float"):
        return []
    low, high = getattr(option, "min", None), getattr(option, "max", None)
    step = 1 if kind == "int" else 0.5
    if low is not None:
        return ["many", str(low - step)]
    return ["many", str(high + step)] if high is not None else ["many"]


BAD_OPTION_VALUES = [
    (path, option.opts[0], value)
    for path, command in sorted(COMMANDS.items())
    for option in command.params
    for value in _bad_values(option)
]


def test_the_walk_has_options_of_every_kind():
    options = {(path, option) for path, option, _ in BAD_OPTION_VALUES}
    assert len(options) > 60 and len(BAD_OPTION_VALUES) > 120
    assert (("train",), "--pack") in options and (("train",), "--lr") in options and (("bench", "attention"), "--batch") in options


@pytest.mark.slow  # some 170 invocations of the real commands' parsers
def test_a_bad_value_of_any_option_is_one_line():
    failures = []
    for path, flag, value in BAD_OPTION_VALUES:
        args = [*path, flag, value]
        result = invoke(args)
        lines = error_lines(result)
        if result.exit_code != 2 or len(lines) != 1 or not lines[0].startswith("Error: ") or flag not in lines[0]:
            failures.append(f"vlmft {' '.join(args)} → exit {result.exit_code}: {result.stderr!r}")
    assert not failures, "\n".join(failures)


# --- the walk: bad inputs that reach each command's body --------------------------------------------------

Case = Callable[[Path], list[Any]]

BAD_INPUTS: dict[str, list[tuple[Case, str]]] = {
    "train": [
        (lambda t: ["train", "--config", t / "missing.yaml"], "config file not found"),
        (lambda t: ["train", "--profile", "no-such-box"], "unknown profile 'no-such-box'"),
        (lambda t: ["train", "--epochs", "inf"], "num_epochs=inf from command line"),
        (lambda t: ["train", "--resume", t / "missing"], "no run"),
        (lambda t: ["train", "--data", t, "--model", "no-such-model"], "no model backend recognises 'no-such-model'"),
        (lambda t: ["train", "--recipe", "stage3"], "unknown recipe 'stage3'"),
        (lambda t: ["train", "--data", t, "--report-to", "wandb"], "report_to wandb: the wandb package is not installed here"),
        (lambda t: ["train", "--data", t, "--report-to", "tensorbord"], "did you mean 'tensorboard'"),
    ],
    "env": [(lambda t: ["env", "--bogus"], "No such option")],
    "chat": [
        (lambda t: ["chat", "--checkpoint", "none", "--video", t / "missing.mp4", "-q", "hi"], "missing.mp4: no such file or folder"),
        (lambda t: ["chat", "--checkpoint", t / "missing", "--video", t, "-q", "hi"], "no run"),
        (lambda t: ["chat", "--video", t], "stdin is not a terminal"),
    ],
    "recipes list": [(lambda t: ["recipes", "list", "extra"], "unexpected extra argument")],
    "recipes show": [(lambda t: ["recipes", "show", "stage3"], "unknown recipe 'stage3'")],
    "recipes cp": [(lambda t: ["recipes", "cp", "stage1", t / "missing" / "x.yaml"], "does not exist")],
    "ckpt resume": [
        (lambda t: ["ckpt", "resume", "--latest", "--out", t], "nothing to resume"),
        (lambda t: ["ckpt", "resume", t / "missing"], "no run"),
        (lambda t: ["ckpt", "resume", "--latest", "--out", t, "--lr", "nan"], ""),
    ],
    "report": [(lambda t: ["report", "nothing-here", "--runs-dir", t], "no run 'nothing-here'")],
    "eval": [
        (lambda t: ["eval", "--checkpoint", t / "missing"], "no run"),
        (lambda t: ["eval", "--checkpoint", "latest", "--runs-dir", t], "no complete checkpoint"),
        (lambda t: ["eval", "--profile", "no-such-box", "--data", t], "unknown profile"),
    ],
    "eval compare": [(lambda t: ["eval", "compare", t / "missing"], "no run")],
    "plugins list": [(lambda t: ["plugins", "list", "--json", "extra"], "unexpected extra argument")],
    "profiles list": [(lambda t: ["profiles", "list", "--bogus"], "No such option")],
    "profiles show": [
        (lambda t: ["profiles", "show", "no-such-box"], "unknown profile 'no-such-box'"),
        (lambda t: ["profiles", "show", "cpu", "--config", t / "missing.yaml"], "config file not found"),
        (lambda t: ["profiles", "show", t / "missing.yaml"], "profile file not found"),
    ],
    "data download": [(lambda t: ["data", "download", "--dest", t / "d", "--source", t / "missing"], "does not exist")],
    "data inspect": [(lambda t: ["data", "inspect", t / "missing"], "does not exist")],
    "data synth": [(lambda t: ["data", "synth", "--out", "/dev/null/x", "--videos", 1], "/dev/null")],
    "data extract": [(lambda t: ["data", "extract", "--source", t / "missing", "--out", t / "out"], "no shards under")],
    "data verify": [(lambda t: ["data", "verify"], "Missing argument")],
    "data import": [
        (lambda t: ["data", "import", "-f", "sharegpt", t / "missing.jsonl", "--out", t / "o"], "missing.jsonl is not a file"),
        (lambda t: ["data", "import", "-f", "llamafactory", t, "--out", t / "o"], "needs --dataset NAME"),
    ],
    "ckpt list": [(lambda t: ["ckpt", "list", "--out"], "requires an argument")],
    "ckpt verify": [(lambda t: ["ckpt", "verify", t / "missing"], "no run")],
    "ckpt merge": [(lambda t: ["ckpt", "merge", t / "missing", "--out", t / "merged"], "no run")],
    "ckpt export": [(lambda t: ["ckpt", "export", t / "missing", "--out", t / "exported"], "no run")],
    "ckpt prune": [(lambda t: ["ckpt", "prune", "--keep", 1, "--out", t / "missing"], "no runs under")],
    "bench extract": [(lambda t: ["bench", "extract", "--source", t / "missing"], "no shards under")],
    "bench packing": [(lambda t: ["bench", "packing", "--data", t / "missing"], "not found")],
    "bench attention": [(lambda t: ["bench", "attention", "--seq-lens", "abc"], "--seq-lens takes comma-separated integers")],
    "bench step": [(lambda t: ["bench", "step", "--profile", "no-such-box"], "unknown profile")],
    "bench data": [(lambda t: ["bench", "data", "--data", t / "missing"], "not found")],
    "bench startup": [(lambda t: ["bench", "startup", "--lines", "2"], "--lines must name line counts of at least 4")],
    "bench compare": [(lambda t: ["bench", "compare", t / "a.json", t / "b.json"], "benchmark file not found")],
}


def test_every_command_has_bad_inputs():
    assert set(BAD_INPUTS) == set(PATHS)


@pytest.mark.slow  # the data and bench cases import TensorFlow and build the tiny model once
@pytest.mark.parametrize(("path", "index"), [(path, i) for path, cases in sorted(BAD_INPUTS.items()) for i in range(len(cases))])
def test_bad_inputs_of_every_command_are_one_line(tmp_path, vlmft_home, monkeypatch, path, index):
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))
    monkeypatch.chdir(tmp_path)  # the default experiments folder is empty here
    case, expected = BAD_INPUTS[path][index]
    args = case(tmp_path)
    check_one_line(invoke(args), args, expected)


# --- 1. settings the model refuses, through the CLI --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "config", "expected"),
    [
        (["--epochs", "inf"], {}, None, "num_epochs=inf from command line: Input should be a finite number"),
        (["--save-every-hours", "inf"], {}, None, "save_every_hours=inf from command line"),
        (["--lr", "inf"], {}, None, "Invalid value for '--lr'"),
        ([], {"VLMFT_LEARNING_RATE": "inf"}, None, "from environment (VLMFT_LEARNING_RATE): Input should be a finite number"),
        ([], {}, "num_epochs: .inf\n", "num_epochs=inf from config file"),
        ([], {}, "save_every_hours: .inf\n", "save_every_hours=inf from config file"),
        ([], {}, "seed: 1.0e+20\n", "invalid setting seed="),
        ([], {}, "lora_pattern: '('\n", "lora_pattern='(' from config file"),
        ([], {}, "lora_rank: 16\n", "in vlmft, lora_r"),
        ([], {}, "learning_rate: 1.0e-4\nmax_frames: [4,\n", "not valid YAML: line 3"),
    ],
)
def test_settings_the_model_refuses_are_one_line_before_anything_runs(tmp_path, monkeypatch, args, env, config, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if config is not None:
        (tmp_path / "c.yaml").write_text(config)
        args = [*args, "--config", tmp_path / "c.yaml"]
    args = ["train", "--data", tmp_path, "--dry-run", *args]
    check_one_line(invoke(args), args, expected)


# --- 2. folder settings that cannot be folders ------------------------------------------------------------


def test_out_that_is_not_a_folder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMFT_OUT", "/dev/null")
    args = ["train", "--data", tmp_path, "--dry-run"]
    check_one_line(invoke(args), args, "out='/dev/null' from environment (VLMFT_OUT)", "not a folder")
    check_one_line(invoke(["ckpt", "list"]), ["ckpt", "list"], "VLMFT_OUT")


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_home_where_no_folder_can_be_made_is_one_line_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMFT_HOME", "/proc/x")
    args = ["train", "--data", tmp_path, "--dry-run"]  # the tiny model is built under home first
    check_one_line(invoke(args), args, "/proc/x", "(VLMFT_HOME=/proc/x)")


def test_an_os_error_anywhere_is_one_line_with_its_path(monkeypatch):
    def denied():
        raise PermissionError(13, "Permission denied", "/srv/shared/profiles")

    monkeypatch.setattr("vlmft_cli.profiles.available_profiles", denied)
    line = check_one_line(invoke(["profiles", "list"]), ["profiles", "list"])
    assert line == "Error: cannot use /srv/shared/profiles: Permission denied"


# --- 3. names that are not settings, through the CLI ----------------------------------------------------------


def test_a_misspelt_variable_is_one_warning_naming_the_setting(monkeypatch):
    monkeypatch.setenv("VLMFT_LR", "1e-4")
    result = invoke(["profiles", "show", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert error_lines(result) == ["Warning: VLMFT_LR is not a vlmft setting and is ignored; did you mean VLMFT_LEARNING_RATE?"]


def test_a_warning_shows_once_per_command_however_often_it_is_issued(monkeypatch):
    """Commands resolve settings more than once (eval: the defaults, then the target)."""
    from vlmft_cli.cli.app import VlmftGroup
    from vlmft_cli.settings import resolve_settings

    root = typer.Typer(cls=VlmftGroup)

    @root.callback()
    def main() -> None:
        pass

    @root.command()
    def twice() -> None:
        resolve_settings()
        resolve_settings()

    monkeypatch.setenv("VLMFT_EPOCHS", "2")
    for _ in range(2):  # and again in the next command of the same process
        result = runner.invoke(root, ["twice"])
        assert result.exit_code == 0, result.output
        assert error_lines(result) == ["Warning: VLMFT_EPOCHS is not a vlmft setting and is ignored; did you mean VLMFT_NUM_EPOCHS?"]


# --- 4. VLMFT_LOAD_PLUGINS -------------------------------------------------------------------------------------


def test_load_plugins_keeps_the_profiles_and_warns_about_unknown_names(monkeypatch):
    monkeypatch.setenv("VLMFT_LOAD_PLUGINS", "qwen3_vl")
    result = invoke(["profiles", "show", "cpu", "--json"])
    assert result.exit_code == 0 and not error_lines(result), result.output
    monkeypatch.setenv("VLMFT_LOAD_PLUGINS", "qwen3-vl")
    result = invoke(["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert error_lines(result) and all(line.startswith("Warning: VLMFT_LOAD_PLUGINS names 'qwen3-vl'") for line in error_lines(result))
    assert "did you mean 'qwen3_vl'?" in error_lines(result)[0] and len(error_lines(result)) == 1


# --- 5. hub ids that can be had neither from the cache nor from the hub ------------------------------------


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from vlmft_cli import model_backend

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(model_backend, "_probed", {}, raising=False)


@pytest.mark.parametrize("model", ["OpenGVLab/InternVL3-8B-hf", "Qwen/Qwen3-VL-8B-Instruct"])
def test_train_with_an_uncached_hub_model_offline_is_one_line_in_seconds(empty_hub_cache, tmp_path, monkeypatch, model):
    monkeypatch.setenv("VLMFT_HOME", str(tmp_path / "home"))
    args = ["train", "--data", tmp_path, "--dry-run", "--model", model]
    started = time.monotonic()
    result = invoke(args)
    assert time.monotonic() - started < 15
    check_one_line(result, args, f"model {model} is not in the Hugging Face cache", "HF_HUB_OFFLINE", "--model DIR", "HF_HOME")


def test_train_with_the_hub_unreachable_is_one_line(empty_hub_cache, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from vlmft_cli import model_backend

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(model_backend, "hub_unreachable", lambda timeout_s=5.0: "https://huggingface.co did not answer within 5 s", raising=False)
    args = ["train", "--data", tmp_path, "--dry-run", "--model", "OpenGVLab/InternVL3-8B-hf"]
    check_one_line(invoke(args), args, "not in the Hugging Face cache", "did not answer within 5 s")


@pytest.mark.slow  # the eval data (the session's processed set)
def test_eval_with_an_uncached_model_or_another_familys_backend_is_one_line(empty_hub_cache, processed_data, tmp_path, monkeypatch):
    monkeypatch.setenv("VLMFT_HOME", str(tmp_path / "home"))
    args = ["eval", "--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--data", processed_data, "--limit", 1, "--out", tmp_path / "e1"]
    check_one_error_line(invoke(args), args, "model Qwen/Qwen2.5-VL-7B-Instruct is not in the Hugging Face cache")
    args = ["eval", "--model", "tiny-internvl3", "--backend", "qwen3_vl", "--data", processed_data, "--limit", 1, "--out", tmp_path / "e2"]
    check_one_error_line(invoke(args), args, "model 'tiny-internvl3' belongs to the internvl3 backend, not to --backend qwen3_vl")


# --- 6. the RoboVQA bucket offline ---------------------------------------------------------------------------


@pytest.fixture
def offline_bucket(monkeypatch):
    """TensorFlow's gs:// file system as it behaves without a network: `isdir` says False, metadata
    calls raise FailedPreconditionError (what it raised here with no DNS), nothing reaches a network."""
    from vlmft_cli.data.records import tensorflow

    tf = tensorflow()
    message = "Error executing an HTTP request: libcurl code 6 meaning 'Could not resolve hostname', error details: Could not resolve host: www.googleapis.com"

    def unreachable(path, *args, **kwargs):
        if str(path).startswith("gs://"):
            raise tf.errors.FailedPreconditionError(None, None, f"{message}\n\t when reading metadata of {path}")
        raise AssertionError(f"unexpected local call for {path}")

    monkeypatch.setattr(tf.io.gfile, "exists", unreachable)
    monkeypatch.setattr(tf.io.gfile, "stat", unreachable)
    monkeypatch.setattr(tf.io.gfile, "listdir", unreachable)
    monkeypatch.setattr(tf.io.gfile, "isdir", lambda path: False)
    return "gs://anon_robovqa/tfrecord"


@pytest.mark.slow  # imports TensorFlow
def test_inspect_and_download_offline_name_the_network(offline_bucket, tmp_path):
    from vlmft_cli.data.download import DownloadOptions, download
    from vlmft_cli.data.inspect import inspect_source

    for attempt in (lambda: inspect_source(offline_bucket), lambda: download(DownloadOptions(dest=tmp_path / "copy", source=offline_bucket))):
        with pytest.raises(DataError) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith(f"cannot reach {offline_bucket}: no network connection") and "Could not resolve host" in message
        assert "no shards" not in message and "\n" not in message
    for args in (["data", "inspect", offline_bucket], ["data", "download", "--dest", tmp_path / "copy"]):
        check_one_line(invoke(args), args, f"cannot reach {offline_bucket}: no network connection")


# --- 7. what is not the user's fault ----------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_exit_1_and_the_traceback_is_behind_debug(monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr("vlmft_cli.profiles.available_profiles", broken)
    line = check_one_line(invoke(["profiles", "list"]), ["profiles", "list"], code=1)
    assert line.startswith("Error: unexpected RuntimeError: boom") and "--debug" in line
    debugged = invoke(["--debug", "profiles", "list"])
    assert debugged.exit_code == 1 and isinstance(debugged.exception, RuntimeError)


def test_a_user_error_does_not_offer_the_traceback():
    line = check_one_line(invoke(["profiles", "show", "no-such-box"]), ["profiles", "show", "no-such-box"])
    assert "--debug" not in line and "VLMFT_DEBUG" not in line


def test_an_error_message_is_printed_as_written_never_as_markup(monkeypatch):
    from vlmft_cli.errors import ConfigError

    def odd():
        raise ConfigError("value [bold]x[/bold] in [1, 2]\nsecond line", hint="try [red]this[/]")

    monkeypatch.setattr("vlmft_cli.profiles.available_profiles", odd)
    line = check_one_line(invoke(["profiles", "list"]), ["profiles", "list"])
    assert line == "Error: value [bold]x[/bold] in [1, 2] second line — try [red]this[/]"


def test_usage_errors_of_the_root_and_of_groups_are_one_line():
    for args, expected in ((["--bogus"], "No such option: --bogus"), (["nosuch"], "No such command 'nosuch'"), (["data", "nosuch"], "No such command 'nosuch'")):
        check_one_line(invoke(args), args, expected)


def test_the_help_says_how_to_see_a_traceback():
    result = invoke(["--help"], env={"COLUMNS": "250"})
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 0 and "--debug" in text and "VLMFT_DEBUG=1" in text
    assert "an error is one line: exit code 2 for one you can fix, 1 for an unexpected one" in text


@pytest.mark.slow  # two fresh processes (Python, TensorFlow and torch imports)
def test_in_a_real_process_the_error_is_the_only_line_on_stderr(tmp_path):
    """No library chatter around the line either: TensorFlow's load-time lines, a hub lookup's retries."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "VLMFT_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    for args, expected in (
        (["data", "extract", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "out")], "Error: no shards under"),
        (["train", "--data", str(tmp_path), "--dry-run", "--model", "OpenGVLab/InternVL3-8B-hf"], "Error: model OpenGVLab/InternVL3-8B-hf is not in the Hugging Face cache"),
    ):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "vlmft_cli", *args], capture_output=True, text=True, env=env, timeout=300)
        assert time.monotonic() - started < 60  # loosely: seconds of imports, not a minute of hub retries
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(expected), done.stderr
