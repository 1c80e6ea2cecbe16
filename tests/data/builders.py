"""Builders of small and hostile RoboVQA sources for the data tests."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from vlmft_cli.data.grammar import render_block
from vlmft_cli.data.records import VideoRecord, encode_record, write_shard
from vlmft_cli.data.synth import make_record


def jpeg(size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


QA_TEXT = render_block("<task:success:discrete:True>", "put the cup down Q: satisfied?", "yes", "binary", "nested")


def video(unique_id: str | None, frames: int = 4, texts: Sequence[str] = (QA_TEXT,), **changes) -> VideoRecord:
    """A small valid record (4 frames, one QA) unless told otherwise."""
    record = VideoRecord(
        unique_id=unique_id,
        video_filename=f"videos/{unique_id}.mp4",
        frames=[jpeg(color=(10 * i, 50, 90)) for i in range(frames)],
        texts=list(texts),
        texts_start=[0] * len(texts),
        texts_end=[frames - 1] * len(texts),
    )
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def write_source(root: Path, shards: dict[str, list[list[VideoRecord | bytes]]]) -> Path:
    """Write `root/train/train-0000k` and `root/val/val-0000k` shards from records or raw bytes."""
    for split, split_shards in shards.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for index, records in enumerate(split_shards):
            raws = [r if isinstance(r, bytes) else encode_record(r) for r in records]
            write_shard(str(folder / f"{split}-{index:05d}-of-{len(split_shards):05d}"), raws)
    return root


def synthetic_videos(split: str, count: int, seed: int = 3) -> list[VideoRecord]:
    return [make_record(seed, split, i, frame_size=32) for i in range(count)]


def extracted_tree(out: Path) -> dict[str, bytes]:
    """Every file of an extraction by relative path, metadata.json without its timings (what reruns must
    reproduce byte for byte)."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    metadata = json.loads(files.pop("metadata.json"))
    metadata.pop("timings")
    files["metadata.json"] = json.dumps(metadata, sort_keys=True).encode()
    return files
