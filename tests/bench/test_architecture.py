"""Real architectures through the backends: head layouts by name, configs with fewer layers."""

import pytest

from vlmft_cli.bench.architecture import HeadLayout, model_config, resolve_layout, with_layers
from vlmft_cli.errors import ConfigError


def test_head_layouts(vlmft_home):
    assert resolve_layout("InternVL3-8B", home=vlmft_home) == (HeadLayout(28, 4, 128), "InternVL3-8B")
    assert resolve_layout("internvl3-1b", home=vlmft_home)[0] == HeadLayout(14, 2, 64)
    assert resolve_layout("tiny-internvl3", home=vlmft_home)[0] == HeadLayout(4, 2, 16)
    layout, source = resolve_layout("InternVL3-8B", head_dim=64, home=vlmft_home)
    assert layout == HeadLayout(28, 4, 64) and source == "InternVL3-8B with head_dim=64"
    assert resolve_layout("ignored", heads=4, kv_heads=2, head_dim=32, home=vlmft_home)[0] == HeadLayout(4, 2, 32)
    with pytest.raises(ConfigError, match="not a multiple"):
        HeadLayout(5, 2, 32)


def test_fewer_layers_keep_the_widths(vlmft_home):
    config = model_config("InternVL3-8B", vlmft_home)
    shallow = with_layers(config, 2)
    assert (shallow.text_config.num_hidden_layers, shallow.vision_config.num_hidden_layers) == (2, 2)
    assert len(shallow.text_config.layer_types) == 2
    assert (shallow.text_config.hidden_size, shallow.vision_config.hidden_size) == (3584, 1024)
    assert config.text_config.num_hidden_layers == 28  # the original is left alone
    assert with_layers(config, None).text_config.num_hidden_layers == 28
    assert with_layers(config, 100).text_config.num_hidden_layers == 28
    with pytest.raises(ConfigError):
        with_layers(config, 0)
