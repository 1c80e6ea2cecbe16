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
