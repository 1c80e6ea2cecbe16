"""Check a processed folder before training on it.

Structure (metadata.json, the four JSONL files, images/); every line valid (see `schema.py`: types,
alternating roles, non-empty answers, `<image>` count equal to the image list, safe relative paths to
images that exist, are not empty and have a readable header of a sane size); no video in both splits; the stages agree (the same videos per split, the same
frames, one stage-1 line per stage-2 turn); the line counts match metadata.json; and a seeded sample of
images (`sample`, `seed`; all with `full`) decodes at the size recorded in metadata.json.

Nothing is decoded by default (a header read per distinct frame), so RoboVQA's 3.5M frame references
take minutes; `full` decodes every frame on a process pool. Progress goes through the reporter: lines
checked against the counts metadata.json records, and with `full` frames decoded, each with an ETA.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vlmft_cli.data.layout import IMAGES_DIR, METADATA_FILE, SPLITS, stage_file
from vlmft_cli.data.schema import Rejection, Sample, iter_samples
from vlmft_cli.errors import DataError
from vlmft_cli.reporting import NullReporter, Reporter

_MAX_PROBLEMS_LISTED = 100
_IMAGES_PER_TASK = 256
_LINES_PER_TICK = 1000  # lines between progress updates


@dataclass(frozen=True)
class VerifyOptions:
    root: Path
    full: bool = False  # decode every image, not a sample
    sample: int = 256
    seed: int = 0
    workers: int | None = None  # for `full`; default: every core


@dataclass
class VerifyReport:
    root: Path
    lines: dict[str, int] = field(default_factory=dict)  # "stage1/train" → valid lines
    videos: dict[str, int] = field(default_factory=dict)
    images_checked: int = 0  # existence and path safety
    images_decoded: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < _MAX_PROBLEMS_LISTED:
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "lines": self.lines,
            "videos": self.videos,
            "images_checked": self.images_checked,
            "images_decoded": self.images_decoded,
            "problem_count": self.problem_count,
            "problems": self.problems,
        }


def decode_problems(paths: list[str], root: str, size: int | None) -> list[str]:
    """Problems of images that do not decode or are not size×size (runs in worker processes too)."""
    problems = []
    for relative in paths:
        try:
            with Image.open(Path(root, relative)) as image:
                image.load()
                found = image.size
        except Exception as exc:  # noqa: BLE001 - any failure to decode is the finding
            problems.append(f"{relative}: does not decode ({type(exc).__name__}: {exc})")
            continue
        if size is not None and found != (size, size):
            problems.append(f"{relative}: {found[0]}x{found[1]}, expected {size}x{size}")
    return problems


class _DecodeChecker:
    """Decodes images inline (a sample) or on a process pool in bounded batches (--full)."""

    def __init__(
        self, root: Path, size: int | None, report: VerifyReport, pool: Any = None, max_in_flight: int = 8
    ) -> None:
        self.root, self.size, self.report, self.pool = str(root), size, report, pool
        self.max_in_flight = max_in_flight
        self.batch: list[str] = []
        self.in_flight: list[Future[list[str]]] = []
        self.task: Any = None  # a progress task advanced by each decoded batch (its ETA follows)

    def add(self, path: str) -> None:
        self.batch.append(path)
        if len(self.batch) >= _IMAGES_PER_TASK:
            self._flush()

    def _flush(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        self.report.images_decoded += len(batch)
        if self.pool is None:
            for problem in decode_problems(batch, self.root, self.size):
                self.report.add(problem)
            self._advance(len(batch))
            return
        future = self.pool.submit(decode_problems, batch, self.root, self.size)
        future.add_done_callback(lambda _, count=len(batch): self._advance(count))
        self.in_flight.append(future)
        while len(self.in_flight) > self.max_in_flight:
            self._take(self.in_flight.pop(0))

    def _advance(self, count: int) -> None:
        if self.task is not None:
            self.task.advance(count)

    def _take(self, future: Future[list[str]]) -> None:
        for problem in future.result():
            self.report.add(problem)

    def finish(self) -> None:
        self._flush()
        for future in self.in_flight:
            self._take(future)
        self.in_flight = []


def _images_digest(images: tuple[str, ...]) -> bytes:
    return hashlib.sha1("\n".join(images).encode()).digest()


@dataclass
class _SplitVideos:
    frames: dict[str, bytes] = field(default_factory=dict)  # video id → digest of its image list
    turns_left: Counter[str] = field(default_factory=Counter)  # stage-2 turns not yet matched by stage-1 lines


def _read_metadata(root: Path, report: VerifyReport) -> dict[str, Any]:
    path = root / METADATA_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report.add(f"{METADATA_FILE} is missing (extraction unfinished?)")
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        report.add(f"{METADATA_FILE} is unreadable: {exc}")
        return {}
    if not isinstance(metadata, dict):
        report.add(f"{METADATA_FILE} is not a JSON object")
        return {}
    return metadata


def _rejections_to_report(rejections: list[Rejection], report: VerifyReport) -> None:
    for rejection in rejections:
        report.add(str(rejection))
    rejections.clear()


def _samples(path: Path, root: Path, rejections: list[Rejection], report: VerifyReport) -> Iterator[Sample]:
    """The file's valid samples; a file refused whole (it resolves outside the root, or is unreadable)
    is a problem and gives none."""
    try:
        yield from iter_samples(path, root, rejections=rejections)
    except DataError as exc:
        report.add(str(exc))


def _recorded(metadata: dict[str, Any], count: str) -> int:
    """A count metadata.json records, summed over the splits (0 when it records none): progress totals."""
    splits = metadata.get("splits")
    if not isinstance(splits, dict):
        return 0
    values = [(splits.get(split) or {}).get(count) for split in SPLITS]
    return sum(v for v in values if isinstance(v, int) and not isinstance(v, bool))


def _check_stage2(
    root: Path, split: str, report: VerifyReport, checker: _DecodeChecker, sampler: Any, task: Any
) -> _SplitVideos | None:
    path = stage_file(root, "stage2", split)
    if not path.is_file():
        report.add(f"{path.relative_to(root)} is missing")
        return None
    videos = _SplitVideos()
    rejections: list[Rejection] = []
    lines = 0
    for sample in _samples(path, root, rejections, report):
        lines += 1
        if lines % _LINES_PER_TICK == 0:
            task.advance(_LINES_PER_TICK)
        report.images_checked += len(sample.images)
        if sample.split != split:
            report.add(f"{path}:{sample.line}: split is {sample.split!r} in the {split} file")
        if sample.video_id in videos.frames:
            report.add(f"{path}:{sample.line}: video {sample.video_id!r} appears twice")
        videos.frames[sample.video_id] = _images_digest(sample.images)
        videos.turns_left[sample.video_id] += len(sample.turns)
        for image in sample.images:
            sampler(image)
        _rejections_to_report(rejections, report)
    _rejections_to_report(rejections, report)
    task.advance(lines % _LINES_PER_TICK)
    report.lines[f"stage2/{split}"] = lines
    report.videos[split] = len(videos.frames)
    return videos


def _check_stage1(root: Path, split: str, videos: _SplitVideos, report: VerifyReport, task: Any) -> None:
    path = stage_file(root, "stage1", split)
    if not path.is_file():
        report.add(f"{path.relative_to(root)} is missing")
        return
    rejections: list[Rejection] = []
    lines = 0
    for sample in _samples(path, root, rejections, report):
        lines += 1
        if lines % _LINES_PER_TICK == 0:
            task.advance(_LINES_PER_TICK)
        report.images_checked += len(sample.images)
        where = f"{path}:{sample.line}"
        if sample.split != split:
            report.add(f"{where}: split is {sample.split!r} in the {split} file")
        if len(sample.turns) != 1:
            report.add(f"{where}: a stage-1 line holds {len(sample.turns)} QAs, expected 1")
        expected = videos.frames.get(sample.video_id)
        if expected is None:
            report.add(f"{where}: video {sample.video_id!r} is not in stage2/{split}.jsonl")
        elif expected != _images_digest(sample.images):
            report.add(f"{where}: video {sample.video_id!r} has other frames than in stage2/{split}.jsonl")
        else:
            videos.turns_left[sample.video_id] -= 1
        _rejections_to_report(rejections, report)
    _rejections_to_report(rejections, report)
    task.advance(lines % _LINES_PER_TICK)
    report.lines[f"stage1/{split}"] = lines
    for video_id, left in videos.turns_left.items():
        if left:
            report.add(
                f"stage1/{split}.jsonl has {'fewer' if left > 0 else 'more'} lines for video {video_id!r} than its stage-2 turns"
            )


def _check_counts(metadata: dict[str, Any], report: VerifyReport) -> None:
    splits = metadata.get("splits")
    if not isinstance(splits, dict):
        report.add(f"{METADATA_FILE} has no per-split counts")
        return
    for split in SPLITS:
        for stage in ("stage1", "stage2"):
            recorded = (splits.get(split) or {}).get(f"{stage}_lines")
            found = report.lines.get(f"{stage}/{split}")
            if found is not None and recorded != found:
                report.add(f"{METADATA_FILE} counts {recorded} {stage}/{split} lines, the file has {found}")


def run_verify(options: VerifyOptions, reporter: Reporter | None = None) -> VerifyReport:
    """Check `options.root`; the report lists every problem found (none means ready to train)."""
    from vlmft_cli.data.workers import default_workers, frame_pool

    reporter = reporter or NullReporter()
    root = Path(options.root)
    report = VerifyReport(root)
    if not root.is_dir():
        report.add(f"{root} is not a folder")
        return report
    metadata = _read_metadata(root, report)
    size = (metadata.get("options") or {}).get("size")
    if not (root / IMAGES_DIR).is_dir():
        report.add(f"{IMAGES_DIR}/ is missing")

    rng = random.Random(options.seed)
    reservoir: list[str] = []
    seen_images = 0
    workers = options.workers or default_workers()
    pool = frame_pool(workers) if options.full else None
    checker = _DecodeChecker(root, size, report, pool, max_in_flight=4 * workers)

    def sample_image(image: str) -> None:
        nonlocal seen_images
        if options.full:
            checker.add(image)
            return
        seen_images += 1  # reservoir sampling: a uniform sample without holding every path
        if len(reservoir) < options.sample:
            reservoir.append(image)
        elif (slot := rng.randrange(seen_images)) < options.sample:
            reservoir[slot] = image

    split_videos: dict[str, _SplitVideos] = {}
    frames = _recorded(metadata, "frames")
    try:
        with reporter.progress("Decoding frames", total=frames or None, unit="frames") if options.full else nullcontext() as decoding:
            checker.task = decoding
            with reporter.progress("Verifying", total=_recorded(metadata, "stage1_lines") + _recorded(metadata, "stage2_lines") or None, unit="lines") as task:
                for split in SPLITS:
                    videos = _check_stage2(root, split, report, checker, sample_image, task)
                    if videos is not None:
                        split_videos[split] = videos
                        _check_stage1(root, split, videos, report, task)
            for image in reservoir:
                checker.add(image)
            checker.finish()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if len(split_videos) == len(SPLITS):
        both = split_videos[SPLITS[0]].frames.keys() & split_videos[SPLITS[1]].frames.keys()
        for video_id in sorted(both):
            report.add(f"video {video_id!r} is in both train and val")
    if metadata:
        _check_counts(metadata, report)
    return report
