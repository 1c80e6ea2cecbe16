"""Frame work done in worker processes: decode → resize to size×size → JPEG encode, and atomic writes.

Imports only Pillow, so worker processes start in a fraction of a second (no tensorflow).
"""

from __future__ import annotations

import errno
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlmft_cli.data.layout import frame_name

_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")

#: The errors of a write that failed for want of space (a full disk, or a quota).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFull(Exception):
    """A video's frames did not fit on the disk: its folder, the bytes of its frames not yet written,
    the bytes of all its frames, and the system's reason. (Plain arguments: it crosses the process pool.)"""

    def __init__(self, folder: str, needed: int, video_bytes: int, reason: str) -> None:
        super().__init__(folder, needed, video_bytes, reason)
        self.folder, self.needed, self.video_bytes, self.reason = folder, needed, video_bytes, reason


class FrameError(ValueError):
    """A frame that cannot be decoded; `index` is its position in the video."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"frame {index}: {reason}")
        self.index = index


def transcode_frame(data: bytes, size: int, quality: int) -> bytes:
    """One encoded frame → a size×size RGB JPEG. Raises whatever Pillow raises for bad bytes."""
    with Image.open(io.BytesIO(data)) as image:
        # JPEG only: decode at a reduced scale that is still ≥ size (much faster for large frames).
        image.draft("RGB", (size, size))
        rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def transcode_video(frames: list[bytes], size: int, quality: int) -> list[bytes]:
    """All frames of a video, or `FrameError` naming the first one that does not decode."""
    encoded = []
    for index, data in enumerate(frames):
        try:
            encoded.append(transcode_frame(data, size, quality))
        # Pillow signals hostile or broken bytes with many exception types (OSError, SyntaxError,
        # ValueError, DecompressionBombError, …); any of them means "this frame does not decode".
        except Exception as exc:  # noqa: BLE001
            # Without object addresses ("<_io.BytesIO object at 0x…>"), so reruns record the same text.
            raise FrameError(index, _ADDRESS_RE.sub("", f"{type(exc).__name__}: {exc}")) from None
    return encoded


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file under a temporary name beside it and rename it into place, so `path` either does not
    exist or is whole. The temporary name is fixed (`.NAME.tmp`): one left by a killed run is overwritten
    when the file is written again. (Beside it, not in a shared folder: workers would contend for it.)"""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_bytes(data)
    except OSError:
        temp.unlink(missing_ok=True)  # a full disk gets back what the partial file took
        raise
    os.replace(temp, path)


@dataclass(frozen=True)
class VideoJob:
    """One video's frames to write under `root/image_dir`; `record` identifies it for the caller."""

    record: int
    image_dir: str
    frames: list[bytes]


@dataclass(frozen=True)
class VideoOutcome:
    record: int
    frames_written: int
    error: str | None = None  # set when a frame did not decode; then nothing was written


def write_videos(jobs: list[VideoJob], root: str, size: int, quality: int) -> list[VideoOutcome]:
    """Transcode and write each video's frames (in frame order, `NN.jpg`). A video with an undecodable
    frame is written not at all: every frame is transcoded before the first is written. A write that
    fails for want of space raises `DiskFull` (the frames written so far are whole; a rerun redoes the video)."""
    outcomes = []
    for job in jobs:
        try:
            encoded = transcode_video(job.frames, size, quality)
        except FrameError as exc:
            outcomes.append(VideoOutcome(job.record, 0, str(exc)))
            continue
        folder = Path(root, job.image_dir)
        written = 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for index, data in enumerate(encoded):
                write_atomically(folder / frame_name(index), data)
                written = index + 1
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            needed = sum(len(data) for data in encoded[written:])
            raise DiskFull(str(folder), needed, sum(map(len, encoded)), exc.strerror or str(exc)) from None
        outcomes.append(VideoOutcome(job.record, len(encoded)))
    return outcomes


def transcode_only(videos: list[list[bytes]], size: int, quality: int) -> int:
    """The bare decode → resize → encode loop (the benchmark's baseline); returns the frames done."""
    done = 0
    for frames in videos:
        for data in frames:
            try:
                transcode_frame(data, size, quality)
            except Exception:  # noqa: BLE001 - a bad frame costs its attempt, as in extraction
                continue
            done += 1
    return done
