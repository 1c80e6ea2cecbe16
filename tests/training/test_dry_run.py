"""The memory estimate behind `gradient_checkpointing: auto`: its activation part against a measured peak
on a small random model, its per-layer formula against a hand count, and the auto rule."""

from __future__ import annotations

import copy
import ctypes

import pytest
import torch

from vlmft_cli.settings import Settings
from vlmft_cli.training.dry_run import (
    MicroBatchLoad,
    ModelShape,
    activation_bytes,
    decide_checkpointing,
    layer_activation_bytes,
    peak_activation_bytes,
    shape_of,
)

MIB = 2**20
TOKENS, LABELLED, LAYERS = 512, 32, 4
M_MMAP_THRESHOLD = -3


def _fix_mmap_threshold() -> None:
    """Large blocks straight from mmap and back on free, so the resident set's peak is the peak of live
    tensors (glibc's sliding threshold would keep freed blocks resident), as CUDA's allocator reports it."""
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 64 * 1024)


def _small_model(tiny_home, checkpointing: str):
    """The tiny InternVL3 with a wider 4-layer Qwen2 text model (GQA), LoRA through the training build."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.bench.random_init import RandomInitBackend
    from vlmft_cli.lora_model import build_model, lora_pattern

    backend = backend_for("tiny-internvl3", None)
    config = copy.deepcopy(AutoConfig.from_pretrained(backend.resolve("tiny-internvl3", tiny_home)))
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_attention_heads, text.num_key_value_heads, text.head_dim = (
        128,
        512,
        4,
        2,
        32,
    )
    text.num_hidden_layers, text.layer_types = LAYERS, ["full_attention"] * LAYERS
    settings = Settings(
        model="tiny-internvl3",
        home=tiny_home,
        precision="fp32",
        gradient_checkpointing=checkpointing,
        lora_r=8,
        lora_alpha=16,
    )
    loader = RandomInitBackend(backend, config, backend.load_processor("tiny-internvl3", tiny_home), "cpu", seed=0)
    model, _ = build_model(settings, loader, select_attention("sdpa"), device="cpu")
    with torch.device("meta"):
        meta = AutoModelForImageTextToText.from_config(config)
    return model, settings, shape_of(meta, config, lora_pattern(settings, backend))


@pytest.fixture(scope="module")
def tiny_home(vlmft_home):
    return vlmft_home


def measure(tiny_home, checkpointing: str) -> tuple[float, dict]:
    """(the estimate in MiB, the measured resident-set reading) of one training step of the small model.
    Run in a fresh process (`test_activation_estimate_…`): in a long-lived one the heap left by earlier
    work makes the resident-set growth of a step mean little."""
    from vlmft_cli.bench.memory import PeakMemory
    from vlmft_cli.label_loss import forward_with_loss

    _fix_mmap_threshold()
    model, settings, shape = _small_model(tiny_home, checkpointing)
    model.train()
    ids = torch.randint(10, 200, (1, TOKENS), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, -100)
    labels[:, -LABELLED:] = ids[:, -LABELLED:]

    def step() -> None:
        forward_with_loss(model, {"input_ids": ids, "labels": labels}).loss.backward()
        model.zero_grad(set_to_none=False)  # the LoRA gradients stay allocated, outside the measured growth

    step()  # first-call allocations (gradients, kernels' caches) are not the step's activations
    with PeakMemory("cpu") as peak:
        step()
    load = MicroBatchLoad(rows=1, row_tokens=TOKENS, labelled=LABELLED - 1, frames=0, masked=False)
    estimate = peak_activation_bytes(activation_bytes(shape, load, settings, checkpointing == "on", device="cpu")) / MIB
    assert len(shape.lora_features) == 7 * LAYERS
    return estimate, peak.reading.as_dict()


def test_activation_estimate_is_within_a_fifth_of_the_measured_peak(tiny_home):
    import json
    import subprocess
    import sys

    # Built here first, so the fresh process finds the tiny model and only measures.
    from vlmft_cli.backends import backend_for

    backend_for("tiny-internvl3", None).resolve("tiny-internvl3", tiny_home)
    done = subprocess.run([sys.executable, __file__, str(tiny_home)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for checkpointing, (estimate, reading) in json.loads(done.stdout.strip().splitlines()[-1]).items():
        if reading["growth_mib"] is None:
            pytest.fail("the resident-set peak cannot be reset on this system")
        assert estimate == pytest.approx(reading["growth_mib"], rel=0.2), (checkpointing, estimate, reading)


def test_the_per_layer_formula_matches_a_hand_count_for_qwen2_7b():
    # Qwen2.5-7B, bf16, r 128, dropout 0.05 on CUDA, K/V repeated (a 4-D mask): counted by hand per token.
    shape = ModelShape(
        0,
        0,
        3584,
        18944,
        28,
        4,
        128,
        28,
        151674,
        tuple([(3584, 3584), (3584, 512), (3584, 512), (3584, 3584), (3584, 18944), (3584, 18944), (18944, 3584)] * 28),
    )
    norms = 2 * 4 * 3584
    lora = 6 * 3584 * 3 + 18944 * 3 + 7 * 128 * 2
    attention = 4 * 3584 * 2 + 4 * 28
    mlp = 3 * 18944 * 2
    assert (
        layer_activation_bytes(shape, value_bytes=2, lora_r=128, lora_dropout=0.05, kv_repeated=True)
        == norms + lora + attention + mlp
        == 294_256
    )
    # Unmasked, SDPA keeps K and V at 4 heads: 2 × 24 heads × 128 dims × 2 bytes less.
    assert (
        layer_activation_bytes(shape, value_bytes=2, lora_r=128, lora_dropout=0.05, kv_repeated=False)
        == 294_256 - 2 * 24 * 128 * 2
    )


def test_auto_turns_checkpointing_on_only_above_the_cap():
    off = decide_checkpointing("auto", 130, 61.2, 20.5)
    assert (off.value, off.enabled) == ("off", False) and off.reason == "auto: estimated peak 61.2 GB ≤ cap 130 GB"
    on = decide_checkpointing("auto", 100, 192.7, 35.7)
    assert (on.value, on.enabled) == (
        "on",
        True,
    ) and on.reason == "auto: estimated peak 192.7 GB without it > cap 100 GB; 35.7 GB with it"
    assert decide_checkpointing("auto", 130, 130.0).value == "off"  # at the cap still fits
    assert decide_checkpointing("auto", 80, None).value == "on"  # no estimate: the safe side
    assert (
        decide_checkpointing("off", 10, 500.0, source="command line").line()
        == "gradient checkpointing: off (set by command line)"
    )
    assert decide_checkpointing("on", 500, 1.0).value == "on"


def test_older_configs_booleans_mean_on_and_off():
    assert Settings(gradient_checkpointing=True).gradient_checkpointing == "on"
    assert Settings(gradient_checkpointing=False).gradient_checkpointing == "off"
    assert (
        Settings(gradient_checkpointing="false").gradient_checkpointing == "off"
    )  # VLMFT_GRADIENT_CHECKPOINTING=false
    with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
        Settings(gradient_checkpointing="sometimes")


def test_the_plan_makes_auto_concrete_and_the_dry_run_says_why(processed_data, vlmft_home, tmp_path, monkeypatch):
    from vlmft_cli.reporting import NullReporter
    from vlmft_cli.settings import resolve_settings
    from vlmft_cli.training import dry_run
    from vlmft_cli.training.dry_run import describe
    from vlmft_cli.training.plan import plan_run

    flags = {
        "data": processed_data,
        "out": tmp_path,
        "home": vlmft_home,
        "gradient_checkpointing": "auto",
        "memory_cap_gb": 0.001,
    }
    plan = plan_run(resolve_settings(stage=1, profile="cpu", cli=flags, environ={}), NullReporter())
    assert plan.resolved.settings.gradient_checkpointing == "auto"  # what config.yaml stores: a resume decides again
    assert (
        plan.settings.gradient_checkpointing == "on"
    )  # what the model build reads: the tiny model's peak is above 1 MB

    def again(*args):
        raise AssertionError("the dry run estimated again what the plan's `auto` already had")

    # The plan's estimate is reused: neither the meta-device model nor the epoch's batch plan again.
    monkeypatch.setattr(dry_run, "model_shape", again)
    monkeypatch.setattr(dry_run, "largest_micro_batch", again)
    document = describe(plan)
    choice = document["gradient_checkpointing"]
    assert (choice["asked"], choice["value"]) == ("auto", "on") and choice["peak_off_gb"] > 0.001
    assert choice["reason"].startswith("auto: estimated peak ") and "> cap 0.001 GB" in choice["reason"]
    memory = document["memory_estimate"]
    assert memory["micro_batch"]["rows"] >= 1 and memory["model"]["lora_targets"] == 7 * memory["model"]["layers"]


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    print(json.dumps({mode: measure(Path(sys.argv[1]), mode) for mode in ("off", "on")}))
