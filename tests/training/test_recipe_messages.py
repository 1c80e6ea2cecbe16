"""A run says what it read and what it will train before the model loads."""

from __future__ import annotations

import json

import pytest

from vlmft_cli.reporting import RecordingReporter
from vlmft_cli.settings import SettingsInput
from vlmft_cli.training.recipe import train
from vlmft_cli.training.request import TrainRequest


class ModelLoadStarted(Exception):
    pass


def test_the_plan_is_printed_before_the_model_loads(processed_data, vlmft_home, tmp_path, monkeypatch):
    reporter = RecordingReporter()

    def build_model(*args, **kwargs):
        reporter.infos.append("<model load>")
        raise ModelLoadStarted

    monkeypatch.setattr("vlmft_cli.lora_model.build_model", build_model)
    flags = {"data": processed_data, "home": vlmft_home, "out": tmp_path / "exp", "pack": "none", "global_batch_size": 4, "micro_batch_size": 2}
    with pytest.raises(ModelLoadStarted):
        train(TrainRequest(settings=SettingsInput(stage=1, profile="cpu", flags=flags)), reporter)
    lines = (processed_data / "stage1" / "train.jsonl").read_text().splitlines()
    qas = len([json.loads(line) for line in lines])  # stage 1: one QA a line
    load = reporter.infos.index("<model load>")
    before = reporter.infos[:load]
    assert before[0].startswith(f"plan: {len(lines)} training and ")  # the first line is what was read
    expected = f"stage 1: {qas:,} QAs in {-(-qas // 4):,} optimizer steps, accumulation 2; gradient checkpointing: off ("
    assert any(line.startswith(expected) and line.endswith("; loading tiny-internvl3") for line in before), before
