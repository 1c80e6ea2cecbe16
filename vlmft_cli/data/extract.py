"""RoboVQA TFRecords → the processed layout (frames once, stage-1 and stage-2 JSONL, metadata.json).

How the work is split: this process reads the shards in order (tensorflow; local or `gs://`), parses
each record with the protobuf class, parses its QAs and decides what to keep; a pool of spawned worker
processes decodes, resizes, encodes and writes the frames of a few videos per task. Only the shards in
flight are held in memory, never the dataset.

How it survives being killed: every file is written under a temporary name and renamed when whole. A
shard's results ("part", see `parts.py`) are written when all its videos have their frames on disk; a
rerun skips shards with a part, skips videos whose last frame exists, redoes the rest (the same bytes),
then merges all parts into the JSONL files and writes `metadata.json` last. With `metadata.json` present
and made with the same options and source, a rerun does nothing.

Bad input never stops the run: a record that does not parse, has no id, no frames, no QA or a frame
that does not decode (the whole record is dropped: the questions are about the last frame and the
frame ranges index all 16), a duplicate video, a truncated or corrupt shard (the records before the
damage are kept): each is counted with its reason in metadata.json.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli import __version__
from vlmft_cli.data.frames import DISK_FULL_ERRNOS, DiskFull, VideoJob, VideoOutcome, write_videos
from vlmft_cli.data.grammar import DROP_DUPLICATE, DROP_NOT_FIRST_ENTRY, TextsMode, select_qas
from vlmft_cli.data.layout import (
    METADATA_FILE,
    SPLITS,
    WORK_DIR,
    frame_name,
    safe_key,
    shard_id,
    subset_fraction,
    video_image_dir,
)
from vlmft_cli.data.merge import MergeStats, merge_parts, output_bytes
from vlmft_cli.data.parts import (
    SKIP_BAD_FRAME,
    SKIP_DUPLICATE,
    SKIP_KEY_COLLISION,
    SKIP_NO_FRAMES,
    SKIP_NO_ID,
    SKIP_NO_QA,
    SKIP_UNPARSEABLE,
    ShardSummary,
    kept_entry,
    part_path,
    part_text,
    read_summary,
    skipped_entry,
    write_part,
)
from vlmft_cli.data.records import RecordError, ShardReader, SourceShards, file_size, find_shards, parse_record
from vlmft_cli.data.workers import default_workers, frame_pool
from vlmft_cli.errors import DataError, VlmftError
from vlmft_cli.fsutil import atomic_write_json
from vlmft_cli.reporting import NullReporter, Reporter

FORMAT_VERSION = 1
_VIDEOS_PER_TASK = 4
_TASKS_IN_FLIGHT_PER_WORKER = 8  # deep enough that workers never wait while this process is descheduled


def check_frame_options(size: int, quality: int, workers: int | None) -> None:
    """`DataError` for frame-writing options out of range (`data extract` and `data import` share them)."""
    if not 16 <= size <= 4096:
        raise DataError(f"--size {size} is outside 16..4096")
    if not 1 <= quality <= 100:
        raise DataError(f"--quality {quality} is outside 1..100")
    if workers is not None and workers < 1:
        raise DataError("--workers must be at least 1")


@dataclass(frozen=True)
class ExtractOptions:
    source: str
    out: Path
    size: int = 288
    quality: int = 85
    workers: int | None = None  # frame worker processes; default: every core this process may use
    subset_ratio: float | None = None
    limit: int | None = None  # records per split, in shard order
    strict: bool = False
    texts: str = TextsMode.ALL.value  # which `texts` entries give QAs: all (identical QAs once) or first

    def validate(self) -> None:
        if self.texts not in {mode.value for mode in TextsMode}:
            raise DataError(f"--texts {self.texts!r} is not one of {', '.join(mode.value for mode in TextsMode)}")
        check_frame_options(self.size, self.quality, self.workers)
        if self.subset_ratio is not None and not 0 < self.subset_ratio <= 1:
            raise DataError(f"--subset-ratio {self.subset_ratio} is outside (0, 1]")
        if self.limit is not None and self.limit < 1:
            raise DataError("--limit must be at least 1")


@dataclass
class ExtractResult:
    out: Path
    metadata: dict[str, Any]
    already_complete: bool = False  # the output was finished before this run: nothing was done

    @property
    def problems(self) -> int:
        """Bad input met: skipped records and damaged shards (what --strict turns into a failure)."""
        return int(self.metadata["skipped_records_total"]) + len(self.metadata["damaged_shards"])


def _fingerprint(options: ExtractOptions, source: SourceShards, sizes: dict[str, int]) -> dict[str, Any]:
    """Everything that decides the output's bytes; a rerun must match it to reuse any of it."""
    return {
        "format_version": FORMAT_VERSION,
        "size": options.size,
        "quality": options.quality,
        "subset_ratio": options.subset_ratio,
        "limit": options.limit,
        "texts": options.texts,
        "source_shards": {
            split: [[os.path.basename(p), sizes[p]] for p in paths] for split, paths in source.shards.items()
        },
    }


