"""Each Qwen backend end to end on the synthetic data, through the library API: stage 1 → stage 2 from the
stage-1 adapter, resume, evaluation with generation, merge into a plain transformers model, and export."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmft_cli import runs
from vlmft_cli.backends import backend_for
from vlmft_cli.errors import ConfigError
from vlmft_cli.reporting import RecordingReporter
from vlmft_cli.settings import SettingsInput
from vlmft_cli.training.recipe import TrainRequest, train

pytestmark = pytest.mark.slow

FAST = {"global_batch_size": 2, "save_steps": 1, "dataloader_workers": 0, "learning_rate": 1e-3}
STEPS = {1: 2, 2: 2}


def train_request(data, out, home, stage, model, **cli):
    steps = {"max_steps": STEPS[stage], "eval_steps": STEPS[stage]}  # evaluating once per run keeps this fast
    settings = {"data": data, "out": out, "home": home, "model": model, **steps, **FAST, **cli}
    return TrainRequest(settings=SettingsInput(stage=stage, profile="cpu", flags=settings, environ={}))


def csv_rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def adapter(checkpoint):
    return load_file(checkpoint.path / "adapter_model.safetensors")


@pytest.fixture(scope="module", params=["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def curriculum(request, processed_data, vlmft_home, tmp_path_factory):
    model = request.param
    out = tmp_path_factory.mktemp("qwen-experiments")
    reporter = RecordingReporter()
    one = train(train_request(processed_data, out, vlmft_home, 1, model), reporter)
    two = train(train_request(processed_data, out, vlmft_home, 2, model), reporter)
    return model, out, one, two, reporter


def test_stage1_packs_the_qas_of_each_video(curriculum):
    model, _, one, _, reporter = curriculum
    assert one.status == "finished" and one.global_step == STEPS[1]
    info = runs.Run(one.run_dir).record().to_json()
    backend_name = {"tiny-qwen2.5-vl": "qwen2_5_vl", "tiny-qwen3-vl": "qwen3_vl"}[model]
    assert info["backend"] == backend_name and info["model"] == model
    assert info["pack"]["mode"] == "shared-prefix" and not info["pack"].get("dropped")
    assert not any("--pack none" in warning for warning in reporter.warnings)
    rows = csv_rows(runs.Run(one.run_dir).logs_dir / "train_metrics.csv")
    assert [int(row["step"]) for row in rows] == [1, 2]
    assert all(float(row["loss"]) > 0 for row in rows)
    kept = runs.Run(one.run_dir).checkpoints()
    assert [c.step for c in kept] == [1, 2] and all(c.problem(deep=True) is None for c in kept)


def test_asking_to_pack_with_an_attention_that_ignores_the_mask_is_refused(curriculum, processed_data, vlmft_home, tmp_path, monkeypatch):
    model = curriculum[0]
    monkeypatch.setattr(type(backend_for(model)), "supports_block_mask", lambda self, implementation: False)
    with pytest.raises(ConfigError, match="cannot train with --pack shared-prefix: model backend"):
        train(train_request(processed_data, tmp_path, vlmft_home, 1, model, pack="shared-prefix"))


def test_stage2_continues_the_stage1_adapter(curriculum):
    _, _, one, two, _ = curriculum
    assert two.status == "finished" and two.global_step == STEPS[2]
    info = runs.Run(two.run_dir).record().to_json()
    best = runs.best_checkpoint(runs.Run(one.run_dir).good_checkpoints())
    assert info["parent"]["run"] == one.run_dir.name and info["parent"]["checkpoint"] == str(best.path)
    eval_rows = csv_rows(runs.Run(two.run_dir).logs_dir / "eval_metrics.csv")
    assert eval_rows and float(eval_rows[-1]["loss"]) > 0
    # Training moved the adapter away from where stage 1 left it.
    last = runs.Run(two.run_dir).good_checkpoints()[-1]
    before, after = adapter(best), adapter(last)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[key], after[key]) for key in before)


def test_resume_continues_exactly_where_a_checkpoint_left_off(curriculum, tmp_path):
    _, _, one, _, _ = curriculum
    original = runs.Run(one.run_dir).good_checkpoints()[-1]
    copy = tmp_path / "experiments" / one.run_dir.name
    shutil.copytree(one.run_dir, copy)
    shutil.rmtree(copy / "checkpoints" / original.path.name)  # as if killed before the last save
    runs.Run(copy).update_record(status="running")
    result = train(TrainRequest(settings=SettingsInput(flags={"out": tmp_path / "experiments"}, environ={}), resume="latest"))
    assert result.status == "finished" and result.global_step == original.step
    resumed = runs.Run(copy).good_checkpoints()[-1]
    assert resumed.step == original.step
    expected, got = adapter(original), adapter(resumed)
    for key, tensor in expected.items():
        assert (got[key] - tensor).abs().max() <= 1e-6 * max(1.0, float(tensor.abs().max())), key
    start = adapter(runs.Run(copy).good_checkpoints()[-2])
    assert any(not torch.equal(start[key], got[key]) for key in got)  # the resumed step did train
    assert runs.Run(copy).record().to_json()["resumed"][-1]["step"] == original.step - 1


def test_evaluation_with_generation_answers_every_turn(curriculum, processed_data, vlmft_home, tmp_path):
    from vlmft_cli.evaluate.runner import EvalRequest, evaluate_checkpoint

    _, out, _, two, _ = curriculum
    eval_request = EvalRequest(
        data=processed_data,
        checkpoint=str(two.run_dir),
        stage=2,
        generate=True,
        batch_size=2,
        max_new_tokens=4,
        out=tmp_path,
        runs_dir=out,
        home=vlmft_home,
    )
    report = evaluate_checkpoint(eval_request, RecordingReporter())
    metrics = json.loads((report.output_dir / "metrics.json").read_text())
    source = [json.loads(line) for line in (processed_data / "stage2" / "val.jsonl").read_text().splitlines()]
    qas = sum(len(line["conversations"]) // 2 for line in source)
    assert report.predictions == metrics["overall"]["qas"] == qas
    predictions = [json.loads(line) for line in (report.output_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == qas and all(isinstance(p["prediction"], str) for p in predictions)
    # The same inputs as at training time: the loss the trainer measured at its last step.
    trained = next(
        float(r["loss"])
        for r in csv_rows(runs.Run(two.run_dir).logs_dir / "eval_metrics.csv")
        if int(r["step"]) == STEPS[2]
    )
    assert metrics["overall"]["loss"] == pytest.approx(trained, rel=1e-5)


def test_merged_model_loads_with_transformers_and_computes_what_the_adapter_does(curriculum, vlmft_home, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from vlmft_cli.backends import backend_for
    from vlmft_cli.ckpt.merge import merge_checkpoint
    from vlmft_cli.model_backend import LoadOptions, Turn
    from vlmft_cli.pipeline.dataset import load_frames

    model_name, _, _, two, _ = curriculum
    checkpoint = runs.Run(two.run_dir).good_checkpoints()[-1]
    destination = tmp_path / "merged"
    result = merge_checkpoint(checkpoint, destination, home=vlmft_home, precision="fp32")
    backend = backend_for(model_name)
    assert result.backend == backend.name
    merged = AutoModelForImageTextToText.from_pretrained(destination)
    assert type(merged).__name__ == backend.family.model_class
    assert not any("lora" in name for name, _ in merged.named_parameters())

    processor = backend.load_processor(str(destination), vlmft_home)
    base = backend.load(model_name, LoadOptions(precision="fp32"), vlmft_home)
    assert processor.frame_size == base.processor.frame_size and processor.system_prompt == base.processor.system_prompt
    adapted = PeftModel.from_pretrained(base.model, str(checkpoint.path)).eval()
    data = Path(runs.Run(two.run_dir).record().to_json()["data"]["dir"])
    first = json.loads((data / "stage2" / "val.jsonl").read_text().splitlines()[0])
    frames = load_frames(data, first["images"][:4])
    turns = [
        Turn("user", first["conversations"][0]["value"].replace("<image>\n", "")),
        Turn("assistant", first["conversations"][1]["value"]),
    ]
    batch = backend.collate([backend.encode(processor, frames, turns)], processor.pad_token_id)
    with torch.no_grad():
        expected = adapted(**batch).logits
        got = merged(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_export_carries_the_adapter_and_a_processor_that_loads_back(curriculum, vlmft_home, tmp_path):
    from vlmft_cli.backends import backend_for
    from vlmft_cli.ckpt.export import export_checkpoint

    model_name, _, _, two, _ = curriculum
    checkpoint = runs.Run(two.run_dir).good_checkpoints()[-1]
    result = export_checkpoint(checkpoint, tmp_path / "export", home=vlmft_home)
    assert {"adapter_model.safetensors", "tokenizer.json", "preprocessor_config.json", "README.md"} <= set(result.files)
    backend = backend_for(model_name)
    exported = backend.load_processor(str(tmp_path / "export"), vlmft_home)
    base = backend.load_processor(model_name, vlmft_home)
    assert (exported.frame_size, exported.system_prompt) == (base.frame_size, base.system_prompt)
