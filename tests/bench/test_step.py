"""bench step on the CPU: the tiny model through the training path (stage 1 packed with its block mask,
the stage-2 collate), and the random-init path with a one-layer architecture; executed and necessary
FLOPs apart, with checkpointing's recomputation and nothing into the frozen vision tower."""

import pytest

from bench.fakes import TINY_ARCH, TinyArchBackend, register
from vlmft_cli.bench.step import StepOptions, measure_step
from vlmft_cli.bench.tables import step_table
from vlmft_cli.errors import ConfigError
from vlmft_cli.settings import resolve_settings


def _resolved(vlmft_home, stage=1, **cli):
    return resolve_settings(stage=stage, profile="cpu", cli={"home": vlmft_home, "model": "tiny-internvl3", **cli})


@pytest.fixture(scope="module")
def stage_1(vlmft_home):
    return measure_step(_resolved(vlmft_home), StepOptions(steps=2, matmul_size=256))


@pytest.fixture(scope="module")
def stage_1_checkpointed(vlmft_home):
    return measure_step(_resolved(vlmft_home, gradient_checkpointing="on"), StepOptions(steps=1, measure_matmul=False))


def test_tiny_model_stage_1_is_packed_as_training_packs(stage_1):
    document = stage_1.as_dict()
    assert document["bench"] == "step" and document["parameters"]["micro_batch_size"] == 2
    assert document["parameters"]["pack"].startswith("shared-prefix")
    (entry,) = document["entries"]
    m, d = entry["metrics"], entry["details"]
    assert entry["key"] == {"model": "tiny-internvl3", "stage": 1, "layers": None}
    # cpu profile: 2 packed sequences per micro-batch at 3.62 QAs per video → round(32 / 7.24) = 4 micro-batches
    # of 32 / 4 = 8 QAs, two videos of 4 QAs each, 4 frames per video
    assert d["packed"] and d["accumulation"] == 4
    assert (d["batch"]["samples"], d["batch"]["qas"], d["batch"]["frames"]) == (2, 8, 8)
    assert d["batch"]["image_tokens"] > 0 and d["batch"]["label_tokens"] > 0
    assert m["step_s"] == pytest.approx(m["forward_backward_s_median"] + m["optimizer_s_median"] / d["accumulation"], rel=1e-3)
    assert m["tokens_per_s"] == pytest.approx(d["batch"]["tokens"] / m["step_s"], rel=1e-3)
    assert m["qas_per_s"] == pytest.approx(8 / m["step_s"], rel=1e-3)
    assert m["necessary_tflops"] == pytest.approx(m["necessary_tflop_per_micro_batch"] / m["step_s"], rel=1e-2)
    assert m["mfu_datasheet"] is None  # the cpu profile has no datasheet peak
    assert m["mfu_measured"] == pytest.approx(m["necessary_tflops"] / m["measured_matmul_tflops"], rel=1e-2)
    assert m["peak_memory_mib"] > 0 and d["memory"]["kind"] == "rss_peak"
    assert 0 < d["parameters"]["trainable"] < d["parameters"]["total"]


def test_stage_1_flops_waste_only_the_dense_masks_square(stage_1):
    (entry,) = stage_1.entries
    flops, batch = entry.details["flops"], entry.details["batch"]
    executed, necessary, waste = flops["executed"], flops["necessary"], flops["waste_tflop"]
    # Logits only at labelled positions, checkpointing off, no gradient into the frozen tower: the only
    # executed work beyond the necessary is sdpa computing the whole square of a dense block mask.
    assert (waste["recompute"], waste["vision_backward"], waste["head_unlabelled"]) == (0, 0, 0)
    assert waste["masked_attention"] > 0 and executed["backward_by_part_tflop"]["vision"] == 0
    assert 1 < entry.metrics["executed_over_necessary"] == pytest.approx(executed["total_tflop"] / necessary["total_tflop"], rel=1e-3)
    # Two packed rows allow fewer pairs than their causal triangles would (the blocks do not see each other).
    row = batch["tokens"] // 2
    assert 0 < batch["attention_pairs"] < 2 * row * (row + 1) // 2 + row


def test_checkpointing_recomputes_but_never_back_propagates_the_vision_tower(stage_1, stage_1_checkpointed):
    off, on = stage_1.entries[0], stage_1_checkpointed.entries[0]
    assert not off.details["gradient_checkpointing"] and on.details["gradient_checkpointing"]
    on_flops = on.details["flops"]
    assert on_flops["executed"]["recompute_tflop"] > 0 and on_flops["necessary"]["recompute_tflop"] == 0
    assert on_flops["executed"]["backward_by_part_tflop"]["vision"] == 0  # issue 15 item 1
    assert on_flops["executed"]["recompute_by_part_tflop"]["vision"] == 0  # the tower is not checkpointed either
    # The objective is the same: the necessary FLOPs do not depend on checkpointing.
    assert on_flops["necessary"] == off.details["flops"]["necessary"]
    assert on.metrics["executed_over_necessary"] > off.metrics["executed_over_necessary"]


def test_the_projection_scales_the_measured_rate_to_robovqa(stage_1):
    (entry,) = stage_1.entries
    m, projection = entry.metrics, entry.details["projection"]
    rate = m["necessary_tflop_per_micro_batch"] / m["step_s"]
    assert projection["necessary_tflops_achieved"] == pytest.approx(rate, rel=1e-2)
    hours = [pflop * 1e3 / rate / 3600 for pflop in projection["stage_pflop"]]
    assert [m["projected_stage1_h"], m["projected_stage2_h"]] == pytest.approx(hours, rel=1e-2)
    assert m["projected_curriculum_h"] == pytest.approx(sum(hours), rel=1e-2)
    assert projection["stage1_packed"] is True
    rows = dict((row[0], row[1]) for row in step_table(stage_1).rows)
    assert rows["projected curriculum"] == f"{m['projected_curriculum_h']:.4g} h"


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
    assert one.metrics["necessary_tflop_per_micro_batch"] < two.metrics["necessary_tflop_per_micro_batch"]


def test_options_are_checked(monkeypatch, vlmft_home):
    with pytest.raises(ConfigError, match="add --random-init"):
        StepOptions(layers=1)
    with pytest.raises(ConfigError, match="warm-up"):
        StepOptions(warmup=0)
    with pytest.raises(ConfigError, match="no architecture 'InternVL3-9B'"):
        measure_step(_resolved(vlmft_home), StepOptions(random_init=True, variant="InternVL3-9B"))
