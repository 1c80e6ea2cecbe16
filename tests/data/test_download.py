"""download, against a local folder standing in for the bucket (the same tf.io.gfile code path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vlmft_cli.data import download as download_module
from vlmft_cli.data.download import DownloadOptions, download
from vlmft_cli.reporting import RecordingReporter


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    """`bucket/tfrecord/{train,val}` with files of a few sizes (content is opaque to download)."""
    for split, sizes in (("train", [3 << 20, 1, 12345]), ("val", [70_000])):
        folder = tmp_path / "bucket" / "tfrecord" / split
        folder.mkdir(parents=True)
        for index, size in enumerate(sizes):
            (folder / f"{split}-{index:05d}-of-{len(sizes):05d}").write_bytes(os.urandom(size))
    return tmp_path / "bucket"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_mirrors_train_and_val_with_progress_in_bytes_and_files(bucket, tmp_path):
    reporter = RecordingReporter()
    result = download(DownloadOptions(dest=tmp_path / "dest", source=str(bucket), workers=3), reporter)
    assert _files(tmp_path / "dest") == _files(bucket / "tfrecord")
    assert (result.files, result.downloaded, result.skipped, result.failed) == (4, 4, 0, {})
    task = reporter.tasks[0]
    assert task.total == task.completed == result.bytes_downloaded == (3 << 20) + 1 + 12345 + 70_000
    assert task.fields["files"] == "4/4"


def test_a_rerun_skips_complete_files_and_refetches_wrong_sizes(bucket, tmp_path):
    dest = tmp_path / "dest"
    download(DownloadOptions(dest=dest, source=str(bucket / "tfrecord")))
    (dest / "val" / "val-00000-of-00001").write_bytes(b"short")
    result = download(DownloadOptions(dest=dest, source=str(bucket / "tfrecord")))
    assert (result.skipped, result.downloaded, result.bytes_downloaded) == (3, 1, 70_000)
    assert _files(dest) == _files(bucket / "tfrecord")


def test_a_partial_file_is_continued_not_restarted(bucket, tmp_path):
    dest = tmp_path / "dest"
    source_file = bucket / "tfrecord" / "train" / "train-00000-of-00003"
    (dest / "train").mkdir(parents=True)
    (dest / "train" / ".train-00000-of-00003.partial").write_bytes(source_file.read_bytes()[:1000])
    result = download(DownloadOptions(dest=dest, source=str(bucket)))
    assert result.bytes_downloaded == (3 << 20) - 1000 + 1 + 12345 + 70_000
    assert _files(dest) == _files(bucket / "tfrecord")


def test_failures_are_retried_with_backoff_then_reported(bucket, tmp_path, monkeypatch):
    real_copy = download_module._copy
    failures = {"train-00001-of-00003": 2, "val-00000-of-00001": 99}

    def flaky_copy(transfer, progress):
        name = transfer.target.name
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            raise OSError("connection reset")
        return real_copy(transfer, progress)

    monkeypatch.setattr(download_module, "_copy", flaky_copy)
    delays: list[float] = []
    result = download(
        DownloadOptions(dest=tmp_path / "dest", source=str(bucket), workers=1, attempts=3, backoff_s=0.5),
        sleep=delays.append,
    )
    assert result.downloaded == 3 and result.retries == 2
    assert list(result.failed) == [str(bucket / "tfrecord" / "val" / "val-00000-of-00001")]
    assert "connection reset" in next(iter(result.failed.values()))
    assert len(delays) == 4 and all(0.5 <= d < 0.75 or 1.0 <= d < 1.5 for d in delays)
    assert not (tmp_path / "dest" / "val" / "val-00000-of-00001").exists()
