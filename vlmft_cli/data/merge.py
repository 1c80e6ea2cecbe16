"""The last step of extraction: parts → `stage1/` and `stage2/` JSONL files and the statistics for
`metadata.json`, deterministic (shards in sorted order, records in record order) and streamed.

Here the splits are reconciled: a video id met again later in a split is a duplicate, and a val video
whose id is also in train is refused (the train copy stays), so no video is ever in both splits. The
frames of a refused copy are removed (they lie in its own shard's folder, never the kept copy's: a
folder a kept video uses is never removed). Last, every image the four files name is checked to exist:
an extraction never finishes with a dangling reference.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.data.layout import SPLITS, STAGES, frame_paths, stage_file
from vlmft_cli.data.parts import (
    SKIP_DUPLICATE,
    SKIP_IN_BOTH_SPLITS,
    SKIP_KEY_COLLISION,
    is_kept,
    part_path,
    read_entries,
    read_summary,
    skipped_entry,
)
from vlmft_cli.data.schema import dumps_line, stage1_lines, stage2_line
from vlmft_cli.errors import DataError

#: Longest list of individual skipped records / renamed ids kept in metadata.json (counts stay exact).
MAX_LISTED = 10_000


@dataclass
class SplitStats:
    shards: int = 0
    records_read: int = 0
    records_selected: int = 0
    videos: int = 0
    frames: int = 0
    stage1_lines: int = 0
    stage2_lines: int = 0
    task_types: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    skipped_records: Counter[str] = field(default_factory=Counter)
    dropped_qas: Counter[str] = field(default_factory=Counter)
    damaged_shards: int = 0
    texts_entries: Counter[int] = field(default_factory=Counter)  # `texts` entries per video written

    def as_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        for key in ("task_types", "formats", "skipped_records", "dropped_qas"):
            data[key] = dict(sorted(data[key].items()))
        data["texts_entries"] = {str(k): v for k, v in sorted(self.texts_entries.items())}
        return data


@dataclass
class MergeStats:
    splits: dict[str, SplitStats] = field(default_factory=lambda: {split: SplitStats() for split in SPLITS})
    frames_per_video: Counter[int] = field(default_factory=Counter)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    skipped_total: int = 0
    damaged_shards: list[dict[str, Any]] = field(default_factory=list)
    renamed_ids: list[dict[str, str]] = field(default_factory=list)

    def note_skip(self, split: str, shard: str, entry: dict[str, Any]) -> None:
        self.splits[split].skipped_records[entry["skipped"]] += 1
        self.skipped_total += 1
        if len(self.skipped) < MAX_LISTED:
            self.skipped.append({"split": split, "shard": shard, **entry})


def _refuse(out: Path, entry: dict[str, Any], reason: str, detail: str, *, keep_frames: bool = False) -> dict[str, Any]:
    if not keep_frames:
        shutil.rmtree(out / entry["image_dir"], ignore_errors=True)
    return skipped_entry(entry["record"], entry["video_id"], reason, detail)


def merge_parts(out: Path, parts_dir: Path, shards: dict[str, list[str]], temp_dir: Path) -> MergeStats:
    """Write the four JSONL files from the parts of `shards` (shard ids per split, in order)."""
    stats = MergeStats()
    train_ids: set[str] = set()
    for split in SPLITS:
        split_stats = stats.splits[split]
        seen_ids: set[str] = set()
        seen_keys: dict[str, str] = {}  # key → shard of the kept video: its folder is images/<shard>/<key>
        temps = {stage: temp_dir / f"{stage}-{split}.jsonl" for stage in STAGES}
        handles = {stage: temps[stage].open("w", encoding="utf-8") for stage in STAGES}
        try:
            for shard in shards[split]:
                path = part_path(parts_dir, shard)
                summary = read_summary(path)
                split_stats.shards += 1
                split_stats.records_read += summary.records_read
                split_stats.records_selected += summary.records_selected
                if summary.damage:
                    split_stats.damaged_shards += 1
                    stats.damaged_shards.append(
                        {
                            "split": split,
                            "shard": shard,
                            "source": summary.source_name,
                            "records_before_damage": summary.records_read,
                            "error": summary.damage,
                        }
                    )
                for entry in read_entries(path):
                    if is_kept(entry):
                        video_id, key = entry["video_id"], entry["key"]
                        if video_id in seen_ids:
                            entry = _refuse(out, entry, SKIP_DUPLICATE, f"video id {video_id!r} already in {split}")
                        elif key in seen_keys:  # another id with this key: the lines' ids would clash
                            entry = _refuse(
                                out,
                                entry,
                                SKIP_KEY_COLLISION,
                                f"key {key!r} is already another video's in {split}",
                                keep_frames=seen_keys[key] == shard,  # the same folder as the kept video's
                            )
                        elif split != SPLITS[0] and video_id in train_ids:
                            entry = _refuse(
                                out,
                                entry,
                                SKIP_IN_BOTH_SPLITS,
                                f"video id {video_id!r} is also in train; kept there only",
                            )
                    if not is_kept(entry):
                        stats.note_skip(split, shard, entry)
                        continue
                    seen_ids.add(video_id)
                    seen_keys[key] = shard
                    images = frame_paths(entry["image_dir"], entry["frames"])
                    lines = stage1_lines(key, video_id, split, images, entry["qas"])
                    handles["stage1"].writelines(dumps_line(line) for line in lines)
                    handles["stage2"].write(dumps_line(stage2_line(key, video_id, split, images, entry["qas"])))
                    split_stats.videos += 1
                    split_stats.frames += entry["frames"]
                    split_stats.stage1_lines += len(lines)
                    split_stats.stage2_lines += 1
                    split_stats.task_types.update(qa["task_type"] for qa in entry["qas"])
                    split_stats.formats.update(qa["format"] for qa in entry["qas"])
                    split_stats.dropped_qas.update(entry["dropped_qas"])
                    if "texts_entries" in entry:
                        split_stats.texts_entries[entry["texts_entries"]] += 1
                    stats.frames_per_video[entry["frames"]] += 1
                    if key != video_id and len(stats.renamed_ids) < MAX_LISTED:
                        stats.renamed_ids.append({"video_id": video_id, "key": key, "split": split})
        finally:
            for handle in handles.values():
                handle.close()
        for stage in STAGES:
            target = stage_file(out, stage, split)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temps[stage], target)
        if split == SPLITS[0]:
            train_ids = seen_ids
    check_references(out)
    return stats


def output_bytes(parts_dir: Path, shards: dict[str, list[str]]) -> int:
    """What the four JSONL files take for the parts' kept videos (a bound: before duplicates are refused);
    for the message of a merge that ran out of space."""
    total = 0
    for split in SPLITS:
        for shard in shards[split]:
            for entry in read_entries(part_path(parts_dir, shard)):
                if not is_kept(entry):
                    continue
                key, video_id, qas = entry["key"], entry["video_id"], entry["qas"]
                images = frame_paths(entry["image_dir"], entry["frames"])
                lines = [
                    *stage1_lines(key, video_id, split, images, qas),
                    stage2_line(key, video_id, split, images, qas),
                ]
                total += sum(len(dumps_line(line).encode("utf-8", "surrogatepass")) for line in lines)
    return total


def check_references(out: Path) -> None:
    """Raise `DataError` if any image named by the four JSONL files is not there (streamed: a video's
    lines are consecutive, so its folder is listed once)."""
    missing, first = 0, ""
    listed_dir: str | None = None
    listing: set[str] = set()
    for stage in STAGES:
        for split in SPLITS:
            path = stage_file(out, stage, split)
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    for image in json.loads(line)["images"]:
                        folder, _, name = image.rpartition("/")
                        if folder != listed_dir:
                            listed_dir = folder
                            try:
                                listing = set(os.listdir(out / folder))
                            except OSError:
                                listing = set()
                        if name not in listing:
                            missing += 1
                            first = first or f"{path.relative_to(out)}:{number}: {image}"
    if missing:
        raise DataError(
            f"extraction left {missing} image reference(s) without a file in {out} (first: {first}); "
            "metadata.json was not written",
            hint=f"this is a bug in vlmft; please report it (the parts are kept in {out}/.extract/parts)",
        )
