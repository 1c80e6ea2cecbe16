"""The setting options of `vlmft train` and `vlmft ckpt resume`, generated from the settings model.

Checked against `Settings.model_fields` and the Click command Typer builds, not against the generator.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from vlmft_cli import runs
from vlmft_cli.cli.app import app
from vlmft_cli.cli.settings_options import with_setting_options
from vlmft_cli.settings import Settings, SettingsInput
from vlmft_cli.training.request import TrainResult

runner = CliRunner()
WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}

#: Flags that are not `--field-name`, and the short aliases, as the commands had them written by hand.
RENAMED = {"learning_rate": "--lr", "num_epochs": "--epochs", "quantization": "--quantize", "dataloader_workers": "--workers"}
SHORT = {"stage": "-s", "profile": "-p", "data": "-d", "model": "-m", "experiment": "-e", "out": "-o"}
TRAIN_OWN = {"config", "recipe", "init_from", "resume", "force_new_settings", "dry_run", "json", "nproc"}
RESUME_OWN = {"latest", "checkpoint", "experiment", "config", "dry_run", "force_new_settings", "json"}


def command(*path: str) -> Any:
    group = typer.main.get_command(app)
    for name in path:
        group = group.commands[name]
    return group


def plain(text: str) -> str:
    """Help output without colour codes, box characters and line wrapping."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_every_setting_has_exactly_one_option_with_its_description():
    params = command("train").params
    by_name = {p.name: p for p in params}
    assert len(by_name) == len(params)
    assert set(by_name) == set(Settings.model_fields) | TRAIN_OWN
    for name, info in Settings.model_fields.items():
        param = by_name[name]
        assert isinstance(param, typer.core.TyperOption), name
        assert param.help.startswith(info.description), name
        assert sum(info.description in (p.help or "") for p in params) == 1, name
        flag = RENAMED.get(name, "--" + name.replace("_", "-"))
        assert param.opts == [flag, SHORT[name]] if name in SHORT else param.opts == [flag], (name, param.opts)
        assert param.default is None and not param.required and not param.show_default, name
    flags = [opt for p in params for opt in (*p.opts, *p.secondary_opts)]
    assert len(flags) == len(set(flags))


def test_help_shows_the_descriptions_profiles_show_prints():
    shown = runner.invoke(app, ["profiles", "show", "cpu", "--json"])
    assert shown.exit_code == 0, shown.output
    descriptions = {row["key"]: row["description"] for row in json.loads(shown.stdout)["settings"]}
    helped = runner.invoke(app, ["train", "--help"], env=WIDE)
    assert helped.exit_code == 0, helped.output
    text = plain(helped.output)
    for key in ("learning_rate", "quantization", "pack", "max_frames", "gradient_checkpointing", "report_to"):
        assert descriptions[key] and descriptions[key] == Settings.model_fields[key].description
        assert " ".join(descriptions[key].split()) in text, key
    for panel in ("What to train", "Hyperparameters (defaults: the stage's reference recipe)", "Hardware (defaults: the profile)", "Checkpoints and evaluation"):
        assert panel in text


@pytest.fixture
def requests(monkeypatch):
    """`train()` replaced by a recorder: the CLI's part ends at the request."""
    seen: list[Any] = []

    def fake_train(request, reporter=None):
        seen.append(request)
        return TrainResult("finished", run_dir=Path("run"), global_step=3, message="finished stage 1 at step 3")

    monkeypatch.setattr("vlmft_cli.training.recipe.train", fake_train)
    return seen


def test_train_builds_the_request_from_the_flags_given(requests, tmp_path):
    args = ["train", "-s", "2", "-p", "cpu", "-d", str(tmp_path), "--lr", "1e-4", "--precision", "fp16", "--pack", "none", "--gradient-checkpointing", "off"]
    result = runner.invoke(app, [*args, "--lora-projections", "q_proj, v_proj", "--workers", "0", "--force-new-settings", "--resume", "latest"])
    assert result.exit_code == 0, result.output
    assert "finished stage 1 at step 3" in result.output
    [request] = requests
    settings = request.settings
    assert (settings.stage, settings.profile, settings.config_file) == (2, "cpu", None)
    assert dict(settings.flags) == {
        "data": tmp_path,
        "learning_rate": 1e-4,
        "precision": "fp16",
        "pack": "none",
        "gradient_checkpointing": "off",
        "lora_projections": ["q_proj", "v_proj"],
        "dataloader_workers": 0,
    }
    assert type(settings.flags["precision"]) is str and type(settings.flags["pack"]) is str  # the values, not the enums
    assert (request.resume, request.force_new_settings, request.dry_run, request.init_from) == ("latest", True, False, None)
    resolved = SettingsInput(stage=settings.stage, profile=settings.profile, flags=settings.flags, environ={}).resolve()
    assert resolved.settings.lora_projections == ["q_proj", "v_proj"] and resolved.sources["learning_rate"] == "command line"


