"""bench step on the CPU: the tiny model through the training code, and the random-init path with a
one-layer architecture; figures consistent with each other, LoRA FLOPs below the full-training 6·N·T."""

import pytest

from bench.fakes import TINY_ARCH, TinyArchBackend, register
from vlmft_cli.bench.step import StepOptions, measure_step
from vlmft_cli.bench.tables import step_table
from vlmft_cli.errors import ConfigError
from vlmft_cli.settings import resolve_settings


def _resolved(vlmft_home, stage=1, **cli):
    return resolve_settings(stage=stage, profile="cpu", cli={"home": vlmft_home, "model": "tiny-internvl3", **cli})


def test_tiny_model_stage_1(vlmft_home):
    document = measure_step(_resolved(vlmft_home), StepOptions(steps=2, matmul_size=256)).as_dict()
    assert document["bench"] == "step" and document["parameters"]["micro_batch_size"] == 2
    (entry,) = document["entries"]
    m, d = entry["metrics"], entry["details"]
    assert entry["key"] == {"model": "tiny-internvl3", "stage": 1, "layers": None}
    assert d["batch"]["samples"] == 2 and d["batch"]["image_tokens"] > 0 and d["batch"]["label_tokens"] > 0
    assert m["step_s"] == pytest.approx(m["forward_backward_s_median"] + m["optimizer_s_median"] / d["accumulation"], rel=1e-3)
    assert m["tokens_per_s"] == pytest.approx(d["batch"]["tokens"] / m["step_s"], rel=1e-3)
    assert m["samples_per_s"] == pytest.approx(2 / m["step_s"], rel=1e-3)
    assert m["achieved_tflops"] == pytest.approx(m["model_tflop_per_micro_batch"] / m["step_s"], rel=1e-2)
    assert m["mfu_datasheet"] is None  # the cpu profile has no datasheet peak
    assert m["mfu_measured"] == pytest.approx(m["achieved_tflops"] / m["measured_matmul_tflops"], rel=1e-2)
    assert m["peak_memory_mib"] > 0 and d["memory"]["kind"] == "rss_peak"
    flops = d["flops"]
    assert 0 < flops["dense_backward_tflop"] < 2 * flops["dense_forward_tflop"]  # frozen weights get no gradients
    assert 0 < d["parameters"]["trainable"] < d["parameters"]["total"]
    assert "2·N·T" in document["notes"]["flops"]


def test_stage_2_takes_real_samples_from_data(vlmft_home, processed_data):
    document = measure_step(_resolved(vlmft_home, stage=2, data=processed_data), StepOptions(steps=1, measure_matmul=False))
    (entry,) = document.entries
    assert entry.key["stage"] == 2 and entry.details["batch"]["samples"] == 1 and entry.metrics["step_s"] > 0
    assert document.parameters["data"] == str(processed_data) and document.parameters["max_frames"] == 10
    assert entry.metrics["mfu_measured"] is None and entry.details["matmul"] is None
    assert ["MFU vs measured matmul", "n/a", "not measured"] in step_table(document).rows


def test_random_init_builds_the_architecture_with_fewer_layers(monkeypatch, vlmft_home):
    register(monkeypatch, "models", TinyArchBackend(vlmft_home))
    resolved = _resolved(vlmft_home, model=TINY_ARCH)
    one = measure_step(resolved, StepOptions(random_init=True, layers=1, steps=1, measure_matmul=False)).entries[0]
    two = measure_step(resolved, StepOptions(random_init=True, steps=1, measure_matmul=False)).entries[0]
    assert one.key == {"model": "Tiny-Arch (random init, 1 layers)", "stage": 1, "layers": 1}
    assert two.key["model"] == "Tiny-Arch (random init)"
    assert one.details["parameters"]["total"] < two.details["parameters"]["total"]
    assert one.metrics["model_tflop_per_micro_batch"] < two.metrics["model_tflop_per_micro_batch"]


def test_options_are_checked(monkeypatch, vlmft_home):
    with pytest.raises(ConfigError, match="add --random-init"):
        StepOptions(layers=1)
    with pytest.raises(ConfigError, match="warm-up"):
        StepOptions(warmup=0)
    with pytest.raises(ConfigError, match="no architecture 'InternVL3-9B'"):
        measure_step(_resolved(vlmft_home), StepOptions(random_init=True, variant="InternVL3-9B"))
