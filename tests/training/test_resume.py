"""Resume reconciles: what a user hits when continuing a run, each as a test through the library API.

One short stage-1 run (6 steps, checkpoints at 3 and 6) is trained once per module; every test works on a
copy of it, made "interrupted at step 3" by dropping its final checkpoint, unless it needs it finished.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmft_cli import runs
from vlmft_cli.errors import CheckpointError, ConfigError, DataError
from vlmft_cli.reporting import RecordingReporter
from vlmft_cli.run_lock import LOCK_FILE, run_lock
from vlmft_cli.settings import SettingsInput
from vlmft_cli.training.callbacks import loss_change_message
from vlmft_cli.training.recipe import train
from vlmft_cli.training.request import TrainRequest

FAST = {"global_batch_size": 4, "save_steps": 3, "max_steps": 6, "dataloader_workers": 0, "learning_rate": 1e-3}


def settings(**flags):
    return SettingsInput(stage=flags.pop("stage", None), profile=flags.pop("profile", None), flags=flags, environ={})


def resume(out, ref="latest", reporter=None, **kwargs):
    flags = kwargs.pop("flags", {})
    return train(TrainRequest(settings=settings(out=out, **flags), resume=ref, **kwargs), reporter or RecordingReporter())


@pytest.fixture(scope="module")
def finished_run(processed_data, vlmft_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    data = tmp_path_factory.mktemp("data") / "data"
    shutil.copytree(processed_data, data)
    result = train(TrainRequest(settings=settings(stage=1, profile="cpu", data=data, out=out, home=vlmft_home, **FAST)))
    assert result.status == "finished" and result.global_step == 6
    return runs.Run(result.run_dir), data


@pytest.fixture
def copy_run(finished_run, tmp_path):
    """A copy of the finished run under a fresh experiments folder (same data folder)."""

    def make(interrupted=True):
        run, _ = finished_run
        out = tmp_path / "experiments"
        copy = runs.Run(out / run.name)
        shutil.copytree(run.path, copy.path)
        if interrupted:
            shutil.rmtree(copy.checkpoints_dir / "checkpoint-6")
            copy.update_record(status="interrupted", stop_reason="received SIGTERM", global_step=3)
        return out, copy

    return make


def adapter(checkpoint):
    return load_file(checkpoint.path / "adapter_model.safetensors")


def test_a_resumed_run_ends_as_the_uninterrupted_one(finished_run, copy_run, monkeypatch):
    from vlmft_cli import fsutil

    out, copy = copy_run()
    real_sha256, hashed = fsutil.sha256_file, []
    monkeypatch.setattr(fsutil, "sha256_file", lambda path, *a, **k: (hashed.append(str(path)) if str(path).endswith(".jsonl") else None) or real_sha256(path, *a, **k))
    reporter = RecordingReporter()
    result = resume(out, reporter=reporter)
    data_files = copy.record().data.files
    assert sorted(hashed) == sorted(str(f.path) for f in data_files.values())  # each data file read once for its hash
    for entry in data_files.values():
        assert entry.sha256 == hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
    assert result.status == "finished" and result.global_step == 6
    original, again = adapter(finished_run[0].checkpoints()[-1]), adapter(copy.checkpoints()[-1])
    assert all(torch.allclose(original[k], again[k], atol=1e-6) for k in original)
    assert any(f"Resuming run {copy.name}, the newest run that is not finished (status interrupted: received SIGTERM)" in m for m in reporter.infos)
    assert copy.record().resumed[-1].step == 3 and not (copy.path / LOCK_FILE).exists()


def test_safe_flags_are_applied_and_different_run_flags_refused(copy_run):
    out, copy = copy_run()
    before = copy.record()
    with pytest.raises(ConfigError, match=r"would train a different run: learning_rate 0\.001 → 0\.0005 \(command line\)") as refused:
        resume(out, flags={"learning_rate": 5e-4, "max_steps": 8})
    assert "--force-new-settings" in refused.value.hint
    assert copy.record() == before and [c.step for c in copy.checkpoints()] == [3]  # nothing trained, nothing written

    result = resume(out, flags={"max_steps": 8})
    assert result.status == "finished" and result.global_step == 8
    assert copy.record().resumed[-1].applied == {"max_steps": [6, 8]}


def test_force_new_settings_accepts_and_records_them(copy_run):
    out, copy = copy_run()
    result = resume(out, flags={"learning_rate": 5e-4}, force_new_settings=True)
    assert result.status == "finished"
    assert copy.record().resumed[-1].forced == {"learning_rate": [1e-3, 5e-4]}


def test_dry_run_with_resume_trains_nothing(copy_run):
    out, copy = copy_run()
    result = resume(out, flags={"max_steps": 8}, dry_run=True)
    assert result.status == "dry-run" and result.plan["resume"] == ["resume applies max_steps 6 → 8 (command line)"]
    assert [c.step for c in copy.checkpoints()] == [3] and copy.status == "interrupted"


def test_a_finished_run_is_left_alone(copy_run):
    out, copy = copy_run(interrupted=False)
    steps = [c.step for c in copy.checkpoints()]
    result = resume(out, ref=str(copy.path))
    assert result.status == "already-finished" and "is finished (step 6); nothing to resume" in result.message
    assert [c.step for c in copy.checkpoints()] == steps and copy.record().resumed == []
    with pytest.raises(CheckpointError, match="all 1 runs there are finished"):
        resume(out)


def test_a_final_checkpoint_never_marked_finished_is_marked_not_trained(copy_run):
    out, copy = copy_run(interrupted=False)
    copy.update_record(status="running")  # killed between the final save and "finished"
    mtime = (copy.checkpoints()[-1].path / "adapter_model.safetensors").stat().st_mtime_ns
    result = resume(out)
    assert result.status == "already-finished" and "never marked finished; marked finished now" in result.message
    assert copy.status == "finished" and [c.step for c in copy.checkpoints()][-1] == 6
    assert (copy.checkpoints()[-1].path / "adapter_model.safetensors").stat().st_mtime_ns == mtime


def test_latest_takes_the_newest_unfinished_run(copy_run, finished_run):
    out, older = copy_run()
    newer = runs.Run(out / "stage1_29990101-000000")
    shutil.copytree(finished_run[0].path, newer.path)
    newer.update_record(created="2999-01-01T00:00:00Z")  # the newest run, and finished
    reporter = RecordingReporter()
    result = resume(out, reporter=reporter)
    assert result.run_dir == older.path and result.status == "finished"


def test_changed_data_is_refused(copy_run, finished_run, tmp_path):
    out, copy = copy_run()
    data = tmp_path / "changed"
    shutil.copytree(finished_run[1], data)
    train_file = data / "stage1" / "train.jsonl"
    lines = train_file.read_text().splitlines(keepends=True)
    train_file.write_text("".join(lines[:-1]))
    with pytest.raises(ConfigError, match=r"different run: data train sha256 .* \(data folder\)"):
        resume(out, flags={"data": data})
    result = resume(out, flags={"data": data}, force_new_settings=True)
    assert result.status == "finished"
    assert set(copy.record().resumed[-1].forced) == {"data train sha256"}


@pytest.mark.parametrize("victim", ["optimizer.pt", "adapter_model.safetensors"])
def test_a_same_size_corruption_falls_back_to_the_older_checkpoint(copy_run, victim):
    out, copy = copy_run(interrupted=False)
    copy.update_record(status="interrupted")
    newest = copy.checkpoints()[-1]
    path = newest.path / victim
    raw = bytearray(path.read_bytes())
    for offset in range(len(raw) - 64, len(raw) - 32):  # tensor bytes near the end: same size, wrong values
        raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
    reporter = RecordingReporter()
    result = resume(out, reporter=reporter)
    assert any(f"skipping checkpoint {newest.path}" in w and "sha256" in w for w in reporter.warnings)
    assert result.status == "finished" and copy.record().resumed[-1].step == 3
    assert copy.record().resumed[-1].skipped[0].startswith("checkpoint-6: ")


def test_a_bad_pickle_with_a_matching_marker_falls_back(copy_run):
    out, copy = copy_run(interrupted=False)
    copy.update_record(status="interrupted")
    newest = copy.checkpoints()[-1]
    (newest.path / "optimizer.pt").write_bytes(b"\x80\x04not a pickle at all")
    runs.write_marker(newest.path, newest.step)  # the marker agrees with the bad file
    reporter = RecordingReporter()
    result = resume(out, reporter=reporter)
    assert any("weights_only=True" in w for w in reporter.warnings)
    assert result.status == "finished" and copy.record().resumed[-1].step == 3


def test_a_second_process_is_refused_and_a_stale_lock_taken_over(copy_run):
    out, copy = copy_run()
    with run_lock(copy.path, command="ckpt resume"), pytest.raises(CheckpointError, match=rf"run {copy.name} is being trained by PID {os.getpid()} on .* \(ckpt resume\)"):
        resume(out)
    assert copy.status == "interrupted"  # the refused process marked nothing
    (copy.path / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "since": "2026-01-01T00:00:00Z", "command": "train"}))
    reporter = RecordingReporter()
    assert resume(out, reporter=reporter).status == "finished"
    assert any("taking over the lock" in w and "PID 999999" in w for w in reporter.warnings)


def test_relative_data_resumes_from_another_folder_and_moved_data_with_data(finished_run, processed_data, vlmft_home, tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(processed_data, project / "data")
    monkeypatch.chdir(project)
    flags = {**FAST, "max_steps": 4, "save_steps": 2}
    first = train(TrainRequest(settings=settings(stage=1, profile="cpu", data="data", out="experiments", home=vlmft_home, **flags)))
    run = runs.Run(first.run_dir)
    assert run.record().data.dir == str(project / "data")  # recorded absolute
    shutil.rmtree(run.checkpoints_dir / "checkpoint-4")
    run.update_record(status="interrupted")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (project / "data").rename(tmp_path / "moved")
    with pytest.raises(DataError, match=r"data folder of run .* is not there") as missing:
        resume(project / "experiments")
    assert "pass --data DIR" in missing.value.hint
    result = resume(project / "experiments", flags={"data": tmp_path / "moved"})
    assert result.status == "finished" and result.global_step == 4
    assert run.record().data.dir == str(tmp_path / "moved")


def test_resume_loss_check_reports_the_signed_change():
    assert loss_change_message(1.0, 0.983) == "loss after resume 0.9830 vs 1.0000 before it (-1.7%)"
    assert loss_change_message(2.0, 2.05).endswith("(+2.5%)")


def test_the_record_keeps_unknown_keys_and_clears_what_is_set_to_none(tmp_path):
    from vlmft_cli.run_record import read_record, update_record

    (tmp_path / "run.json").write_text(json.dumps({"status": "interrupted", "stop_reason": "received SIGTERM", "from_a_newer_vlmft": {"x": 1}, "stage": "not an int"}))
    assert read_record(tmp_path).status == "interrupted" and read_record(tmp_path).stage is None  # a bad value is left out
    update_record(tmp_path, status="running", stop_reason=None)
    raw = json.loads((tmp_path / "run.json").read_text())
    assert raw["status"] == "running" and "stop_reason" not in raw and raw["from_a_newer_vlmft"] == {"x": 1}