def test_train_json_is_the_result_as_dict(requests):
    result = runner.invoke(app, ["train", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**TrainResult("finished", run_dir=Path("run"), global_step=3, message="finished stage 1 at step 3").as_dict(), "run": "run"}
    [request] = requests
    assert dict(request.settings.flags) == {} and request.settings.stage is None and request.settings.profile is None


@pytest.mark.parametrize(
    ("args", "accepted"),
    [
        (["--precision", "fp32"], True),
        (["--precision", "fp64"], False),
        (["--quantize", "4bit"], True),
        (["--quantize", "nf4"], False),
        (["--pack", "shared-prefix"], True),
        (["--pack", "packed"], False),
        (["--lr-scheduler", "constant_with_warmup"], True),
        (["--lr-scheduler", "step"], False),
        (["--frame-sampling", "last"], True),
        (["--frame-sampling", "first"], False),
        (["--report-to", "tensorboard"], True),
        (["--report-to", "wandb,mlflow"], True),
        (["--stage", "3"], False),
        (["--micro-batch-size", "0"], False),
    ],
)
def test_choices_are_accepted_or_rejected_by_the_cli(requests, args, accepted):
    result = runner.invoke(app, ["train", *args])
    if accepted:
        assert result.exit_code == 0, result.output
        assert requests and requests[0].settings.flags
    else:
        assert result.exit_code == 2 and not requests
        assert "Invalid value" in result.output


def test_resume_takes_the_setting_options_but_not_stage_and_experiment(requests, tmp_path):
    params = {p.name: p for p in command("ckpt", "resume").params}
    assert set(params) == set(Settings.model_fields) - {"stage", "experiment"} | RESUME_OWN
    assert params["experiment"].help.startswith("Only runs of this experiment name")
    assert "sha256 recorded in run.json" in params["data"].help
    assert runner.invoke(app, ["ckpt", "resume", "--latest", "--stage", "2"]).exit_code == 2

    result = runner.invoke(app, ["ckpt", "resume", "--latest", "-e", "stage1", "-o", str(tmp_path), "-d", "moved", "--max-steps", "9", "--dry-run", "--force-new-settings", "-p", "gb10"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["ckpt", "resume", str(tmp_path / "run" / "checkpoints" / "checkpoint-3"), "--json"])
    assert result.exit_code == 0, result.output
    latest, given = requests
    assert (latest.resume, latest.experiment, latest.dry_run, latest.force_new_settings) == ("latest", "stage1", True, True)
    assert latest.settings.profile == "gb10" and latest.settings.stage is None
    assert dict(latest.settings.flags) == {"out": tmp_path, "data": Path("moved"), "max_steps": 9}
    assert given.resume == str(tmp_path / "run" / "checkpoints" / "checkpoint-3") and not given.dry_run and dict(given.settings.flags) == {}


def test_resume_needs_latest_or_a_checkpoint(requests):
    for args in ([], ["--latest", "somewhere"]):
        result = runner.invoke(app, ["ckpt", "resume", *args])
        assert result.exit_code == 2 and "pass either --latest or a CHECKPOINT" in result.output
    assert not requests


# --- the decorator on its own ------------------------------------------------------------------------


def throwaway(exclude=frozenset({"stage"})):
    seen: dict[str, Any] = {}
    app = typer.Typer()

    @app.command()
    @with_setting_options(exclude=exclude)
    def run(name: Annotated[str, typer.Option("--name")] = "x", *, settings_flags: dict[str, Any]) -> None:
        seen.update(name=name, flags=settings_flags)

    return app, seen


def test_given_flags_land_in_settings_flags_with_their_types():
    app, seen = throwaway()
    args = ["--name", "y", "--lr", "1e-4", "--max-frames", "8", "--data", "d", "--quantize", "4bit", "--gradient-checkpointing", "off", "--lora-projections", "q_proj,,v_proj"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["name"] == "y"
    flags = seen["flags"]
    assert flags == {"learning_rate": 1e-4, "max_frames": 8, "data": Path("d"), "quantization": "4bit", "gradient_checkpointing": "off", "lora_projections": ["q_proj", "v_proj"]}
    assert [type(flags[k]) for k in ("learning_rate", "max_frames", "quantization", "gradient_checkpointing", "lora_projections")] == [float, int, str, str, list]
    assert isinstance(flags["data"], Path)


def test_absent_flags_are_not_in_settings_flags():
    app, seen = throwaway()
    result = runner.invoke(app, [])
    assert result.exit_code == 0, result.output
    assert seen == {"name": "x", "flags": {}}
    result = runner.invoke(app, ["--gradient-checkpointing", "auto"])
    assert result.exit_code == 0 and seen["flags"] == {"gradient_checkpointing": "auto"}


def test_excluded_settings_have_no_option():
    app, _ = throwaway(exclude={"stage", "learning_rate"})
    for args in (["--stage", "1"], ["--lr", "1e-4"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "No such option" in result.output


def test_the_decorator_refuses_clashes_and_commands_without_settings_flags():
    with pytest.raises(TypeError, match="--lr"):

        @with_setting_options()
        def clash(lr: Annotated[float, typer.Option("--lr")] = 1.0, *, settings_flags: dict[str, Any]) -> None: ...

    with pytest.raises(TypeError, match="settings_flags"):

        @with_setting_options()
        def missing(name: str = "x") -> None: ...

    with pytest.raises(ValueError, match="not settings"):
        with_setting_options(exclude={"no_such_setting"})


# --- through the real recipe -------------------------------------------------------------------------


def test_a_dry_run_resolves_the_flags_given(processed_data, vlmft_home, tmp_path, monkeypatch):
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))
    args = ["train", "-s", "1", "-d", str(processed_data), "-o", str(tmp_path), "-p", "cpu", "--dry-run", "--json"]
    result = runner.invoke(app, [*args, "--pack", "none", "--lora-projections", "q_proj,v_proj", "--workers", "0", "--global-batch-size", "4"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["status"] == "dry-run"
    rows = {row["key"]: row for row in answer["plan"]["settings"]}
    assert rows["pack"]["value"] == "none" and rows["pack"]["source"] == "command line"
    assert rows["lora_projections"]["value"] == ["q_proj", "v_proj"] and rows["dataloader_workers"]["value"] == 0
    assert rows["learning_rate"]["source"] == "stage 1 default" and rows["precision"]["source"].startswith("profile cpu")
    assert not list(tmp_path.iterdir())  # a dry run writes no run


def test_resume_flags_are_reconciled_with_the_run(processed_data, vlmft_home, tmp_path, monkeypatch):
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))
    out = tmp_path / "experiments"
    args = ["train", "-d", str(processed_data), "-o", str(out), "--max-steps", "2", "--save-steps", "1", "--global-batch-size", "4", "--workers", "0", "--pack", "none", "--json"]
    trained = runner.invoke(app, args)
    assert trained.exit_code == 0, trained.output
    run = runs.Run(Path(json.loads(trained.stdout)["run"]))
    shutil.rmtree(next(c.path for c in run.checkpoints() if c.step == 2))  # as if killed after step 1
    run.update_record(status="interrupted", stop_reason="received SIGTERM", global_step=1)

    planned = runner.invoke(app, ["ckpt", "resume", "--latest", "-o", str(out), "--dry-run", "--json", "--max-steps", "3", "--pack", "none"])
    assert planned.exit_code == 0, planned.output
    answer = json.loads(planned.stdout)
    assert answer["status"] == "dry-run" and answer["plan"]["resume"] == ["resume applies max_steps 2 → 3 (command line)"]

    refused = runner.invoke(app, ["ckpt", "resume", "--latest", "-o", str(out), "--dry-run", "--lr", "1e-3", "--precision", "fp16"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "would train a different run" in refused.output and "learning_rate" in refused.output and "precision" in refused.output
