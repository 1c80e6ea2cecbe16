"""Look inside RoboVQA TFRecords: the schema found, frames and resolutions, the task mix, parsed QAs.

Reads the first records of each split (or of one shard file), so it answers in seconds even on the
bucket, and reports what it finds rather than what the spec promises: an unexpected key, a missing
one or a damaged shard shows up here first.

The `texts` entries get their own account, because the official notebook reads only the first one: how
many entries each record has, the frame range (`texts_start`-`texts_end`) of each, which records hold
several entries that differ (flagged, with their ids), and the QAs `extract --texts first` and
`--texts all` would give. The task mix and `qas_per_record` count the QAs of every entry as parsed.
"""

from __future__ import annotations

import io
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from vlmft_cli.data.grammar import DROP_DUPLICATE, TextsMode, parse_texts, select_qas
from vlmft_cli.data.layout import SPLITS
from vlmft_cli.data.records import RecordError, ShardReader, find_shards, parse_record, tensorflow
from vlmft_cli.errors import DataError

_EXAMPLES = 5


@dataclass
class KeyStats:
    """How a context key or feature list appears across the records read."""

    types: Counter[str] = field(default_factory=Counter)
    records: int = 0
    lengths: list[int] = field(default_factory=list)  # feature lists only: entries per record

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"types": dict(self.types), "records": self.records}
        if self.lengths:
            data["length"] = {
                "min": min(self.lengths),
                "max": max(self.lengths),
                "mean": round(sum(self.lengths) / len(self.lengths), 2),
            }
        return data


@dataclass
class TextsStats:
    """How the records' `texts` entries look: counts, frame ranges, and whether the entries agree."""

    entries_per_record: Counter[int] = field(default_factory=Counter)
    frame_ranges: Counter[str] = field(default_factory=Counter)  # "start-end" of every entry, "missing"
    several_entries: int = 0  # records with two or more entries
    identical_entries: int = 0  # … all of them the same text
    differing_entries: int = 0  # … not all the same text (flagged in `differing`)
    differing_frame_ranges: int = 0  # … whose entries do not all have the same frame range
    differing: list[dict[str, Any]] = field(default_factory=list)  # the first few flagged records
    qas_first: int = 0  # QAs `extract --texts first` keeps
    qas_all: int = 0  # QAs `extract --texts all` keeps
    duplicate_qas: int = 0  # QAs `--texts all` drops as copies of an earlier one of the same record

    def add(self, video_id: str | None, texts: list[str], ranges: list[tuple[int, int] | None]) -> None:
        self.entries_per_record[len(texts)] += 1
        self.frame_ranges.update(f"{r[0]}-{r[1]}" if r else "missing" for r in ranges)
        if len(texts) > 1:
            self.several_entries += 1
            self.differing_frame_ranges += int(len(set(ranges)) > 1)
            if len(set(texts)) == 1:
                self.identical_entries += 1
            else:
                self.differing_entries += 1
                if len(self.differing) < _EXAMPLES:
                    self.differing.append(
                        {
                            "video_id": video_id,
                            "entries": len(texts),
                            "distinct_entries": len(set(texts)),
                            "frame_ranges": [list(r) if r else None for r in ranges],
                        }
                    )
        first, every = select_qas(texts, TextsMode.FIRST), select_qas(texts, TextsMode.ALL)
        self.qas_first += len(first.qas)
        self.qas_all += len(every.qas)
        self.duplicate_qas += every.dropped[DROP_DUPLICATE]

    def as_dict(self) -> dict[str, Any]:
        return {
            "entries_per_record": {str(k): v for k, v in sorted(self.entries_per_record.items())},
            "frame_ranges": dict(self.frame_ranges.most_common()),
            "records_with_several_entries": self.several_entries,
            "records_with_identical_entries": self.identical_entries,
            "records_with_differing_entries": self.differing_entries,
            "records_with_differing_frame_ranges": self.differing_frame_ranges,
            "differing_examples": self.differing,
            "qas": {"first": self.qas_first, "all": self.qas_all, "duplicates_dropped_by_all": self.duplicate_qas},
        }


