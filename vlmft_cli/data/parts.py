"""Per-shard results of an extraction ("parts"), the unit of resumption.

A part is a JSONL file: a summary line for the shard, then one line per selected record in record order,
either a kept video (its key, frame folder, frame count and QAs) or a skipped record with its reason. It
is written under a temporary name and renamed only when every video of the shard has its frames on
disk, so a part that exists is whole and its shard needs no more work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vlmft_cli.fsutil import atomic_write_text

# Why a record is not in the output.
SKIP_UNPARSEABLE = "unparseable_record"
SKIP_NO_ID = "missing_unique_id"
SKIP_NO_FRAMES = "no_frames"
SKIP_NO_QA = "no_qa"
SKIP_BAD_FRAME = "undecodable_frame"
SKIP_DUPLICATE = "duplicate_video"
SKIP_IN_BOTH_SPLITS = "video_in_both_splits"
SKIP_KEY_COLLISION = "folder_name_collision"  # another video id of the shard has the same safe key


@dataclass
class ShardSummary:
    split: str
    shard: str  # e.g. "train-00003": its frames live under images/<shard>/
    source_name: str  # the source file's name
    records_read: int = 0
    records_selected: int = 0  # read and inside --subset-ratio / --limit
    limited: bool = False  # reading stopped at --limit
    damage: str | None = None  # why reading stopped early (truncated or corrupt shard)


def kept_entry(
    record: int,
    video_id: str,
    key: str,
    video_filename: str | None,
    image_dir: str,
    frames: int,
    qas: list[dict[str, Any]],
    dropped_qas: dict[str, int],
) -> dict[str, Any]:
    return {
        "record": record,
        "video_id": video_id,
        "key": key,
        "video_filename": video_filename,
        "image_dir": image_dir,
        "frames": frames,
        "qas": qas,
        "dropped_qas": dropped_qas,
    }


def skipped_entry(record: int, video_id: str | None, reason: str, detail: str) -> dict[str, Any]:
    return {"record": record, "video_id": video_id, "skipped": reason, "detail": detail}


def is_kept(entry: dict[str, Any]) -> bool:
    return "skipped" not in entry


def part_path(parts_dir: Path, shard: str) -> Path:
    return parts_dir / f"{shard}.jsonl"


def part_text(summary: ShardSummary, entries: list[dict[str, Any]]) -> str:
    """A part's whole content: the summary line, then the entries in record order."""
    lines = [asdict(summary), *sorted(entries, key=lambda e: e["record"])]
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def write_part(path: Path, summary: ShardSummary, entries: list[dict[str, Any]]) -> None:
    """Write a whole part atomically (temporary name in the same folder, fsync, then rename)."""
    atomic_write_text(path, part_text(summary, entries))


def read_summary(path: Path) -> ShardSummary:
    with path.open(encoding="utf-8") as handle:
        return ShardSummary(**json.loads(handle.readline()))


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The entries of a part, in record order, streamed."""
    with path.open(encoding="utf-8") as handle:
        handle.readline()
        for line in handle:
            yield json.loads(line)
