"""Fixtures for the benchmark tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmft_cli.data.synth import SynthOptions, synthesize


@pytest.fixture(scope="session")
def synth_source(tmp_path_factory) -> Path:
    """RoboVQA-format TFRecords for `bench extract`: 12 train videos in 3 shards, 4 val videos in 1 shard."""
    root = tmp_path_factory.mktemp("bench-synth")
    synthesize(SynthOptions(out=root, videos=12, val_videos=4, seed=7, shards=3))
    return root
