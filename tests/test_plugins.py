import pytest

from vlmft_cli import plugins
from vlmft_cli.errors import PluginError
from vlmft_cli.plugin_status import plugin_statuses


def test_built_ins_are_registered_through_entry_points():
    names = {(info.kind, info.name): info for kind in plugins.GROUPS for info in plugins.discover(kind)}
    for key in [("models", "internvl3"), ("attention", "sdpa"), ("attention", "eager"), ("attention", "flash-attn-sm121"), ("profiles", "builtin")]:
        assert key in names and names[key].distribution == "vlmft"


def test_unknown_plugin_names_the_known_ones():
    with pytest.raises(PluginError, match=r"unknown attention plugin 'flash' \(known: eager, flash-attn-sm121, sdpa"):
        plugins.get("attention", "flash")


def test_load_plugins_variable_limits_loading(monkeypatch):
    monkeypatch.setenv("VLMFT_LOAD_PLUGINS", "sdpa")
    plugins.reset_cache()
    assert [info.name for info in plugins.discover("attention")] == ["sdpa"]
    assert plugins.discover("models") == ()


def test_broken_and_duplicate_plugins(monkeypatch):
    good = plugins.discover("attention")[0]
    broken = plugins.PluginInfo("attention", "busted", "x:y", "bad-dist", "0.1", error="ImportError: no module named x")
    twin = plugins.PluginInfo("attention", good.name, good.target, "twin-dist", "2.0", obj=good.obj)
    monkeypatch.setattr(plugins, "discover", lambda kind: (good, broken, twin) if kind == "attention" else ())
    with pytest.raises(PluginError, match="failed to load: ImportError"):
        plugins.get("attention", "busted")
    with pytest.raises(PluginError, match=r"registered twice: by vlmft .* and twin-dist 2.0"):
        plugins.get("attention", good.name)
    rows = {row.name: row for row in plugin_statuses()}
    assert rows["busted"].status == "broken" and "ImportError" in rows["busted"].reason


def test_flash_attn_sm121_says_why_it_is_unavailable_here():
    rows = {row.name: row for row in plugin_statuses()}
    assert rows["sdpa"].status == "available" and rows["eager"].status == "available"
    flash = rows["flash-attn-sm121"]
    assert flash.status == "unavailable"
    assert flash.reason.startswith(("flash_attn is not installed", "no CUDA device", "device is sm_"))
