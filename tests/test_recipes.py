"""Recipes: every shipped one resolves with every profile, sits in the precedence where documented, and
`vlmft recipes` lists, shows and copies them."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from vlmft_cli.cli.app import app
from vlmft_cli.errors import ConfigError
from vlmft_cli.paths import user_recipes_dir
from vlmft_cli.profiles import available_profiles
from vlmft_cli.recipes import available_recipes, copy_recipe, load_recipe
from vlmft_cli.settings import SettingsInput, resolve_settings
from vlmft_cli.training.request import TrainRequest

SHIPPED = {"stage1", "stage2", "stage2_only"}

# The reference run's hyperparameters as ../shared/ROBOVQA.md states them.
REFERENCE = {
    1: {"learning_rate": 4e-5, "max_frames": 4, "max_length": 2048},
    2: {"learning_rate": 2e-5, "max_frames": 10, "max_length": 4096},
}
BOTH_STAGES = {"lora_r": 128, "lora_alpha": 256, "lora_dropout": 0.05, "weight_decay": 0.01, "warmup_ratio": 0.03, "max_grad_norm": 1.0, "global_batch_size": 32, "num_epochs": 1.0}
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_the_shipped_recipes_are_found():
    assert set(available_recipes()) >= SHIPPED


@pytest.mark.parametrize("profile", sorted(available_profiles()))
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_recipe_resolves_with_every_profile(name, profile):
    resolved = resolve_settings(profile=profile, recipe=name, environ={})
    settings, stage = resolved.settings, resolved.settings.stage
    for key, value in {**REFERENCE[stage], **BOTH_STAGES}.items():
        assert getattr(settings, key) == pytest.approx(value), key
    assert settings.lora_projections == PROJECTIONS
    assert resolved.sources["learning_rate"] == f"recipe {name} (vlmft_recipes/{name}.yaml)"
    # hardware keys stay the profile's
    assert resolved.sources["micro_batch_size"].startswith(f"profile {profile} ")


def test_stage2_only_is_the_ablation():
    recipe = load_recipe("stage2_only")
    assert recipe.init_from == "none"
    assert resolve_settings(recipe="stage2_only", environ={}).settings.subset_ratio == 0.1
    assert load_recipe("stage2").init_from is None


def test_a_recipe_sits_above_the_profile_and_below_config_env_and_flags(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("stage: 2\nlearning_rate: 1.0e-4\nmicro_batch_size: 8\nlora_r: 16\nseed: 7\n")
    config = tmp_path / "config.yaml"
    config.write_text("lora_r: 32\n")
    resolved = resolve_settings(profile="gb10", recipe=str(path), config_file=config, environ={"VLMFT_SEED": "9"}, cli={"learning_rate": 3e-4})
    s = resolved.settings
    assert (s.stage, s.micro_batch_size, s.lora_r, s.seed, s.learning_rate) == (2, 8, 32, 9, 3e-4)
    assert resolved.sources["micro_batch_size"] == f"recipe mine ({path})"  # over the profile's 2
    assert resolved.sources["lora_r"] == f"config file {config}"


def test_a_user_recipe_replaces_a_shipped_one_of_its_name():
    folder = user_recipes_dir()
    folder.mkdir(parents=True)
    (folder / "stage1.yaml").write_text("description: mine\nstage: 1\nlearning_rate: 1.0e-3\n")
    assert resolve_settings(recipe="stage1", environ={}).settings.learning_rate == 1e-3


def test_bad_recipes_are_one_line_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'stage3'"):
        load_recipe("stage3")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: [1\n")
    with pytest.raises(ConfigError, match=f"recipe {bad} is not valid YAML: line"):
        load_recipe(str(bad))
    bad.write_text("learnin_rate: 1.0e-4\n")
    with pytest.raises(ConfigError, match=rf"unknown setting 'learnin_rate' in recipe bad \({bad}\).*did you mean 'learning_rate'"):
        resolve_settings(recipe=str(bad), environ={})


def test_the_recipe_gives_stage2_its_starting_point_unless_init_from_is_given():
    assert TrainRequest(settings=SettingsInput(recipe="stage2_only")).starting_point() == "none"
    assert TrainRequest(settings=SettingsInput(recipe="stage2_only"), init_from="run_x").starting_point() == "run_x"
    assert TrainRequest(settings=SettingsInput(recipe="stage2")).starting_point() is None


def test_recipes_cp_copies_the_file_and_keeps_an_existing_one(tmp_path):
    target = copy_recipe("stage1", tmp_path)
    assert target == tmp_path / "stage1.yaml"
    assert target.read_text() == load_recipe("stage1").text  # comments included
    assert yaml.safe_load(target.read_text())["learning_rate"] == 4e-5
    target.write_text("stage: 1\n")
    with pytest.raises(ConfigError, match="exists; pass --force"):
        copy_recipe("stage1", target)
    copy_recipe("stage1", target, force=True)
    assert target.read_text() == load_recipe("stage1").text


def test_recipes_commands(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["recipes", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {row["name"]: row["stage"] for row in yaml.safe_load(listed.output)}.items() >= {"stage1": 1, "stage2": 2, "stage2_only": 2}.items()
    shown = runner.invoke(app, ["recipes", "show", "stage2", "--profile", "gb10", "--json"])
    values = {row["key"]: row["value"] for row in yaml.safe_load(shown.output)["settings"]}
    assert (float(values["learning_rate"]), int(values["max_frames"]), float(values["memory_cap_gb"])) == (2e-5, 10, 100)
    copied = runner.invoke(app, ["recipes", "cp", "stage2", str(tmp_path / "s2.yaml")])
    assert copied.exit_code == 0 and (tmp_path / "s2.yaml").read_text() == load_recipe("stage2").text
    again = runner.invoke(app, ["recipes", "cp", "stage2", str(tmp_path / "s2.yaml")])
    assert again.exit_code == 2 and "exists; pass --force" in again.output