def load_metadata(out: Path) -> dict[str, Any] | None:
    path = out / METADATA_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is unreadable: {exc}") from None


@contextmanager
def _exclusive(work: Path) -> Iterator[None]:
    work.mkdir(parents=True, exist_ok=True)
    with (work / "lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another extraction is writing to {work.parent}") from None
        yield


def _check_output_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / WORK_DIR).exists():
        raise DataError(f"--out {out} is not empty and holds no extraction", hint="choose a new or empty folder")


def _check_same_fingerprint(found: dict[str, Any], expected: dict[str, Any], where: Path) -> None:
    if found != expected:
        changed = sorted(key for key in expected.keys() | found.keys() if found.get(key) != expected.get(key))
        raise DataError(
            f"{where} was made with other options or another source ({', '.join(changed)} differ)",
            hint="use a new --out folder, or rerun with the same options",
        )


# --- a full disk: one line naming the folder, the bytes needed and those free; a rerun resumes -----------

_RERUN_HINT = "free space on that disk and rerun the same command: it resumes where this run stopped"


def _bytes(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale:
            return f"{count:,} bytes ({count / scale:.1f} {unit})"
    return f"{count:,} bytes"


def _free_bytes(folder: Path) -> int | None:
    """Free space where `folder` is (or would be: its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _disk_full_error(reason: str, what: str, folder: Path, needed: int | None, more: str = "") -> DataError:
    free = _free_bytes(folder)
    figures = [
        f"{_bytes(needed)} needed" if needed is not None else "",
        f"{_bytes(free)} free" if free is not None else "",
    ]
    figures_text = ", ".join(f for f in figures if f)
    return DataError(
        f"disk full ({reason}) writing {what} into {folder}" + (f": {figures_text}" if figures_text else "") + more,
        hint=_RERUN_HINT,
    )


@contextmanager
def _disk_full_stops(what: str, folder: Path, needed: Callable[[], int | None] = lambda: None) -> Iterator[None]:
    """Turns a write that fails for want of space into a `DataError` naming `folder` and the bytes needed."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        raise _disk_full_error(exc.strerror or str(exc), what, folder, needed()) from None


def _frames_disk_full(exc: DiskFull, records_left: int) -> DataError:
    more = (
        f"; the ~{records_left:,} records left need about {_bytes(records_left * exc.video_bytes)} more"
        if records_left
        else ""
    )
    return _disk_full_error(exc.reason, "frames", Path(exc.folder), exc.needed, more)


# --- reading records -----------------------------------------------------------------------------------


@dataclass
class _Prepared:
    entry: dict[str, Any]
    job: VideoJob | None = None  # frames still to write


def prepare_record(
    raw: bytes,
    index: int,
    shard: str,
    out: Path,
    options: ExtractOptions,
    seen_ids: set[str],
    seen_keys: dict[str, str],
) -> _Prepared | None:
    """What to do with one record: skip it (with a reason), keep it (frames already on disk), or keep it
    once its frames are written. None when --subset-ratio leaves it out. `seen_ids` and `seen_keys`
    (key → video id) hold the shard's records so far: no two videos of a shard ever share a folder."""
    try:
        record = parse_record(raw)
    except RecordError as exc:
        return _Prepared(skipped_entry(index, None, SKIP_UNPARSEABLE, str(exc)))
    video_id = record.unique_id
    if not video_id:
        return _Prepared(skipped_entry(index, None, SKIP_NO_ID, "context feature unique_id is missing or empty"))
    if options.subset_ratio is not None and subset_fraction(video_id) >= options.subset_ratio:
        return None
    if not record.frames:
        return _Prepared(skipped_entry(index, video_id, SKIP_NO_FRAMES, "feature list images is missing or empty"))
    parsed = select_qas(record.texts, options.texts)
    if not parsed.qas:
        dropped = (
            ", ".join(f"{reason}: {count}" for reason, count in sorted(parsed.dropped.items())) or "no task blocks"
        )
        return _Prepared(
            skipped_entry(index, video_id, SKIP_NO_QA, f"{len(record.texts)} texts entries, no QA ({dropped})")
        )
    if video_id in seen_ids:
        return _Prepared(skipped_entry(index, video_id, SKIP_DUPLICATE, f"video id {video_id!r} already in this shard"))
    seen_ids.add(video_id)
    key = safe_key(video_id)
    if (owner := seen_keys.setdefault(key, video_id)) != video_id:  # two ids, one folder: a 40-bit sha1 clash
        return _Prepared(
            skipped_entry(index, video_id, SKIP_KEY_COLLISION, f"folder name {key!r} is already video id {owner!r}'s")
        )
    image_dir = video_image_dir(shard, key)
    qas = [
        {
            "question": qa.question,
            "answer": qa.answer,
            "task_type": qa.task_type,
            "subtype": qa.subtype,
            "format": qa.format,
            "frame_range": list(r) if (r := record.frame_range(qa.entry)) else None,
        }
        for qa in parsed.qas
    ]
    entry = kept_entry(
        index, video_id, key, record.video_filename, image_dir, len(record.frames), qas, dict(parsed.dropped)
    )
    entry["texts_entries"] = len(record.texts)  # merged into the split's `texts_entries` histogram
    # Frames are renamed into place in order, so the last one existing means all of them do.
    if (out / image_dir / frame_name(len(record.frames) - 1)).exists():
        return _Prepared(entry)
    return _Prepared(entry, VideoJob(index, image_dir, record.frames))


@dataclass
class _ShardState:
    summary: ShardSummary
    entries: list[dict[str, Any]] = field(default_factory=list)
    waiting: dict[int, dict[str, Any]] = field(default_factory=dict)  # kept entries whose frames are being written
    tasks_in_flight: int = 0
    reading_done: bool = False


@dataclass
class _Throughput:
    started: float = field(default_factory=time.monotonic)
    records: int = 0
    frames: int = 0

    def fields(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {"frames_per_s": round(self.frames / elapsed, 1), "records": self.records}


class _ShardRunner:
    """Reads the pending shards in order and keeps the pool busy; writes each shard's part when done."""

    def __init__(
        self,
        options: ExtractOptions,
        out: Path,
        parts_dir: Path,
        pool: ProcessPoolExecutor,
        workers: int,
        task: Any,
    ) -> None:
        self.options, self.out, self.parts_dir = options, out, parts_dir
        self.pool, self.task = pool, task
        self.max_in_flight = workers * _TASKS_IN_FLIGHT_PER_WORKER
        self.in_flight: dict[Future[list[VideoOutcome]], _ShardState] = {}
        self.throughput = _Throughput()

    def _advance(self, records: int, frames: int = 0) -> None:
        self.throughput.records += records
        self.throughput.frames += frames
        self.task.advance(records, **self.throughput.fields())

    def _submit(self, state: _ShardState, jobs: list[VideoJob]) -> None:
        future = self.pool.submit(write_videos, jobs, str(self.out), self.options.size, self.options.quality)
        self.in_flight[future] = state
        state.tasks_in_flight += 1

    def _collect(self, block: bool) -> None:
        if not self.in_flight:
            return
        done, _ = wait(self.in_flight, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for future in done:
            state = self.in_flight.pop(future)
            state.tasks_in_flight -= 1
            outcomes = future.result()
            for outcome in outcomes:
                entry = state.waiting.pop(outcome.record)
                if outcome.error:
                    entry = skipped_entry(outcome.record, entry["video_id"], SKIP_BAD_FRAME, outcome.error)
                state.entries.append(entry)
            self._advance(len(outcomes), sum(outcome.frames_written for outcome in outcomes))
            self._finish_if_done(state)

    def _finish_if_done(self, state: _ShardState) -> None:
        if state.reading_done and not state.tasks_in_flight:
            needed = lambda: len(part_text(state.summary, state.entries).encode())  # noqa: E731
            with _disk_full_stops(f"the results of shard {state.summary.shard}", self.parts_dir, needed):
                write_part(part_path(self.parts_dir, state.summary.shard), state.summary, state.entries)

    def run_shard(self, path: str, summary: ShardSummary, remaining: int | None) -> int:
        """Read one shard, handing its frames to the pool; returns how many records it selected."""
        state = _ShardState(summary)
        seen_ids: set[str] = set()
        seen_keys: dict[str, str] = {}
        jobs: list[VideoJob] = []
        reader = ShardReader(path)
        if remaining == 0:
            summary.limited = True
        else:
            for index, raw in enumerate(reader):
                summary.records_read += 1
                prepared = prepare_record(raw, index, summary.shard, self.out, self.options, seen_ids, seen_keys)
                if prepared is None:
                    self._advance(1)
                    continue
                summary.records_selected += 1
                if prepared.job is None:
                    state.entries.append(prepared.entry)
                    self._advance(1)
                else:
                    state.waiting[index] = prepared.entry
                    jobs.append(prepared.job)
                    if len(jobs) >= _VIDEOS_PER_TASK:
                        self._submit(state, jobs)
                        jobs = []
                self._collect(block=len(self.in_flight) >= self.max_in_flight)
                if remaining is not None and summary.records_selected >= remaining:
                    summary.limited = True
                    break
            summary.damage = reader.damage
        if jobs:
            self._submit(state, jobs)
        state.reading_done = True
        self._finish_if_done(state)
        return summary.records_selected

    def drain(self) -> None:
        while self.in_flight:
            self._collect(block=True)


@dataclass
class _PlannedShard:
    path: str
    size: int
    summary: ShardSummary
    selected_before: int | None = None  # set when an earlier run finished this shard


def _plan(source: SourceShards, sizes: dict[str, int], parts_dir: Path) -> list[_PlannedShard]:
    """Every shard in order, marking those an earlier run finished."""
    plan = []
    for split in SPLITS:
        for index, path in enumerate(source.shards[split]):
            shard = shard_id(split, index)
            planned = _PlannedShard(path, sizes[path], ShardSummary(split, shard, os.path.basename(path)))
            part = part_path(parts_dir, shard)
            if part.exists():
                planned.selected_before = read_summary(part).records_selected
            plan.append(planned)
    return plan


def _estimate_records(pending: list[_PlannedShard], options: ExtractOptions) -> int:
    """Records still to read, for the progress bar: from the record density of the first pending shard
    (a re-read of its first records), capped by --limit."""
    sample = ShardReader(pending[0].path)
    sample_records = sum(1 for _ in zip(range(64), sample, strict=False))
    estimate = sample_records / max(sample.bytes_read, 1) * sum(shard.size for shard in pending)
    if options.limit is not None:
        estimate = min(estimate, options.limit * len({shard.summary.split for shard in pending}))
    return max(round(estimate), 1)


def _extract_pending(
    options: ExtractOptions, out: Path, work: Path, plan: list[_PlannedShard], reporter: Reporter
) -> int:
    """Read and transcode every shard without a part yet; returns how many shards that was."""
    parts_dir = work / "parts"
    pending = [shard for shard in plan if shard.selected_before is None]
    if not pending:
        return 0
    workers = options.workers or default_workers()
    estimate = _estimate_records(pending, options)
    with reporter.progress("Extracting", total=estimate, unit="records") as task, frame_pool(workers) as pool:
        runner = _ShardRunner(options, out, parts_dir, pool, workers, task)
        selected = dict.fromkeys(SPLITS, 0)  # per split, in shard order: what --limit counts
        try:
            for shard in plan:
                if shard.selected_before is not None:
                    selected[shard.summary.split] += shard.selected_before
                    continue
                remaining = None if options.limit is None else max(options.limit - selected[shard.summary.split], 0)
                selected[shard.summary.split] += runner.run_shard(shard.path, shard.summary, remaining)
            runner.drain()
        except DiskFull as exc:
            pool.shutdown(cancel_futures=True)
            raise _frames_disk_full(exc, max(estimate - runner.throughput.records, 0)) from None
        except BrokenProcessPool:
            raise VlmftError(
                "a frame worker process died (killed, or out of memory?)",
                hint="rerun the same command: it resumes where this run stopped (fewer --workers use less memory)",
            ) from None
        task.update(completed=runner.throughput.records, total=runner.throughput.records, **runner.throughput.fields())
    return len(pending)


def _metadata(
    options: ExtractOptions, fingerprint: dict[str, Any], stats: MergeStats, timings: dict[str, Any]
) -> dict[str, Any]:
    """metadata.json: options, counts, bad input with reasons, timings (of the run that finished)."""
    used = {key: value for key, value in asdict(options).items() if key not in ("source", "out")}
    used["workers"] = options.workers or default_workers()
    return {
        "vlmft_version": __version__,
        "format_version": FORMAT_VERSION,
        "source": str(options.source),
        "options": used,
        "fingerprint": fingerprint,
        "splits": {split: stats.splits[split].as_dict() for split in SPLITS},
        "texts": _texts_summary(options, stats),
        "frames_per_video": {str(k): v for k, v in sorted(stats.frames_per_video.items())},
        "skipped_records_total": stats.skipped_total,
        "skipped_records": stats.skipped,
        "damaged_shards": stats.damaged_shards,
        "renamed_ids": stats.renamed_ids,
        "timings": timings,
    }


def _texts_summary(options: ExtractOptions, stats: MergeStats) -> dict[str, Any]:
    """Which `texts` entries gave the QAs and what that did, over the videos written (all splits)."""
    splits = [stats.splits[split] for split in SPLITS]
    entries = Counter[int]()
    for split in splits:
        entries.update(split.texts_entries)
    return {
        "mode": options.texts,
        "qas_kept": sum(split.stage1_lines for split in splits),
        "duplicate_qas_dropped": sum(split.dropped_qas.get(DROP_DUPLICATE, 0) for split in splits),
        "later_entry_qas_not_read": sum(split.dropped_qas.get(DROP_NOT_FIRST_ENTRY, 0) for split in splits),
        "records_with_several_entries": sum(count for n, count in entries.items() if n > 1),
        "entries_per_record": {str(n): count for n, count in sorted(entries.items())},
    }


def run_extract(options: ExtractOptions, reporter: Reporter | None = None) -> ExtractResult:
    """Extract `options.source` into `options.out`, resuming whatever an earlier run left."""
    reporter = reporter or NullReporter()
    options.validate()
    started = time.monotonic()
    out = Path(options.out)
    source = find_shards(options.source)
    sizes = {path: file_size(path) for paths in source.shards.values() for path in paths}
    fingerprint = _fingerprint(options, source, sizes)
    metadata = load_metadata(out)
    if metadata is not None:
        _check_same_fingerprint(metadata.get("fingerprint", {}), fingerprint, out / METADATA_FILE)
        if (out / WORK_DIR).exists():  # a run killed while cleaning up
            shutil.rmtree(out / WORK_DIR, ignore_errors=True)
        reporter.info(f"{out} is already complete; nothing to do")
        return ExtractResult(out, metadata, already_complete=True)
    _check_output_folder(out)
    work = out / WORK_DIR
    with _exclusive(work), _disk_full_stops("its files", out):
        temp_dir, parts_dir = work / "tmp", work / "parts"
        shutil.rmtree(temp_dir, ignore_errors=True)  # leftovers of a killed run; we hold the lock
        temp_dir.mkdir()
        parts_dir.mkdir(exist_ok=True)
        fingerprint_file = work / "fingerprint.json"
        if fingerprint_file.exists():
            _check_same_fingerprint(json.loads(fingerprint_file.read_text(encoding="utf-8")), fingerprint, out)
        else:
            atomic_write_json(fingerprint_file, fingerprint, ensure_ascii=False, temp_dir=temp_dir)
        plan = _plan(source, sizes, parts_dir)
        done = sum(shard.selected_before is not None for shard in plan)
        reporter.info(
            f"{len(plan)} shards under {source.root} ({', '.join(f'{s}: {len(source.shards[s])}' for s in SPLITS)})"
            + (f"; {done} already done by an earlier run" if done else "")
        )
        shards_read = _extract_pending(options, out, work, plan, reporter)
        extracted = time.monotonic()
        shard_ids = {split: [shard_id(split, i) for i in range(len(source.shards[split]))] for split in SPLITS}
        with _disk_full_stops("the JSONL files", out, lambda: output_bytes(parts_dir, shard_ids)):
            stats = merge_parts(out, parts_dir, shard_ids, temp_dir)
        timings = {
            "shards_read_this_run": shards_read,
            "extract_s": round(extracted - started, 3),
            "merge_s": round(time.monotonic() - extracted, 3),
            "total_s": round(time.monotonic() - started, 3),
        }
        metadata = _metadata(options, fingerprint, stats, timings)
        atomic_write_json(out / METADATA_FILE, metadata, ensure_ascii=False, temp_dir=temp_dir)
        shutil.rmtree(work, ignore_errors=True)
    return ExtractResult(out, metadata)
