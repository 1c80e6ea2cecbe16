"""Shared test set-up: no network, an isolated VLMFT_HOME and config folder, no stray VLMFT_* settings."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    for key in list(os.environ):
        if key.startswith("VLMFT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VLMFT_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    from vlmft_cli import plugins

    plugins.reset_cache()
    yield
    plugins.reset_cache()


@pytest.fixture(scope="session")
def vlmft_home(tmp_path_factory):
    """One VLMFT_HOME per test session, so the tiny models are built once."""
    return tmp_path_factory.mktemp("vlmft-home")


@pytest.fixture(scope="session")
def processed_data(tmp_path_factory):
    """A small RoboVQA-format set, synthesised and extracted once per session (24 train, 6 val videos)."""
    from pathlib import Path

    from vlmft_cli.data.extract import ExtractOptions, run_extract
    from vlmft_cli.data.synth import SynthOptions, synthesize

    root = tmp_path_factory.mktemp("robovqa")
    source = synthesize(SynthOptions(out=Path(root / "source"), videos=24, val_videos=6, seed=0))
    run_extract(ExtractOptions(source=str(source.root), out=root / "data", size=64, workers=1))
    return root / "data"
