"""`bench step --random-init` builds each Qwen backend's real architecture (one layer of each tower, real
widths and vocabulary) with random weights and trains a step on the CPU: no download."""

import pytest

from vlmft_cli.bench.step import StepOptions, measure_step
from vlmft_cli.settings import resolve_settings


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "params_at_least"),
    [("Qwen/Qwen2.5-VL-7B-Instruct", 1.0e9), ("Qwen/Qwen3-VL-8B-Instruct", 1.2e9)],
)
def test_real_qwen_architectures_take_a_training_step(vlmft_home, model, params_at_least):
    resolved = resolve_settings(stage=1, profile="cpu", cli={"model": model, "home": vlmft_home}, environ={})
    variant = model.split("/")[-1]
    document = measure_step(resolved, StepOptions(random_init=True, variant=variant, layers=1, steps=1, measure_matmul=False))
    entry = document.as_dict()["entries"][0]
    assert entry["key"]["layers"] == 1 and variant in str(entry["key"]["model"])
    assert entry["metrics"]["step_s"] > 0 and entry["metrics"]["tokens_per_s"] > 0
    parameters = entry["details"]["parameters"]
    assert parameters["total"] >= params_at_least and 0 < parameters["trainable"] < parameters["total"]
