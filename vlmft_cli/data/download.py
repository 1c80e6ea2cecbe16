"""Copy the RoboVQA TFRecords (`train/` and `val/`) from the public bucket, or any folder laid out like
it, to a local folder: in parallel, resumable, with retries.

Reading goes through `tf.io.gfile`, so `gs://` and local sources take the same code path (the tests use
a local folder as the bucket). A file is written as `.NAME.partial` and renamed when whole; a rerun skips
files whose size matches the source's and continues a partial file from where it stopped.

Offline, TensorFlow's `gs://` file system answers `isdir` with False but `exists` and `stat` with a
`FailedPreconditionError` ("Could not resolve host"): `remote_access` turns such errors into one
`DataError` that names the network as the cause, and a remote source is probed before its layout is
judged, so an unreachable bucket is not reported as a bucket without shards.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock
from typing import Any

from vlmft_cli.data.layout import SPLITS
from vlmft_cli.data.records import file_size, find_shards, tensorflow
from vlmft_cli.errors import DataError
from vlmft_cli.reporting import NullReporter, Reporter

DEFAULT_SOURCE = "gs://anon_robovqa/tfrecord"
_CHUNK_BYTES = 8 << 20

#: Words in a TensorFlow file-system error that say the network failed, not the path.
_NETWORK_WORDS = re.compile(r"http|curl|resolve|connect|network|timed? ?out|unreachable|socket|ssl|proxy|dns", re.IGNORECASE)


def is_remote(source: str) -> bool:
    return "://" in str(source)


def remote_error(source: str, exc: Exception) -> DataError:
    """A TensorFlow file-system error on `source` as one line; the network is named when it is the cause."""
    tf = tensorflow()
    message = " ".join(re.sub(r"\s*\[Op:.*?\]", "", str(getattr(exc, "message", None) or exc)).split()) or type(exc).__name__
    network_kinds = (tf.errors.FailedPreconditionError, tf.errors.UnavailableError, tf.errors.DeadlineExceededError)
    if isinstance(exc, network_kinds) or _NETWORK_WORDS.search(message):
        return DataError(
            f"cannot reach {source}: no network connection to it ({message})",
            hint="check the network (and any proxy), or copy the data where there is one and pass the local folder",
        )
    return DataError(f"cannot read {source}: {message}")


@contextmanager
def remote_access(source: str) -> Iterator[None]:
    """Turn TensorFlow file-system errors inside the block into `remote_error`s naming `source`."""
    tf = tensorflow()
    try:
        yield
    except tf.errors.OpError as exc:
        raise remote_error(source, exc) from None


def check_reachable(source: str) -> None:
    """For a remote source, one metadata request, so that an unreachable bucket fails as such (`isdir`,
    which finding the shards uses, says False offline). Local sources are not touched."""
    if is_remote(source):
        with remote_access(source):
            tensorflow().io.gfile.exists(source)


@dataclass(frozen=True)
class DownloadOptions:
    dest: Path
    source: str = DEFAULT_SOURCE
    workers: int = 8
    attempts: int = 5
    backoff_s: float = 1.0  # first retry delay; doubles each time, with jitter


@dataclass
class DownloadResult:
    dest: Path
    files: int = 0
    downloaded: int = 0
    skipped: int = 0  # already complete
    bytes_downloaded: int = 0
    retries: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # source path → last error

    def as_dict(self) -> dict[str, Any]:
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(self).items()}


@dataclass(frozen=True)
class _Transfer:
    source: str
    target: Path
    size: int

    @property
    def partial(self) -> Path:
        return self.target.with_name(f".{self.target.name}.partial")


class _Progress:
    """Thread-safe byte and file counts fed to one progress task."""

    def __init__(self, task: Any, files: int) -> None:
        self.task, self.files, self.files_done = task, files, 0
        self.lock = Lock()

    def bytes(self, amount: int) -> None:
        with self.lock:
            self.task.advance(amount, files=f"{self.files_done}/{self.files}")

    def file_done(self) -> None:
        with self.lock:
            self.files_done += 1
            self.task.advance(0, files=f"{self.files_done}/{self.files}")


def _copy(transfer: _Transfer, progress: _Progress) -> int:
    """Copy (or continue copying) one file into its partial name, then rename it; returns bytes copied."""
    gfile = tensorflow().io.gfile
    offset = transfer.partial.stat().st_size if transfer.partial.exists() else 0
    if offset > transfer.size:  # not a prefix of this source file: start over
        transfer.partial.unlink()
        offset = 0
    copied = 0
    with gfile.GFile(transfer.source, "rb") as reader, transfer.partial.open("ab") as writer:
        if offset:
            reader.seek(offset)
        while chunk := reader.read(_CHUNK_BYTES):
            writer.write(chunk)
            copied += len(chunk)
            progress.bytes(len(chunk))
    if transfer.partial.stat().st_size != transfer.size:
        raise OSError(f"copied {transfer.partial.stat().st_size} bytes of {transfer.size}")
    os.replace(transfer.partial, transfer.target)
    return copied


def _with_retries(
    transfer: _Transfer, progress: _Progress, options: DownloadOptions, sleep: Callable[[float], None]
) -> tuple[int, int]:
    """(bytes copied, retries used); raises the last error once the attempts are spent."""
    tf = tensorflow()
    retries = 0
    while True:
        try:
            return _copy(transfer, progress), retries
        except (OSError, tf.errors.OpError):
            retries += 1
            if retries >= options.attempts:
                raise
            sleep(options.backoff_s * 2 ** (retries - 1) * (1 + random.random() / 2))


def plan_transfers(source: str, dest: Path) -> list[_Transfer]:
    """Every shard under the source's `train/` and `val/`, mapped to `dest/train/…` and `dest/val/…`."""
    check_reachable(source)
    with remote_access(source):
        shards = find_shards(source)
        return [
            _Transfer(path, dest / split / os.path.basename(path), file_size(path))
            for split in SPLITS
            for path in shards.shards[split]
        ]


