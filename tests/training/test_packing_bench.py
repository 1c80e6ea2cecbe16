"""The packing benchmark's model: the base model's family at the mid size, frames of 256 tokens."""

import json

import pytest

from vlmft_cli.errors import ConfigError
from vlmft_cli.training.packing_bench import MID_SIZE, scaled_config


def test_mid_size_config_from_the_tiny_model(vlmft_home):
    from vlmft_cli.backends import backend_for

    source = backend_for("tiny-internvl3").resolve("tiny-internvl3", vlmft_home)
    config = json.loads((vlmft_home / "models" / "tiny-internvl3" / "config.json").read_text())
    assert str(source).endswith("tiny-internvl3")
    scaled = scaled_config(config, MID_SIZE)
    assert scaled["text_config"]["num_hidden_layers"] == 4 and scaled["text_config"]["hidden_size"] == 256
    assert "layer_types" not in scaled["text_config"]  # rebuilt for the new depth
    assert scaled["vision_config"]["image_size"] == [448, 448]
    assert scaled["image_seq_length"] == 256  # (448 / 14 × 0.5)², as InternVL3's real frames
    assert config["text_config"]["num_hidden_layers"] == 2  # the base document is left alone
    with pytest.raises(ConfigError, match="needs a audio_config"):
        scaled_config(config, {"audio_config": {"hidden_size": 8}})
