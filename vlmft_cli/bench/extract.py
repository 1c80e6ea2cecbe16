"""`vlmft bench extract`: extraction throughput against its ceiling, the bare decode → resize → encode loop
on the same frames, with the same number of worker processes.

Both timings include starting their process pool; tensorflow is imported before either starts. The two
run alternately (three times by default) and each figure is the best of its runs, which keeps load from
other processes out of the comparison as far as possible. The ratio (extract frames/s ÷ loop frames/s)
is what reading, parsing, writing files, bookkeeping and merging cost; the target is at least 0.75.
The same ratio from CPU time (this process and its workers; `cpu_ratio`) is less disturbed by other load.

Peak memory is sampled every 50 ms during the first extraction: the resident set of this process, of its
largest worker and of all of them together, in MiB. (`getrusage` cannot tell: a spawned worker inherits
its parent's high-water mark from the fork that precedes its exec.)

The result is a benchmark document (`results`) with one entry, keyed by frame size and JPEG quality;
torch is never imported (the device is the host, `device.host_info`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import tempfile
import threading
from concurrent.futures import wait
from pathlib import Path
from types import TracebackType

import psutil

from vlmft_cli.bench.device import host_info
from vlmft_cli.bench.results import BenchDocument, Entry
from vlmft_cli.bench.timing import WallCpu, timed
from vlmft_cli.data.extract import ExtractOptions, run_extract
from vlmft_cli.data.frames import transcode_only
from vlmft_cli.data.layout import SPLITS, stage_file
from vlmft_cli.data.records import ShardReader, find_shards, parse_record
from vlmft_cli.data.workers import default_workers, frame_pool
from vlmft_cli.reporting import NullReporter, Reporter

TARGET_RATIO = 0.75
_VIDEOS_PER_TASK = 4


class PeakMemory:
    """Samples the resident set of this process and its children in a thread, keeping the peaks."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.main = self.worker = self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        main, command = me.memory_info().rss, me.cmdline()
        workers = []
        for child in me.children(recursive=True):
            try:
                # A child between its fork and its exec still shows this process's memory: not a worker yet.
                if child.cmdline() != command:
                    workers.append(child.memory_info().rss)
            except psutil.Error:  # it exited between the listing and the reading
                continue
        self.main = max(self.main, main)
        self.worker = max(self.worker, max(workers, default=0))
        self.total = max(self.total, main + sum(workers))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _mib(value: int) -> float:
    return round(value / 2**20, 1)


def _extracted_frames(source: str, out: Path, limit: int | None) -> list[list[bytes]]:
    """The frames of every video the extraction kept, read again from the source (in memory: meant for a
    benchmark-sized source or --limit)."""
    kept = set()
    for split in SPLITS:
        with stage_file(out, "stage2", split).open(encoding="utf-8") as handle:
            kept.update(json.loads(line)["metadata"]["video_id"] for line in handle)
    videos = []
    shards = find_shards(source).shards
    for split in SPLITS:
        records = (raw for path in shards[split] for raw in ShardReader(path))
        for raw in itertools.islice(records, limit):
            record = parse_record(raw)
            if record.unique_id in kept:
                videos.append(record.frames)
    return videos


def _bare_loop(videos: list[list[bytes]], workers: int, size: int, quality: int) -> None:
    """The pool transcodes every frame (no files, no parsing)."""
    with frame_pool(workers) as pool:
        tasks = [
            pool.submit(transcode_only, videos[i : i + _VIDEOS_PER_TASK], size, quality)
            for i in range(0, len(videos), _VIDEOS_PER_TASK)
        ]
        wait(tasks)
        for task in tasks:
            task.result()


def measure_extract(
    source: str,
    workers: int | None = None,
    size: int = 288,
    quality: int = 85,
    limit: int | None = None,
    repeat: int = 3,
    reporter: Reporter | None = None,
) -> BenchDocument:
    """Extract `source` into a temporary folder and run the bare loop on the same frames, alternately
    `repeat` times; each figure is the best of its runs (the least disturbed by other load)."""
    reporter = reporter or NullReporter()
    workers = workers or default_workers()
    find_shards(source)  # imports tensorflow outside the timings
    extract_times: list[WallCpu] = []
    loop_times: list[WallCpu] = []
    memory = PeakMemory()
    with tempfile.TemporaryDirectory(prefix="vlmft-bench-") as temp:
        for attempt in range(repeat):
            out = Path(temp, f"out{attempt}")
            options = ExtractOptions(source, out, size=size, quality=quality, workers=workers, limit=limit)
            # Memory is sampled during the first extraction only, before the loop's frames are loaded.
            with timed(extract_times), memory if attempt == 0 else contextlib.nullcontext():
                metadata = run_extract(options, reporter).metadata
            if attempt == 0:
                videos = _extracted_frames(source, out, limit)
                reporter.info(f"bare loop: {sum(map(len, videos))} frames of {len(videos)} videos on {workers} workers")
            with timed(loop_times):
                _bare_loop(videos, workers, size, quality)
            shutil.rmtree(out)
    records = sum(metadata["splits"][split]["videos"] for split in SPLITS)
    frames = sum(len(video) for video in videos)
    extract_s, loop_s = min(t.wall_s for t in extract_times), min(t.wall_s for t in loop_times)
    extract_cpu_s, loop_cpu_s = min(t.cpu_s for t in extract_times), min(t.cpu_s for t in loop_times)
    extract_fps, loop_fps = frames / extract_s, frames / loop_s
    ratio = round(extract_fps / loop_fps, 3)
    metrics: dict[str, float | None] = {
        "extract_s": round(extract_s, 3),
        "extract_records_per_s": round(records / extract_s, 2),
        "extract_frames_per_s": round(extract_fps, 1),
        "loop_s": round(loop_s, 3),
        "loop_records_per_s": round(len(videos) / loop_s, 2),
        "loop_frames_per_s": round(loop_fps, 1),
        "ratio": ratio,
        "extract_cpu_s": round(extract_cpu_s, 3),
        "loop_cpu_s": round(loop_cpu_s, 3),
        "cpu_ratio": round(loop_cpu_s / extract_cpu_s, 3),
        "peak_rss_main_mib": _mib(memory.main),
        "peak_rss_worker_mib": _mib(memory.worker),
        "peak_rss_total_mib": _mib(memory.total),
    }
    details = {"records": records, "frames": frames, "target_ratio": TARGET_RATIO, "meets_target": ratio >= TARGET_RATIO}
    parameters = {"source": str(source), "workers": workers, "size": size, "quality": quality, "limit": limit, "repeat": repeat}
    notes = {
        "ratio": f"extract frames/s ÷ bare-loop frames/s, each the best of {repeat} alternating runs; target ≥ {TARGET_RATIO:g}",
        "cpu_ratio": "bare-loop CPU seconds ÷ extract CPU seconds (this process and its workers): the same ratio, less disturbed by other load",
        "memory": "peak resident set during the first extraction, sampled every 50 ms: this process, its largest worker, all together (MiB)",
    }
    entry = Entry(key={"size": size, "quality": quality}, metrics=metrics, details=details)
    return BenchDocument(bench="extract", device=host_info("cpu"), parameters=parameters, entries=[entry], notes=notes)
