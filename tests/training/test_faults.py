"""Faults during training: a checkpoint write that fails (disk full) and hostile lines in the data."""

import errno
import json
import shutil

import pytest

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
