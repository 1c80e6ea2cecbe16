from pathlib import Path

import pytest

from vlmft_cli.errors import ConfigError
from vlmft_cli.settings import STAGE_DEFAULTS, resolve_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_stage_defaults_are_the_reference_recipe():
    one = resolve_settings(stage=1, environ={}).settings
    two = resolve_settings(stage=2, environ={}).settings
    assert (one.learning_rate, one.max_frames, one.max_length) == (4e-5, 4, 2048)
    assert (two.learning_rate, two.max_frames, two.max_length) == (2e-5, 10, 4096)
    for settings in (one, two):
        assert (settings.lora_r, settings.lora_alpha, settings.lora_dropout) == (128, 256, 0.05)
        assert (settings.weight_decay, settings.warmup_ratio, settings.max_grad_norm) == (0.01, 0.03, 1.0)
        assert settings.global_batch_size == 32 and settings.lr_scheduler == "cosine"
    assert STAGE_DEFAULTS[1]["learning_rate"] == 4e-5


def test_each_layer_overrides_the_one_below(tmp_path):
    config = write(tmp_path / "c.yaml", "learning_rate: 1.0e-4\nmicro_batch_size: 4\nlora_r: 8\n")
    resolved = resolve_settings(
        stage=1,
        profile="gb10",
        config_file=config,
        environ={"VLMFT_LORA_R": "16", "VLMFT_LORA_ALPHA": "32"},
        cli={"lora_alpha": 64},
    )
    s, src = resolved.settings, resolved.sources
    assert s.max_frames == 4 and src["max_frames"] == "stage 1 default"
    assert s.memory_cap_gb == 100 and src["memory_cap_gb"].startswith("profile gb10")
    assert s.micro_batch_size == 4 and src["micro_batch_size"] == f"config file {config}"
    assert s.learning_rate == 1e-4
    assert s.lora_r == 16 and src["lora_r"] == "environment"
    assert s.lora_alpha == 64 and src["lora_alpha"] == "command line"
    assert "weight_decay" not in src  # field default: `described()` reports it as "default"


def test_gradient_accumulation_keeps_the_global_batch():
    s = resolve_settings(stage=1, profile="gb10", environ={}).settings
    assert s.gradient_accumulation_steps() == 16
    assert s.gradient_accumulation_steps(world_size=4) == 4
    with pytest.raises(ConfigError, match="not a multiple"):
        s.gradient_accumulation_steps(world_size=3)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"cli": {"learning_rate": -1}}, r"learning_rate=-1 from command line"),
        ({"environ": {"VLMFT_MICRO_BATCH_SIZE": "two"}}, r"micro_batch_size='two' from environment"),
        ({"cli": {"precision": "fp8"}}, r"precision='fp8' from command line"),
    ],
)
def test_invalid_values_name_key_and_source(kwargs, expected):
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError, match=expected):
        resolve_settings(stage=1, **kwargs)


def test_invalid_config_file_value_names_the_file(tmp_path):
    config = write(tmp_path / "bad.yaml", "warmup_ratio: 3\n")
    with pytest.raises(ConfigError, match=rf"warmup_ratio=3 from config file {config}"):
        resolve_settings(stage=1, config_file=config, environ={})


def test_unknown_key_and_broken_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'learning_rat'"):
        resolve_settings(config_file=write(tmp_path / "a.yaml", "learning_rat: 1\n"), environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_settings(config_file=write(tmp_path / "b.yaml", "a: [1,\n"), environ={})
    with pytest.raises(ConfigError, match="must hold a mapping"):
        resolve_settings(config_file=write(tmp_path / "c.yaml", "- 1\n"), environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_settings(config_file=tmp_path / "missing.yaml", environ={})


def test_stage_and_profile_follow_the_same_precedence(tmp_path):
    config = write(tmp_path / "c.yaml", "stage: 2\nprofile: h100-80gb\n")
    resolved = resolve_settings(config_file=config, environ={"VLMFT_PROFILE": "a100-40gb"})
    assert resolved.settings.stage == 2 and resolved.sources["stage"] == f"config file {config}"
    assert resolved.profile.name == "a100-40gb" and resolved.sources["profile"] == "environment"
    assert resolved.settings.micro_batch_size == 1  # a100-40gb, stage 2
    assert resolve_settings(stage=1, config_file=config, environ={}).settings.stage == 1


def test_mutually_exclusive_cadence():
    with pytest.raises(ConfigError, match="save_steps or save_every_hours"):
        resolve_settings(cli={"save_steps": 10, "save_every_hours": 2.0}, environ={})


def test_home_comes_from_the_environment(tmp_path):
    assert resolve_settings(environ={"VLMFT_HOME": str(tmp_path)}).settings.home == tmp_path


def test_list_values_from_environment_as_json():
    s = resolve_settings(environ={"VLMFT_LORA_PROJECTIONS": '["q_proj","v_proj"]'}).settings
    assert s.lora_projections == ["q_proj", "v_proj"]
