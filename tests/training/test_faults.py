"""Faults during training: a checkpoint write that fails (disk full) and hostile lines in the data."""

import errno
import json
import shutil

import pytest
import torch

from vlmft_cli import runs
from vlmft_cli.errors import CheckpointError
from vlmft_cli.reporting import RecordingReporter
from vlmft_cli.settings import SettingsInput
from vlmft_cli.training.recipe import TrainRequest, train


def request(data, out, home, **cli):
    values = {"data": data, "out": out, "home": home, "global_batch_size": 8, "save_steps": 2, "max_steps": 6, "dataloader_workers": 0, **cli}
    return TrainRequest(settings=SettingsInput(stage=1, profile="cpu", flags=values, environ={}))


def test_disk_full_during_a_checkpoint_keeps_the_previous_one_resumable(processed_data, vlmft_home, tmp_path, monkeypatch):
    real_write_marker = runs.write_marker

    def full_disk(checkpoint_dir, step, extra=None):
        if step == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_marker(checkpoint_dir, step, extra)

    monkeypatch.setattr(runs, "write_marker", full_disk)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint 4 .*No space left on device; the earlier checkpoints are intact"):
        train(request(processed_data, tmp_path, vlmft_home))
    (run,) = runs.list_runs(tmp_path)
    assert run.status == "failed" and "No space left on device" in run.record().error
    assert [c.step for c in run.good_checkpoints()] == [2]
    assert run.good_checkpoints()[0].problem(deep=True) is None

    monkeypatch.setattr(runs, "write_marker", real_write_marker)
    reporter = RecordingReporter()
    result = train(TrainRequest(settings=SettingsInput(flags={"out": tmp_path}, environ={}), resume="latest"), reporter)
    assert result.status == "finished" and result.global_step == 6
    assert any("Resumed from checkpoint: step=2" in m for m in reporter.infos)
    assert not (run.checkpoints_dir / runs.STAGING_DIR).exists()


def test_hostile_lines_are_counted_and_never_read(processed_data, vlmft_home, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(processed_data, data, symlinks=True)
    train_file = data / "stage1" / "train.jsonl"
    lines = train_file.read_text().splitlines()
    good = json.loads(lines[0])
    escaping = {**good, "images": ["../../etc/passwd", *good["images"][1:]]}
    absolute = {**good, "images": ["/etc/passwd", *good["images"][1:]]}
    wrong_type = {**good, "conversations": "hello"}
    lines[1:1] = [json.dumps(escaping), json.dumps(absolute), "{not json", json.dumps(wrong_type)]
    train_file.write_text("\n".join(lines) + "\n")
    reporter = RecordingReporter()
    result = train(request(data, tmp_path / "exp", vlmft_home, max_steps=1), reporter)
    assert result.status == "finished"
    warning = next(w for w in reporter.warnings if "rejected" in w)
    assert warning.startswith("4 line(s) of") and f"{train_file}:2: image path '../../etc/passwd' climbs out of the data root" in warning


# --- a checkpoint write that torch.save fails (disk full: "basic_ios::clear") -----------------------------


@pytest.mark.slow
def test_torch_save_failing_is_one_error_with_staging_cleaned(processed_data, vlmft_home, tmp_path, monkeypatch):
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "checkpoint-4" in str(f):
            raise RuntimeError("basic_ios::clear: iostream error")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint 4 .*basic_ios::clear: iostream error; the earlier checkpoints are intact"):
        train(request(processed_data, tmp_path, vlmft_home))
    (run,) = runs.list_runs(tmp_path)
    assert run.status == "failed" and "basic_ios::clear" in run.record().error
    assert not (run.checkpoints_dir / runs.STAGING_DIR).exists()
    assert [c.step for c in run.good_checkpoints()] == [2] and run.good_checkpoints()[0].problem(deep=True) is None

    monkeypatch.setattr(torch, "save", real_save)
    result = train(TrainRequest(settings=SettingsInput(flags={"out": tmp_path}, environ={}), resume="latest"))
    assert result.status == "finished" and result.global_step == 6


# --- a loss or gradient norm that turns NaN/inf --------------------------------------------------------


class InfiniteGradient(torch.autograd.Function):
    """The identity forward (a finite loss), an infinite gradient backward."""

    @staticmethod
    def forward(ctx, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "at_step", "what"), [("nan-loss", 4, "loss"), ("inf-gradient", 3, "gradient norm")])
