"""Fuzzing the settings resolver, both ways.

Valid generated settings (from a hand-written table of what each key accepts, not from the settings model)
must resolve, to exactly the values given and with the layer they were given in as their source, later
layers winning. Invalid ones, and arbitrary files and environments, must fail with nothing but a
`ConfigError` whose message is one line and names the offending key (and, for a setting, its source).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vlmft_cli.errors import ConfigError
from vlmft_cli.settings import resolve_settings

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def floats(low: float, high: float, **kwargs: Any) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, **kwargs)


NAME = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=12)
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

#: What each key accepts, written out from the documented settings (README, `vlmft profiles show`).
VALID: dict[str, st.SearchStrategy[Any]] = {
    "out": NAME,
    "data": NAME | st.none(),
    "model": NAME,
    "experiment": NAME | st.none(),
    "seed": st.integers(0, 2**31),
    "precision": st.sampled_from(["bf16", "fp16", "fp32"]),
    "attention": st.sampled_from(["sdpa", "eager"]),
    "quantization": st.sampled_from(["none", "4bit", "8bit"]),
    "gradient_checkpointing": st.sampled_from(["auto", "on", "off"]) | st.booleans(),  # true/false: older configs
    "memory_cap_gb": floats(0.5, 512) | st.none(),
    "micro_batch_size": st.integers(1, 64),
    "eval_batch_size": st.integers(1, 64),
    "dataloader_workers": st.integers(0, 32),
    "global_batch_size": st.integers(1, 4096),
    "learning_rate": floats(1e-9, 1.0),
    "num_epochs": floats(0.01, 100),
    "max_steps": st.integers(1, 10**6) | st.none(),
    "weight_decay": floats(0, 1),
    "adam_beta1": floats(0.001, 0.999),
    "adam_beta2": floats(0.001, 0.9999),
    "lr_scheduler": st.sampled_from(["cosine", "linear", "constant", "constant_with_warmup"]),
    "warmup_ratio": floats(0, 0.99),
    "max_grad_norm": floats(0.01, 100),
    "lora_r": st.integers(1, 512),
    "lora_alpha": st.integers(1, 1024),
    "lora_dropout": floats(0, 0.99),
    "lora_projections": st.lists(st.sampled_from(PROJECTIONS), min_size=1, max_size=7, unique=True),
    "fps": floats(0.1, 60) | st.none(),
    "max_frames": st.integers(1, 32),
    "frame_sampling": st.sampled_from(["uniform-last", "last"]),
    "max_length": st.integers(16, 65536),
    "subset_ratio": floats(0.01, 1.0),
    "pack": st.sampled_from(["none", "shared-prefix"]),
    "save_steps": st.integers(1, 10**5),  # never together with save_every_hours (see below)
    "eval_steps": st.integers(1, 10**5),
    "keep_last": st.integers(1, 20),
    "logging_steps": st.integers(1, 1000),
    "report_to": st.sampled_from(["none", "tensorboard"]),
    "stage": st.sampled_from([1, 2]),
    "profile": st.sampled_from(["cpu", "gb10", "h100-80gb", "a100-80gb", "a100-40gb", "rtx4090-24gb"]),
}
PATH_KEYS = {"out", "data"}

#: Values each key refuses (with the others valid, the error must be about this key).
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "micro_batch_size": st.integers(-100, 0) | st.just("two") | st.just(1.5),
    "eval_batch_size": st.integers(-100, 0),
    "dataloader_workers": st.integers(-100, -1),
    "global_batch_size": st.integers(-100, 0) | st.just([32]),
    "learning_rate": floats(-1, 0) | st.just("fast") | st.just(float("nan")),
    "num_epochs": floats(-5, 0),
    "max_steps": st.integers(-100, 0),
    "weight_decay": floats(-1, -1e-6),
    "adam_beta1": floats(1, 5) | floats(-1, 0),
    "adam_beta2": floats(1, 5),
    "warmup_ratio": floats(1, 2) | floats(-1, -1e-6),
    "max_grad_norm": floats(-1, 0),
    "lora_r": st.integers(-10, 0) | st.just("big"),
    "lora_alpha": st.integers(-10, 0),
    "lora_dropout": floats(1, 2),
    "max_frames": st.integers(-10, 0),
    "max_length": st.integers(-10, 15),
    "subset_ratio": floats(1.001, 10) | floats(-1, 0),
    "memory_cap_gb": floats(-10, 0),
    "fps": floats(-10, 0),
    "keep_last": st.integers(-10, 0),
    "precision": st.sampled_from(["fp8", "bfloat16", "BF16", ""]),
    "quantization": st.sampled_from(["2bit", "nf4", ""]),
    "lr_scheduler": st.sampled_from(["cosine_with_restarts", "step"]),
    "frame_sampling": st.sampled_from(["first", "uniform"]),
    "pack": st.sampled_from(["packed", "yes"]),
    "report_to": st.sampled_from(["Wand B", "none,wandb", "", ","]),
    "gradient_checkpointing": st.sampled_from(["maybe", "sometimes"]) | st.just([True]),
    "seed": st.just("lucky") | st.just(4.5) | st.integers(-100, -1) | st.just(2**32),
    "lora_projections": st.just("q_proj") | st.just(7),
    "stage": st.sampled_from([0, 3, -1, "three"]),
}

valid_values = st.fixed_dictionaries({}, optional=VALID)


def _expected(key: str, value: Any) -> Any:
    if key == "gradient_checkpointing" and isinstance(value, bool):
        return "on" if value else "off"
    return Path(value) if key in PATH_KEYS and value is not None else value


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _check_resolved(resolved, layers: list[tuple[dict[str, Any], str]]) -> None:
    """Each key holds the value of the last layer that gives it, with that layer as its source."""
    winner: dict[str, tuple[Any, str]] = {}
    for values, source in layers:
        for key, value in values.items():
            winner[key] = (value, source)
    for key, (value, source) in winner.items():
        if key == "profile":
            assert resolved.profile.name == value
        assert getattr(resolved.settings, key) == _expected(key, value), key
        assert resolved.sources[key] == source, key


def _check_error(error: ConfigError, keys: list[str], *also: str) -> str:
    message = str(error)
    assert message and "\n" not in message, message
    assert any(key in message for key in keys), (keys, message)
    for text in also:
        assert text in message, (text, message)
    return message


@FUZZ
@given(values=valid_values)
def test_valid_config_files_resolve_to_the_values_given(tmp_path, values):
    assume(not ("save_steps" in values and "save_every_hours" in values))
    path = tmp_path / "valid.yaml"
    path.write_text(yaml.safe_dump(values))
    resolved = resolve_settings(config_file=path, environ={})
    _check_resolved(resolved, [(values, f"config file {path}")])
    if "stage" not in values:
        assert resolved.settings.stage == 1 and resolved.sources["stage"] == "default"
    if "profile" not in values:
        assert resolved.settings.profile == "cpu" and resolved.profile.name == "cpu"


@FUZZ
@given(values=valid_values.filter(lambda v: all(value is not None for value in v.values())))
def test_valid_environments_resolve_to_the_values_given(values):
    environ = {f"VLMFT_{key.upper()}": _env_text(value) for key, value in values.items()}
    _check_resolved(resolve_settings(environ=environ), [(values, "environment")])


@FUZZ
@given(
    file_values=valid_values,
    env_values=valid_values.filter(lambda v: all(value is not None for value in v.values())),
    cli_values=valid_values.filter(lambda v: all(value is not None for value in v.values())),
)
def test_later_layers_win_key_by_key(tmp_path, file_values, env_values, cli_values):
    path = tmp_path / "layers.yaml"
    path.write_text(yaml.safe_dump(file_values))
    environ = {f"VLMFT_{key.upper()}": _env_text(value) for key, value in env_values.items()}
    stage, profile = cli_values.pop("stage", None), cli_values.pop("profile", None)
    resolved = resolve_settings(stage=stage, profile=profile, config_file=path, cli=cli_values, environ=environ)
    top = {**cli_values, **({"stage": stage} if stage else {}), **({"profile": profile} if profile else {})}
    _check_resolved(resolved, [(file_values, f"config file {path}"), (env_values, "environment"), (top, "command line")])


@FUZZ
@given(values=valid_values, data=st.data())
def test_an_invalid_value_in_a_file_names_its_key_and_the_file(tmp_path, values, data):
    key = data.draw(st.sampled_from(sorted(INVALID)), label="key")
    bad = data.draw(INVALID[key], label="bad value")
    values = {k: v for k, v in values.items() if k not in ("save_steps", "stage")} | {key: bad}
    path = tmp_path / "invalid.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError) as caught:
        resolve_settings(config_file=path, environ={})
    _check_error(caught.value, [key], f"config file {path}")


@FUZZ
@given(data=st.data())
def test_an_invalid_environment_value_names_its_key_and_the_environment(data):
    key = data.draw(st.sampled_from(sorted(k for k in INVALID if k != "stage")), label="key")
    bad = data.draw(INVALID[key].filter(lambda v: not isinstance(v, list)), label="bad value")
    with pytest.raises(ConfigError) as caught:
        resolve_settings(environ={f"VLMFT_{key.upper()}": _env_text(bad)})
    _check_error(caught.value, [key], "environment")


@FUZZ
@given(key=st.text(string.ascii_lowercase + "_", min_size=1, max_size=16), value=st.integers())
def test_an_unknown_key_is_named(tmp_path, key, value):
    assume(key not in VALID and key != "home" and key not in ("backend", "lora_pattern", "save_every_hours"))
    path = tmp_path / "unknown.yaml"
    path.write_text(yaml.safe_dump({key: value}))
    with pytest.raises(ConfigError) as caught:
        resolve_settings(config_file=path, environ={})
    _check_error(caught.value, [repr(key)], "unknown setting", str(path))


def test_save_steps_and_save_every_hours_together_are_refused_naming_both(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("save_steps: 10\nsave_every_hours: 1.5\n")
    with pytest.raises(ConfigError) as caught:
        resolve_settings(config_file=path, environ={})
    _check_error(caught.value, ["save_steps"], "save_every_hours")


def test_an_unknown_profile_is_named():
    with pytest.raises(ConfigError) as caught:
        resolve_settings(environ={"VLMFT_PROFILE": "no-such-machine"})
    _check_error(caught.value, ["profile"], "no-such-machine")


# --- arbitrary input: resolves consistently, or fails with one named line ----------------------------

KEYS = st.sampled_from([*VALID, "home", "backend", "lora_pattern", "save_every_hours", "unknown_key"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=12), st.lists(st.text(max_size=5), max_size=3),
)  # fmt: skip


@FUZZ
@given(values=st.dictionaries(KEYS, SCALARS, max_size=6))
def test_arbitrary_config_file_values(tmp_path, values):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(values))
    try:
        resolved = resolve_settings(config_file=path, environ={})
    except ConfigError as error:  # the only failure allowed
        _check_error(error, list(values))
    else:
        for key in values:
            assert resolved.sources[key] == f"config file {path}", key


@FUZZ
@given(text=st.text(max_size=80))
def test_arbitrary_file_text(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        resolved = resolve_settings(config_file=path, environ={})
    except ConfigError as error:  # the only failure allowed
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = None
        names = [str(key) for key in parsed] if isinstance(parsed, dict) else []
        _check_error(error, [*names, str(path)])
    else:
        parsed = yaml.safe_load(text)
        assert parsed is None or isinstance(parsed, dict)
        for key in parsed or {}:
            assert resolved.sources[key] == f"config file {path}", key


@FUZZ
@given(
    env=st.dictionaries(
        st.sampled_from([f"VLMFT_{k.upper()}" for k in VALID]), st.text(string.printable, max_size=10), max_size=4
    )
)
def test_arbitrary_environment_values(env):
    try:
        resolved = resolve_settings(environ=env)
    except ConfigError as error:  # the only failure allowed
        _check_error(error, [name.removeprefix("VLMFT_").lower() for name in env] + ["VLMFT_"])
    else:
        for name in env:
            assert resolved.sources[name.removeprefix("VLMFT_").lower()] == "environment", name
