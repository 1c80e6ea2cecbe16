"""Packing is the stage-1 default where it is honoured; otherwise an explicit request is refused with the
reason and the default falls back to one QA per sample, with a warning, never training on leaked context."""

from __future__ import annotations

import pytest
import yaml

from vlmft_cli import runs
from vlmft_cli.attention import Availability
from vlmft_cli.errors import ConfigError
from vlmft_cli.reporting import RecordingReporter
from vlmft_cli.settings import SettingsInput, resolve_settings
from vlmft_cli.training.pack_mode import packing_obstacle, resolve_pack
from vlmft_cli.training.recipe import TrainRequest, train
from vlmft_internvl3 import InternVL3Backend


class Attention:
    """An attention backend as a plugin would declare it."""

    def __init__(self, attn_implementation: str, supports_block_mask: bool) -> None:
        self.name = f"test-{attn_implementation}"
        self.description = "for tests"
        self.attn_implementation = attn_implementation
        self.supports_block_mask = supports_block_mask

    def availability(self) -> Availability:
        return Availability.yes()

    def setup(self) -> None:
        pass


class UnpackingBackend:
    """A model backend without the optional packing methods (only what the check looks at)."""

    name = "plain"


def test_stage_defaults_and_the_command_line():
    one = resolve_settings(stage=1, environ={})
    assert one.settings.pack == "shared-prefix" and one.sources["pack"] == "stage 1 default"
    assert resolve_settings(stage=2, environ={}).settings.pack == "none"
    chosen = resolve_settings(stage=1, cli={"pack": "none"}, environ={})
    assert chosen.settings.pack == "none" and chosen.sources["pack"] == "command line"
    with pytest.raises(ConfigError, match="pack='tight' from command line"):
        resolve_settings(stage=1, cli={"pack": "tight"}, environ={})


def test_what_stops_packing():
    backend = InternVL3Backend()
    assert packing_obstacle(1, backend, Attention("sdpa", True)) is None
    assert packing_obstacle(1, backend, Attention("eager", True)) is None
    assert "does not honour a caller-built block attention mask" in packing_obstacle(1, backend, Attention("flash_attention_2", False))
    # The attention backend claims support, but the model backend knows this implementation ignores the mask.
    assert "attn_implementation 'flash_attention_2'" in packing_obstacle(1, backend, Attention("flash_attention_2", True))
    reason = packing_obstacle(1, UnpackingBackend(), Attention("sdpa", True))
    assert "model backend plain does not implement shared-prefix packing" in reason and "encode_packed" in reason
    assert "for stage 1" in packing_obstacle(2, backend, Attention("sdpa", True))


def test_explicit_request_is_refused_and_the_default_falls_back():
    backend, unable = InternVL3Backend(), Attention("flash_attention_2", False)
    with pytest.raises(ConfigError, match="cannot train with --pack shared-prefix: attention backend test-flash_attention_2"):
        resolve_pack("shared-prefix", stage=1, backend=backend, attention=unable, explicit=True, reporter=RecordingReporter())
    reporter = RecordingReporter()
    mode, reason = resolve_pack("shared-prefix", stage=1, backend=backend, attention=unable, explicit=False, reporter=reporter)
    assert mode == "none" and "block attention mask" in reason
    assert "training one QA per sample (--pack none)" in reporter.warnings[0]
    assert resolve_pack("none", stage=1, backend=backend, attention=unable, explicit=True, reporter=reporter) == ("none", None)


def test_a_run_with_an_attention_that_ignores_the_mask(processed_data, vlmft_home, tmp_path, monkeypatch):
    monkeypatch.setattr("vlmft_cli.attention.select_attention", lambda name, reporter=None, model_backend=None: Attention("sdpa", False))
    common = {"data": processed_data, "out": tmp_path, "home": vlmft_home, "global_batch_size": 4, "dataloader_workers": 0, "max_steps": 1}

    asked = SettingsInput(stage=1, profile="cpu", flags={**common, "pack": "shared-prefix"}, environ={})
    with pytest.raises(ConfigError, match="does not honour a caller-built block attention mask"):
        train(TrainRequest(settings=asked))
    assert not any(tmp_path.iterdir())  # refused before a run folder exists

    reporter = RecordingReporter()
    result = train(TrainRequest(settings=SettingsInput(stage=1, profile="cpu", flags=common, environ={})), reporter)
    assert result.status == "finished" and any("training one QA per sample" in w for w in reporter.warnings)
    info = runs.Run(result.run_dir).record().to_json()
    assert info["pack"]["mode"] == "none" and "block attention mask" in info["pack"]["dropped"]
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert config["settings"]["pack"] == "none" and config["sources"]["pack"].startswith("stage 1 default, dropped:")