@dataclass
class InspectReport:
    source: str
    files: list[str] = field(default_factory=list)
    records: int = 0
    unparseable: int = 0
    damage: dict[str, str] = field(default_factory=dict)  # file → what stopped the reading
    context: dict[str, KeyStats] = field(default_factory=lambda: defaultdict(KeyStats))
    feature_lists: dict[str, KeyStats] = field(default_factory=lambda: defaultdict(KeyStats))
    frames_per_record: Counter[int] = field(default_factory=Counter)
    resolutions: Counter[str] = field(default_factory=Counter)
    image_formats: Counter[str] = field(default_factory=Counter)
    undecodable_frames: int = 0
    qas_per_record: Counter[int] = field(default_factory=Counter)
    task_types: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    dropped_blocks: Counter[str] = field(default_factory=Counter)
    texts: TextsStats = field(default_factory=TextsStats)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "files": self.files,
            "records": self.records,
            "unparseable_records": self.unparseable,
            "damage": self.damage,
            "context": {key: stats.as_dict() for key, stats in sorted(self.context.items())},
            "feature_lists": {key: stats.as_dict() for key, stats in sorted(self.feature_lists.items())},
            "frames_per_record": {str(k): v for k, v in sorted(self.frames_per_record.items())},
            "resolutions": dict(self.resolutions.most_common()),
            "image_formats": dict(self.image_formats.most_common()),
            "undecodable_frames": self.undecodable_frames,
            "qas_per_record": {str(k): v for k, v in sorted(self.qas_per_record.items())},
            "task_types": dict(self.task_types.most_common()),
            "formats": dict(self.formats.most_common()),
            "dropped_task_blocks": dict(self.dropped_blocks.most_common()),
            "texts": self.texts.as_dict(),
            "examples": self.examples,
        }


def _schema(raw: bytes, report: InspectReport) -> None:
    example = tensorflow().train.SequenceExample.FromString(raw)
    for key, feature in example.context.feature.items():
        stats = report.context[key]
        stats.records += 1
        stats.types[feature.WhichOneof("kind") or "empty"] += 1
    for key, feature_list in example.feature_lists.feature_list.items():
        stats = report.feature_lists[key]
        stats.records += 1
        stats.lengths.append(len(feature_list.feature))
        for feature in feature_list.feature[:1]:
            stats.types[feature.WhichOneof("kind") or "empty"] += 1


def _frames(frames: list[bytes], report: InspectReport) -> None:
    for data in frames:
        try:
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                report.resolutions[f"{image.width}x{image.height}"] += 1
                report.image_formats[image.format or "unknown"] += 1
        except Exception:  # noqa: BLE001 - any failure means "does not decode"
            report.undecodable_frames += 1


def _inspect_record(raw: bytes, report: InspectReport) -> None:
    try:
        record = parse_record(raw)
    except RecordError:
        report.unparseable += 1
        return
    _schema(raw, report)
    report.frames_per_record[len(record.frames)] += 1
    _frames(record.frames, report)
    report.texts.add(record.unique_id, record.texts, [record.frame_range(i) for i in range(len(record.texts))])
    parsed = parse_texts(record.texts)
    report.qas_per_record[len(parsed.qas)] += 1
    report.dropped_blocks.update(parsed.dropped)
    for qa in parsed.qas:
        report.task_types[qa.task_type] += 1
        report.formats[qa.format] += 1
        if len(report.examples) < _EXAMPLES:
            report.examples.append(
                {
                    "video_id": record.unique_id,
                    "task_type": qa.task_type,
                    "subtype": qa.subtype,
                    "format": qa.format,
                    "question": qa.question,
                    "answer": qa.answer,
                    "frame_range": record.frame_range(qa.entry),
                }
            )


def _files_to_read(source: str) -> list[list[str]]:
    """Shard paths per split (a single file stands alone)."""
    gfile = tensorflow().io.gfile
    if gfile.exists(source) and not gfile.isdir(source):
        return [[source]]
    shards = find_shards(source).shards
    return [shards[split] for split in SPLITS if shards[split]]


def inspect_source(source: str, records: int = 100) -> InspectReport:
    """Read up to `records` records from each split (from its first shards), or from one shard file.
    An unreachable remote source is one `DataError` naming the network (`download.remote_access`)."""
    from vlmft_cli.data.download import check_reachable, is_remote, remote_access

    if not is_remote(str(source)) and not os.path.exists(source):
        raise DataError(f"{source} does not exist: pass a TFRecord file, a folder of them, or gs://…")
    report = InspectReport(str(source))
    check_reachable(str(source))
    with remote_access(str(source)):
        to_read = _files_to_read(str(source))
    for paths in to_read:
        left = records
        for path in paths:
            if left <= 0:
                break
            report.files.append(path)
            reader = ShardReader(path)
            for raw in reader:
                _inspect_record(raw, report)
                report.records += 1
                left -= 1
                if left <= 0:
                    break
            if reader.damage:
                report.damage[path] = reader.damage
    return report