def download(
    options: DownloadOptions, reporter: Reporter | None = None, sleep: Callable[[float], None] = time.sleep
) -> DownloadResult:
    """Mirror the source's shards into `options.dest`; files that fail after every retry are listed in
    the result (the others are complete)."""
    reporter = reporter or NullReporter()
    if options.workers < 1 or options.attempts < 1:
        raise DataError("--workers and attempts must be at least 1")
    if not is_remote(options.source) and not os.path.exists(options.source):
        raise DataError(f"--source {options.source} does not exist: pass the bucket ({DEFAULT_SOURCE}) or a folder laid out like it")
    dest = Path(options.dest)
    transfers = plan_transfers(options.source, dest)
    result = DownloadResult(dest, files=len(transfers))
    todo = []
    for transfer in transfers:
        if transfer.target.is_file() and transfer.target.stat().st_size == transfer.size:
            result.skipped += 1
        else:
            todo.append(transfer)
    for split in SPLITS:
        (dest / split).mkdir(parents=True, exist_ok=True)
    reporter.info(f"{len(transfers)} files under {options.source}: {result.skipped} already here, {len(todo)} to fetch")
    total_bytes = sum(max(t.size - (t.partial.stat().st_size if t.partial.exists() else 0), 0) for t in todo)
    with (
        reporter.progress("Downloading", total=total_bytes, unit="bytes") as task,
        ThreadPoolExecutor(options.workers) as pool,
    ):
        progress = _Progress(task, len(todo))
        futures = {pool.submit(_with_retries, t, progress, options, sleep): t for t in todo}
        for future in as_completed(futures):
            transfer = futures[future]
            try:
                copied, retries = future.result()
            except Exception as exc:  # noqa: BLE001 - reported per file; the other files go on
                result.failed[transfer.source] = f"{type(exc).__name__}: {exc}"
                continue
            result.downloaded += 1
            result.bytes_downloaded += copied
            result.retries += retries
            progress.file_done()
    return result
