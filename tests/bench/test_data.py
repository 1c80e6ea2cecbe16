"""bench data: training's loader against a step's consumption, and padding with and without grouping."""

import pytest

from vlmft_cli.bench.data import DataOptions, measure_data
from vlmft_cli.errors import DataError
from vlmft_cli.settings import resolve_settings


def _resolved(vlmft_home, data, stage):
    return resolve_settings(stage=stage, profile="cpu", cli={"home": vlmft_home, "data": data})


def test_stage_1_against_a_measured_step(vlmft_home, processed_data):
    document = measure_data(_resolved(vlmft_home, processed_data, 1), DataOptions(batches=5, step_steps=1)).as_dict()
    (entry,) = document["entries"]
    m, d = entry["metrics"], entry["details"]
    assert entry["key"] == {"stage": 1, "micro_batch_size": 2} and d["workers"] == 2  # the cpu profile's
    assert d["loader"]["batches"] == 5 and d["loader"]["samples"] == 10 and m["startup_s"] > 0
    assert m["loader_samples_per_s"] > 0 and m["step_samples_per_s"] > 0
    assert m["ratio"] == pytest.approx(m["loader_samples_per_s"] / m["step_samples_per_s"], rel=1e-2)
    assert d["step"].startswith("measured: tiny-internvl3")
    assert 0 <= m["padding_share_grouped"] <= m["padding_share_shuffled"] < 1
    assert d["meets"]["ratio"] == (m["ratio"] >= d["targets"]["ratio"] == 4.0)


def test_stage_2_with_a_given_step_rate_and_workers(vlmft_home, processed_data):
    options = DataOptions(workers=0, batches=30, step_samples_per_s=2.0)  # more batches than the epoch has
    entry = measure_data(_resolved(vlmft_home, processed_data, 2), options).entries[0]
    assert entry.details["workers"] == 0 and entry.details["loader"]["samples"] == 30
    assert entry.metrics["step_samples_per_s"] == 2.0 and entry.details["step"].startswith("given")
    assert entry.metrics["padding_share_grouped"] == 0.0  # one conversation per micro-batch


def test_data_is_required(vlmft_home):
    with pytest.raises(DataError, match="--data"):
        measure_data(resolve_settings(stage=1, profile="cpu", cli={"home": vlmft_home}), DataOptions())
    with pytest.raises(DataError):
        DataOptions(step_samples_per_s=0)
