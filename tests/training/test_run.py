"""End-to-end training on the tiny model and synthetic data, through the library API."""

import csv
import dataclasses
import hashlib
import math
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from vlmft_cli import runs
from vlmft_cli.errors import CheckpointError
from vlmft_cli.reporting import RecordingReporter
from vlmft_cli.settings import SettingsInput
from vlmft_cli.training.recipe import TrainRequest, train

FAST = {"global_batch_size": 4, "save_steps": 3, "dataloader_workers": 0, "learning_rate": 1e-3}


def request(data, out, home, stage, init_from=None, **cli):
    flags = {"data": data, "out": out, "home": home, **FAST, **cli}
    return TrainRequest(settings=SettingsInput(stage=stage, profile="cpu", flags=flags, environ={}), init_from=init_from)


def rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def curriculum(processed_data, vlmft_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    reporter = RecordingReporter()
    one = train(request(processed_data, out, vlmft_home, 1), reporter)
    two = train(request(processed_data, out, vlmft_home, 2), reporter)
    return out, one, two, reporter


def test_stage1_run_folder_and_metrics(curriculum):
    out, one, _, _ = curriculum
    assert one.status == "finished"
    run = runs.Run(one.run_dir)
    record = run.record()
    assert record.status == "finished" and record.stage == 1 and record.backend == "internvl3"
    train_file = record.data.files["train"]
    assert train_file.sha256 == hashlib.sha256(Path(train_file.path).read_bytes()).hexdigest() and record.versions["transformers"]
    config = yaml.safe_load((run.path / "config.yaml").read_text())
    assert config["settings"]["learning_rate"] == 1e-3 and config["sources"]["learning_rate"] == "command line"
    assert config["sources"]["max_frames"] == "stage 1 default"
    # Stage 1 packs by default: one sequence per video, the batch still counted in QAs.
    assert config["settings"]["pack"] == "shared-prefix" and config["sources"]["pack"] == "stage 1 default"
    assert record.pack.mode == "shared-prefix" and record.pack.accumulation == 1
    train_rows = rows(run.logs_dir / "train_metrics.csv")
    assert list(train_rows[0]) == ["step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "step_time_s", "peak_memory_gb"]
    # 87 stage-1 QAs at 4 per step: 22 steps, and the schedule ends with the data (the reference ran past it).
    assert [int(r["step"]) for r in train_rows] == list(range(1, 23)) and one.global_step == 22
    assert float(train_rows[-1]["lr"]) < 0.05 * 1e-3 and float(train_rows[-1]["epoch"]) == 1.0
    assert float(train_rows[-1]["loss"]) < float(train_rows[0]["loss"])
    eval_rows = rows(run.logs_dir / "eval_metrics.csv")
    assert {"step", "loss", "perplexity", "loss_affordance", "loss_success"} <= set(eval_rows[0])
    assert one.eval_metrics["samples"] == 20  # evaluation of a packed run stays one QA per sample
    assert math.isclose(float(eval_rows[0]["perplexity"]), math.exp(float(eval_rows[0]["loss"])), rel_tol=1e-6)
    # keep_last 3 plus the best; every kept checkpoint is complete and deep-verifies.
    kept = run.checkpoints()
    assert kept[-1].step == 22 and 3 <= len(kept) <= 4
    assert all(c.problem(deep=True) is None for c in kept)
    assert not (kept[-1].path / "training_args.bin").exists()  # a pickle we never write out


def test_stage2_starts_from_stage1_and_records_lineage(curriculum, vlmft_home):
    out, one, two, reporter = curriculum
    assert two.status == "finished"
    parent = runs.Run(two.run_dir).record().parent
    best = runs.best_checkpoint(runs.Run(one.run_dir).good_checkpoints())
    assert parent.run == one.run_dir.name and parent.checkpoint == str(best.path.resolve())
    assert any("Stage 2 starts from the newest finished stage-1 run" in m for m in reporter.infos)
    eval_rows = rows(runs.Run(two.run_dir).logs_dir / "eval_metrics.csv")
    assert "loss_planning" in eval_rows[0] or "loss_affordance" in eval_rows[0]  # task types kept in stage 2


def test_stage2_model_carries_the_stage1_adapter(curriculum, processed_data, vlmft_home):
    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.lora_model import build_model

    out, one, _, _ = curriculum
    checkpoint = runs.best_checkpoint(runs.Run(one.run_dir).good_checkpoints())
    settings = request(processed_data, out, vlmft_home, 2).settings.resolve().settings
    model, _ = build_model(settings, backend_for(settings.model), select_attention("sdpa"), device="cpu", init_adapter=checkpoint.path)
    saved = load_file(checkpoint.path / "adapter_model.safetensors")
    state = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(saved) == len(state) > 0
    for key, tensor in saved.items():
        live = next(v for k, v in state.items() if k.replace(".default", "") == key)
        assert (live == tensor).all()
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_stage2_without_stage1_says_what_to_do(processed_data, vlmft_home, tmp_path):
    with pytest.raises(CheckpointError, match="no finished stage-1 run"):
        train(request(processed_data, tmp_path, vlmft_home, 2))


def test_unavailable_attention_falls_back_and_eager_reaches_the_model(processed_data, vlmft_home, tmp_path):
    reporter = RecordingReporter()
    result = train(request(processed_data, tmp_path, vlmft_home, 1, attention="flash-attn-sm121", max_steps=1), reporter)
    assert runs.Run(result.run_dir).record().attention == "sdpa"
    assert any("falling back to sdpa" in w for w in reporter.warnings)
    result = train(request(processed_data, tmp_path, vlmft_home, 1, attention="eager", max_steps=1))
    assert runs.Run(result.run_dir).record().attention == "eager"
    assert "attention eager" in (result.run_dir / "logs" / "training.log").read_text()


def test_memory_cap_breach_stops_with_a_checkpoint(processed_data, vlmft_home, tmp_path):
    result = train(request(processed_data, tmp_path, vlmft_home, 1, memory_cap_gb=0.01))
    assert result.status == "interrupted" and result.global_step == 1
    record = runs.Run(result.run_dir).record()
    assert record.status == "interrupted" and record.stop_reason.startswith("memory cap: process memory")
    assert runs.Run(result.run_dir).good_checkpoints()[-1].step == 1
    assert "vlmft ckpt resume --latest" in result.message


def test_dry_run_counts_tokens_and_trains_nothing(processed_data, vlmft_home, tmp_path):
    result = train(dataclasses.replace(request(processed_data, tmp_path, vlmft_home, 1), dry_run=True))
    plan = result.plan
    assert result.status == "dry-run" and not any(tmp_path.iterdir())
    assert plan["data"]["train"]["examples"] == 87 and plan["optimizer_steps"] == 22
    assert plan["data"]["train"]["tokens_per_example"]["min"] > 4 * 18  # four frames of 18 tokens and text
    assert plan["memory_estimate"]["fits"] is True
    # Packed (the stage-1 default): every video's frames once per step it appears in. The tiny model's
    # frames are 18 tokens, so the saving is smaller than with real 256-token frames.
    assert plan["pack"] == "shared-prefix" and plan["tokens_unpacked"] == plan["data"]["train"]["tokens_total"]
    assert plan["tokens_packed"] < 0.7 * plan["tokens_unpacked"]
    assert plan["packing_ratio"] == round(plan["tokens_packed"] / plan["tokens_unpacked"], 4)
    assert plan["packing"]["mean_qas_per_video"] == round(87 / 24, 3)

    unpacked = train(dataclasses.replace(request(processed_data, tmp_path, vlmft_home, 1, pack="none"), dry_run=True)).plan
    assert unpacked["pack"] == "none" and unpacked["padding_share"] < 0.10  # length grouping
    assert unpacked["tokens_packed"] == plan["tokens_packed"]  # what packing would save is shown either way


def test_latest_skips_a_corrupt_checkpoint(curriculum, tmp_path):
    import shutil

    out, one, _, _ = curriculum
    copy = tmp_path / "exp"
    shutil.copytree(one.run_dir, copy / one.run_dir.name)
    newest = runs.Run(copy / one.run_dir.name).checkpoints()[-1]
    with (newest.path / "adapter_model.safetensors").open("r+b") as handle:
        handle.truncate(100)
    reporter = RecordingReporter()
    found = runs.latest_checkpoint(copy, reporter=reporter)
    older = runs.Run(copy / one.run_dir.name).checkpoints()[-2]
    assert found == older  # the next older one, not any older one
    assert "skipping checkpoint" in reporter.warnings[0] and "adapter_model.safetensors" in reporter.warnings[0]
    assert found.problem(deep=True) is None
