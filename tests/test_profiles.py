import pytest

from vlmft_cli import plugins
from vlmft_cli.errors import ConfigError
from vlmft_cli.paths import user_profiles_dir
from vlmft_cli.profiles import available_profiles, load_profile
from vlmft_cli.settings import resolve_settings

BUILT_IN = {"gb10", "h200", "h100-80gb", "a100-80gb", "a100-40gb", "rtx4090-24gb", "cpu"}

GOOD = """description: test box
hardware: {device: cuda, memory_gb: 48, unified_memory: false, compute_capability: "8.6", peak_bf16_tflops: 150}
defaults: {memory_cap_gb: 40, precision: bf16}
stages:
  1: {micro_batch_size: 4}
  2: {micro_batch_size: 2}
"""


def test_built_in_profiles_are_found():
    assert set(available_profiles()) >= BUILT_IN


@pytest.mark.parametrize("name", sorted(BUILT_IN))
@pytest.mark.parametrize("stage", [1, 2])
def test_every_profile_resolves_for_every_stage(name, stage):
    resolved = resolve_settings(stage=stage, profile=name, environ={})
    settings = resolved.settings
    assert settings.global_batch_size == 32
    assert settings.gradient_accumulation_steps() * settings.micro_batch_size == 32
    if resolved.profile.hardware.memory_gb and settings.memory_cap_gb:
        assert settings.memory_cap_gb < resolved.profile.hardware.memory_gb


def test_gb10_matches_the_issue():
    resolved = resolve_settings(stage=2, profile="gb10", environ={})
    s, hw = resolved.settings, resolved.profile.hardware
    assert hw.unified_memory and hw.memory_gb == 128 and hw.compute_capability == "12.1"
    assert (s.memory_cap_gb, s.micro_batch_size, s.eval_batch_size) == (100, 2, 2)
    assert (s.attention, s.precision, s.gradient_checkpointing) == ("flex", "bf16", "auto")


def test_h200_holds_the_datasheet_facts():
    resolved = resolve_settings(stage=1, profile="h200", environ={})
    s, hw = resolved.settings, resolved.profile.hardware
    assert (hw.memory_gb, hw.compute_capability, hw.peak_bf16_tflops, hw.unified_memory) == (141, "9.0", 989, False)
    assert (s.memory_cap_gb, s.precision, s.gradient_checkpointing) == (130, "bf16", "auto")


def test_only_the_cpu_profile_turns_checkpointing_off_outright():
    values = {name: resolve_settings(stage=1, profile=name, environ={}).settings.gradient_checkpointing for name in BUILT_IN}
    assert values == {**{name: "auto" for name in BUILT_IN}, "cpu": "off"}


def test_profile_from_a_path_and_from_the_user_folder(tmp_path):
    path = tmp_path / "mybox.yaml"
    path.write_text(GOOD)
    assert resolve_settings(stage=1, profile=str(path), environ={}).settings.micro_batch_size == 4
    folder = user_profiles_dir()
    folder.mkdir(parents=True)
    (folder / "gb10.yaml").write_text(GOOD)  # the user's own gb10 takes precedence over the built-in
    profile = load_profile("gb10")
    assert profile.origin.startswith("user folder") and profile.hardware.memory_gb == 48


def test_bad_profile_values_name_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("memory_gb: 48", "memory_gb: lots"))
    with pytest.raises(ConfigError, match=rf"hardware.memory_gb in {path}"):
        load_profile(str(path))
    path.write_text(GOOD.replace("micro_batch_size: 4", "micro_batch_size: 0"))
    with pytest.raises(ConfigError, match=rf"micro_batch_size=0 from profile bad \({path}\)"):
        resolve_settings(stage=1, profile=str(path), environ={})
    path.write_text(GOOD.replace("precision: bf16", "learning_rate: 1"))
    with pytest.raises(ConfigError, match="'learning_rate', which is not a hardware setting"):
        resolve_settings(stage=1, profile=str(path), environ={})


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown profile 'gb11' \(known: .*gb10"):
        load_profile("gb11")
    with pytest.raises(ConfigError, match="profile file not found"):
        load_profile("nowhere/box.yaml")


def test_two_distributions_shipping_one_name_is_an_error(monkeypatch):
    real = plugins.discover("profiles")[0]
    twin = plugins.PluginInfo("profiles", "other", real.target, "otherdist", "9.9", obj=real.obj)
    monkeypatch.setattr(plugins, "discover", lambda kind: (real, twin))
    with pytest.raises(ConfigError, match=r"shipped twice: by built-in \(vlmft .*\) and by plugin \(otherdist 9.9\)"):
        available_profiles()


def test_a_profile_that_does_not_parse_names_the_line(tmp_path):
    path = tmp_path / "box.yaml"
    path.write_text(GOOD.replace("defaults: {memory_cap_gb: 40, precision: bf16}", "defaults: {memory_cap_gb: 40, precision: bf16"))
    with pytest.raises(ConfigError, match=rf"profile {path} is not valid YAML: line 4, column \d+: "):
        load_profile(str(path))


def test_built_in_profiles_survive_a_load_plugins_limit(monkeypatch):
    monkeypatch.setenv("VLMFT_LOAD_PLUGINS", "internvl3")
    plugins.reset_cache()
    assert set(available_profiles()) >= BUILT_IN
    assert load_profile("gb10").hardware.memory_gb == 128
