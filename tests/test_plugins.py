import pytest

from vlmft_cli import plugins
from vlmft_cli.errors import PluginError
from vlmft_cli.plugin_status import plugin_statuses


def test_built_ins_are_registered_through_entry_points():
    names = {(info.kind, info.name): info for kind in plugins.GROUPS for info in plugins.discover(kind)}
    for key in [("models", "internvl3"), ("attention", "sdpa"), ("attention", "eager"), ("attention", "flash-attn-sm121"), ("profiles", "builtin")]:
        assert key in names and names[key].distribution == "vlmft"


def test_unknown_plugin_names_the_known_ones():
    with pytest.raises(PluginError, match=r"unknown attention plugin 'flash' \(known: eager, flash-attn-sm121, flex, sdpa"):
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


# --- issue 12: VLMFT_LOAD_PLUGINS never hides the built-in profiles, and names what it does not know ---


def test_load_plugins_limits_code_plugins_but_keeps_the_built_in_profiles(monkeypatch):
    from vlmft_cli.profiles import available_profiles
    from vlmft_cli.settings import resolve_settings

    monkeypatch.setenv("VLMFT_LOAD_PLUGINS", "qwen3_vl")
    plugins.reset_cache()
    assert [info.name for info in plugins.discover("models")] == ["qwen3_vl"]
    assert plugins.discover("attention") == ()
    assert {"cpu", "gb10", "h100-80gb"} <= set(available_profiles())
    assert resolve_settings(profile="cpu", environ={}).profile.name == "cpu"


@pytest.mark.parametrize(("allow", "unknown", "meant"), [("qwen3-vl", "qwen3-vl", "qwen3_vl"), ("sdpa,intervl3", "intervl3", "internvl3")])
def test_an_unknown_load_plugins_name_warns_with_the_closest_known_one(monkeypatch, allow, unknown, meant):
    from vlmft_cli.errors import VlmftWarning

    monkeypatch.setenv("VLMFT_LOAD_PLUGINS", allow)
    plugins.reset_cache()
    with pytest.warns(VlmftWarning) as caught:
        plugins.discover("models")
    messages = [str(w.message) for w in caught if issubclass(w.category, VlmftWarning)]
    assert len(messages) == 1
    assert f"VLMFT_LOAD_PLUGINS names {unknown!r}" in messages[0] and f"did you mean {meant!r}?" in messages[0]


def test_known_load_plugins_names_do_not_warn(monkeypatch):
    import warnings

    from vlmft_cli.errors import VlmftWarning

    monkeypatch.setenv("VLMFT_LOAD_PLUGINS", "vlmft, sdpa,qwen3_vl")  # a distribution and plugin names
    plugins.reset_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error", VlmftWarning)
        assert {info.name for info in plugins.discover("models")} == {"internvl3", "qwen2_5_vl", "qwen3_vl"}


# --- issue 12: a hub id that is neither cached nor reachable is one line, in seconds ------------------

HUB_ID = "OpenGVLab/InternVL3-8B-hf"


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so no copy on this machine changes the outcome."""
    from huggingface_hub import constants

    from vlmft_cli import model_backend

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(model_backend, "_probed", {}, raising=False)
    return tmp_path / "hub"


def _backend(name: str):
    from vlmft_cli.backends import model_backend

    return model_backend(name)


def test_an_uncached_hub_id_offline_is_refused_in_seconds(empty_hub_cache, tmp_path):
    import time

    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # tests/conftest.py sets HF_HUB_OFFLINE=1
    for backend, model in (("internvl3", HUB_ID), ("qwen3_vl", "Qwen/Qwen3-VL-8B-Instruct"), ("qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct")):
        started = time.monotonic()
        with pytest.raises(PluginError) as caught:
            _backend(backend).load_processor(model, tmp_path)
        assert time.monotonic() - started < 15
        message = str(caught.value)
        assert f"model {model} is not in the Hugging Face cache" in message and "HF_HUB_OFFLINE" in message
        assert "--model DIR" in caught.value.hint and "HF_HOME" in caught.value.hint


def test_an_uncached_hub_id_with_the_hub_unreachable_is_refused(empty_hub_cache, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from vlmft_cli import model_backend

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(model_backend, "hub_unreachable", lambda timeout_s=5.0: "https://huggingface.co did not answer within 5 s", raising=False)
    with pytest.raises(PluginError, match=rf"model {HUB_ID} is not in the Hugging Face cache .* did not answer within 5 s"):
        _backend("internvl3").load(HUB_ID, model_backend.LoadOptions(precision="fp32"), tmp_path)


def test_the_reachability_probe_gives_up_after_its_timeout(empty_hub_cache, monkeypatch):
    import threading
    import time

    import huggingface_hub.utils

    from vlmft_cli import model_backend

    release = threading.Event()

    class Hanging:
        def head(self, url, timeout=None):
            release.wait(60)  # a hub that never answers (DNS or a black-holed route)

    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: Hanging())
    started = time.monotonic()
    try:
        problem = model_backend.hub_unreachable(timeout_s=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 5
    assert problem is not None and "did not answer within 0.5 s" in problem


def test_a_cached_hub_id_is_used_offline_when_the_hub_is_unreachable(empty_hub_cache, monkeypatch):
    import os

    from huggingface_hub import constants

    from vlmft_cli import model_backend
    from vlmft_cli.errors import VlmftWarning

    snapshot = empty_hub_cache / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (empty_hub_cache / "models--org--tiny" / "refs").mkdir()
    (empty_hub_cache / "models--org--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(model_backend, "hub_unreachable", lambda timeout_s=5.0: "no route", raising=False)
    with pytest.warns(VlmftWarning, match="using the cached copy of org/tiny"):
        assert model_backend.remote_model_source("org/tiny") == "org/tiny"
    assert constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_reachable_hub_lets_an_uncached_id_through(empty_hub_cache, monkeypatch):
    from huggingface_hub import constants

    from vlmft_cli import model_backend

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(model_backend, "hub_unreachable", lambda timeout_s=5.0: None, raising=False)
    assert model_backend.remote_model_source(HUB_ID) == HUB_ID


@pytest.mark.parametrize("name", ["/no/such/model", "./missing-model", "~/nope", "not a hub id", "a/b/c"])
def test_a_missing_folder_or_a_name_that_is_no_hub_id_is_named(empty_hub_cache, name):
    from vlmft_cli import model_backend

    with pytest.raises(PluginError, match="does not exist|neither a folder here nor a Hugging Face hub id"):
        model_backend.remote_model_source(name)


@pytest.mark.parametrize(("model", "backend", "owner"), [("tiny-internvl3", "qwen3_vl", "internvl3"), ("tiny-qwen3-vl", "internvl3", "qwen3_vl"), (HUB_ID, "qwen2_5_vl", "internvl3")])
def test_a_backend_pointed_at_another_familys_model_is_refused(model, backend, owner):
    from vlmft_cli.backends import backend_for

    with pytest.raises(PluginError, match=rf"model '{model}' belongs to the {owner} backend, not to --backend {backend}"):
        backend_for(model, backend)
    assert backend_for(model, owner).name == owner