def test_a_non_finite_step_stops_the_run_and_is_never_saved(processed_data, vlmft_home, tmp_path, monkeypatch, fault, at_step, what):
    from safetensors.torch import load_file

    from vlmft_cli.training.trainer import CurriculumTrainer

    real_loss = CurriculumTrainer.compute_loss

    def faulty(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = real_loss(self, model, inputs, return_outputs, num_items_in_batch)
        if self.state.global_step + 1 == at_step:  # the micro-batches of optimizer step `at_step`
            loss = loss * float("nan") if fault == "nan-loss" else InfiniteGradient.apply(loss)
        return loss

    monkeypatch.setattr(CurriculumTrainer, "compute_loss", faulty)
    result = train(request(processed_data, tmp_path, vlmft_home))  # saves every 2 steps, 6 steps
    assert result.status == "failed" and result.stop == "non-finite" and result.exit_code == 5
    assert result.global_step == at_step and f"non-finite {what} (NaN or inf) at step {at_step}" in result.message
    run = runs.Run(result.run_dir)
    assert [c.step for c in run.good_checkpoints()] == [2] and result.last_checkpoint == run.good_checkpoints()[-1].path
    record = run.record()
    assert record.status == "failed" and f"at step {at_step}" in record.stop_reason and f"at step {at_step}" in record.error
    for checkpoint in run.checkpoints():
        assert all(bool(torch.isfinite(t).all()) for t in load_file(checkpoint.path / "adapter_model.safetensors").values())


# --- frames that fail at decode time -------------------------------------------------------------------


def lines_by_video(jsonl):
    by_video = {}
    for number, line in enumerate(jsonl.read_text().splitlines(), start=1):
        entry = json.loads(line)
        by_video.setdefault(entry["metadata"]["video_id"], (entry["images"], []))[1].append(number)
    return by_video


def break_after_planning(monkeypatch, broken):
    """Replace frames (path: bytes) once the data was read and checked (the plan phase, whose load-time
    checks would reject them), so only decoding finds them; the returned function puts them back."""
    from vlmft_cli.training import recipe

    real_setup = recipe._setup
    originals = {path: path.read_bytes() for path in broken}

    def setup(*args, **kwargs):
        for path, content in broken.items():
            path.write_bytes(content)
        return real_setup(*args, **kwargs)

    monkeypatch.setattr(recipe, "_setup", setup)
    return lambda: [path.write_bytes(content) for path, content in originals.items()]


@pytest.mark.slow
def test_unreadable_frames_are_skipped_counted_and_stop_the_run_past_the_limit(processed_data, vlmft_home, tmp_path, monkeypatch):
    from test_bad_samples import png_claiming

    data = tmp_path / "data"
    shutil.copytree(processed_data, data, symlinks=True)
    train_videos = sorted(lines_by_video(data / "stage1" / "train.jsonl").values(), key=lambda video: video[1][0])
    (images_a, lines_a), (images_b, lines_b) = train_videos[3], train_videos[10]
    (val_images, val_lines), *_ = lines_by_video(data / "stage1" / "val.jsonl").values()

    restore = break_after_planning(monkeypatch, {  # the final frame, which is always used
        data / images_a[-1]: (data / images_a[-1]).read_bytes()[:150],  # truncated
        data / images_b[-1]: png_claiming(100_000, 100_000),  # a decompression bomb
        data / val_images[-1]: b"",  # an empty file
    })  # fmt: skip
    bad_lines = sorted(lines_a + lines_b)
    reporter = RecordingReporter()
    stopped = train(request(data, tmp_path / "exp", vlmft_home, max_bad_samples=2, max_steps=None, save_steps=4), reporter)
    assert stopped.status == "interrupted" and stopped.stop == "bad-samples" and stopped.exit_code == 4
    run = runs.Run(stopped.run_dir)
    assert run.status == "interrupted" and run.good_checkpoints()[-1].step == stopped.global_step  # saved at the stop
    counted = stopped.bad_samples
    assert counted > 2 and f"{counted} unreadable training samples, more than max_bad_samples 2 (first: stage1/train.jsonl:" in stopped.message
    first = [int(part.split(":")[1]) for part in stopped.message.split("(first: ")[1].split(")")[0].split(", ")]
    assert set(first) <= set(bad_lines) and "--max-bad-samples" in stopped.message
    log = (run.logs_dir / "training.log").read_text()
    assert all(f"stage1/train.jsonl:{line} " in log for line in first)

    restore()  # good again for the resume's plan, broken again when it trains
    resumed = train(TrainRequest(settings=SettingsInput(flags={"out": tmp_path / "exp", "max_bad_samples": 50}, environ={}), resume="latest"), reporter)
    assert resumed.status == "finished" and resumed.exit_code == 0 and resumed.global_step == 11  # 87 QAs, 8 per step
    entries = runs.Run(resumed.run_dir).record().bad_samples
    assert sorted(e["line"] for e in entries if e["split"] == "train") == bad_lines and resumed.bad_samples == len(bad_lines)
    assert sorted(e["line"] for e in entries if e["split"] == "val") == sorted(val_lines)  # evaluation skips them too
    for entry in entries:
        broken, why = (val_images[-1], "") if entry["split"] == "val" else (images_a[-1], "") if entry["line"] in lines_a else (images_b[-1], "DecompressionBombError")
        assert entry["file"] == f"stage1/{entry['split']}.jsonl" and str(data / broken) in entry["reason"] and why in entry["reason"]
    assert f"{len(bad_lines)} unreadable training sample(s) skipped" in resumed.message


@pytest.mark.slow
def test_a_micro_batch_with_every_sample_unreadable_trains_nothing(processed_data, vlmft_home, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    data = tmp_path / "data"
    shutil.copytree(processed_data, data, symlinks=True)

    # Every training frame: each micro-batch is left empty, so every step has no sample.
    frames = {data / image for images, _ in lines_by_video(data / "stage1" / "train.jsonl").values() for image in images}
    break_after_planning(monkeypatch, dict.fromkeys(frames, b"not a jpeg"))
    flags = {"pack": "none", "micro_batch_size": 1, "global_batch_size": 2, "save_steps": 1, "max_steps": 3, "max_bad_samples": 1000, "gradient_checkpointing": True}
    result = train(request(data, tmp_path / "exp", vlmft_home, **flags))
    assert result.status == "finished" and result.bad_samples == 6  # 2 samples a step, 3 steps
    run = runs.Run(result.run_dir)
    first, last = (load_file(run.checkpoints_dir / f"checkpoint-{step}" / "adapter_model.safetensors") for step in (1, 3))
    # No sample, no update: not even weight decay or momentum moved the weights.
    assert first.keys() == last.keys() and all(torch.equal(first[key], last[key]) for key in first)
    rows = (run.logs_dir / "train_metrics.csv").read_text().splitlines()[1:]
    assert [float(row.split(",")[2]) for row in rows] == [0.0, 0.0, 0.0]
