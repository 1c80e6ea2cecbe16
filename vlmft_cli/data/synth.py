"""Synthetic RoboVQA: a TFRecord tree in the release's format, for the demo and the tests.

`DIR/tfrecord/train/train-0000k-of-0000n` and `DIR/tfrecord/val/val-…`, each record a SequenceExample
with 16 JPEG frames (a scene whose gripper and object move from frame to frame), several `texts`
entries in the real grammar covering every task family in the release's mix, answers wrapped in PRED
tags, 3-4 QAs per video. Everything is derived from the seed, split and video index, so a video is the
same whatever the other options (its frames and id are the same in both texts layouts).

How a video's QAs lie in its `texts` entries (`texts_layout`):
- `split` (the default): spread over 2-3 entries, every entry different, each with its own frame range;
- `mixed`: the first entry holds all 3-4 QAs (frames 0-15); 0-3 further entries each either repeat it
  word for word (same range) or differ: one new QA plus a copy of one of the first entry's QAs, from
  frame 4 or 8. So records with one entry, with identical entries and with differing entries all occur,
  as do identical QAs in different entries (what `extract --texts all` keeps once).

`synthesize_processed` (`vlmft data synth --jsonl-only`) writes the processed layout directly, at any
scale: the stage-1/stage-2 JSONL and `metadata.json` as extraction writes them, QAs drawn from the same
grammar (a pool of parsed task blocks per family, in the release's mix), RoboVQA's stage-1 lines per
video (722,979 / 199,721, exact over each split), and a small pool of frame folders that every video
shares in turn, so 221,912 videos take seconds and a few hundred JPEGs instead of 3.5M.
"""

from __future__ import annotations

import io
import math
import os
import random
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlmft_cli.data.grammar import QA, TASK_TAG_RE, parse_block, render_block, split_task_blocks
from vlmft_cli.data.records import VideoRecord, encode_record, write_shard
from vlmft_cli.errors import DataError

FRAMES_PER_VIDEO = 16
DEFAULT_FRAME_SIZE = 96
_VIDEOS_PER_SHARD = 25
_MAX_DEFAULT_SHARDS = 8

ACTIONS = (
    "place the packet on the table",
    "put the glass into the trash",
    "pick up the sanitizer",
    "hang the cap on the coat rack",
    "put book on the table",
    "open the top drawer",
    "close the top drawer",
    "put the yellow packet in the organizer",
    "drop candy into organizer",
    "place the orange inside the white bowl",
    "move to the left",
    "slide the tray < 10 cm to the right",
)
GOALS = (
    "Please remove the chips from the basket",
    "please place all the chips on the counter and close the top drawer",
    "place sugar packets in the correct sections of the clear plastic tray",
    "tidy up the desk",
    "throw away the empty cups",
)
#: How a video's QAs are laid out over its `texts` entries (see the module docstring).
TEXTS_LAYOUTS = ("split", "mixed")
#: `mixed`: how many entries follow the first, and their odds.
_EXTRA_ENTRIES, _EXTRA_ENTRY_WEIGHTS = (0, 1, 2, 3), (0.4, 0.3, 0.2, 0.1)

#: Task families and their share of QAs in the release.
FAMILY_WEIGHTS = {
    "affordance": 0.33,
    "planning": 0.35,
    "success": 0.14,
    "future_prediction": 0.11,
    "past_description": 0.06,
}


@dataclass(frozen=True)
class SynthOptions:
    out: Path
    videos: int
    val_videos: int | None = None  # default: a tenth of `videos`, at least 1
    seed: int = 0
    shards: int | None = None  # train shards; default: one per 25 videos, 1 to 8
    frame_size: int = DEFAULT_FRAME_SIZE
    overwrite: bool = False
    texts_layout: str = "split"  # one of TEXTS_LAYOUTS


@dataclass(frozen=True)
class SynthResult:
    root: Path  # the tfrecord/ folder
    videos: dict[str, int]
    shards: dict[str, int]
    qas: int


def _tag(rng: random.Random, body: str) -> str:
    # A few tags in another case: the official loader matches them case-insensitively.
    return f"<{'Task' if rng.random() < 0.05 else 'task'}:{body}>"


def _yes_no(rng: random.Random) -> tuple[str, str]:
    positive = rng.random() < 0.5
    return ("True", "yes") if positive else ("False", "no")


def _steps(rng: random.Random, count: int) -> str:
    return " ".join(f"{i + 1}- {rng.choice(ACTIONS)}" for i in range(count))


def make_task_block(rng: random.Random, family: str) -> str:
    """One task block of the given family, rendered as the release writes it."""
    action, goal = rng.choice(ACTIONS), rng.choice(GOALS)
    discrete_style = rng.choice(("pred_answer", "nested"))
    freeform_style = rng.choice(("plain", "pred_answer"))
    if family == "affordance":
        if rng.random() < 0.5:
            label, answer = _yes_no(rng)
            return render_block(
                _tag(rng, f"affordance:discriminative:discrete:{label}"),
                f"{action} Q: possible right now?",
                answer,
                "binary",
                discrete_style,
            )
        return render_block(
            _tag(rng, "affordance:generative:positive:freeform"),
            "Q: what action is possible right now?",
            action,
            "freeform",
            freeform_style,
        )
    if family == "success":
        label, answer = _yes_no(rng)
        return render_block(
            _tag(rng, f"success:discrete:{label}"), f"{action} Q: satisfied?", answer, "binary", discrete_style
        )
    if family == "planning":
        variant = rng.randrange(3)
        if variant == 0:
            return render_block(
                _tag(rng, "planning:freeform"),
                f"current goal is: {goal} Q: immediate next step?",
                action,
                "freeform",
                freeform_style,
            )
        history = f"current goal is: {goal}. last 20 steps: {_steps(rng, rng.randint(1, 6))}"
        if variant == 1:
            return render_block(
                _tag(rng, "immediate_planning_with_context20:freeform"),
                f"{history} Q: immediate next step?",
                action,
                "freeform",
                freeform_style,
            )
        planned = rng.randint(1, 4)
        plan = f"{_steps(rng, planned)} {planned + 1}- done"
        return render_block(
            _tag(rng, "remaining5_planning_with_context20:freeform"),
            f"{history} Q: next 5 steps?",
            plan,
            "freeform",
            freeform_style,
        )
    if family == "future_prediction":
        return render_block(
            _tag(rng, "future_prediction:freeform"),
            "Q: what is likely to happen next?",
            action,
            "freeform",
            freeform_style,
        )
    if family == "past_description":
        return render_block(
            _tag(rng, "past_description:freeform"), "Q: what just happened?", action, "freeform", freeform_style
        )
    raise ValueError(f"unknown task family {family!r}")


def _family(rng: random.Random) -> str:
    return rng.choices(list(FAMILY_WEIGHTS), weights=list(FAMILY_WEIGHTS.values()))[0]


def make_texts(
    rng: random.Random, layout: str = "split", layout_rng: random.Random | None = None
) -> tuple[list[str], list[int], list[int]]:
    """The `texts` entries of a video with 3-4 task blocks, and the frame range each entry applies to:
    `split` spreads the blocks over 2-3 entries; `mixed` (which draws its extra entries from
    `layout_rng`, so `rng` is used alike in both) puts them all in the first and adds 0-3 entries that
    repeat it or differ (see the module docstring)."""
    if layout not in TEXTS_LAYOUTS:
        raise ValueError(f"unknown texts layout {layout!r}; expected one of {TEXTS_LAYOUTS}")
    families = rng.choices(list(FAMILY_WEIGHTS), weights=list(FAMILY_WEIGHTS.values()), k=rng.choice((3, 4)))
    entry_count = rng.choice((2, 3))
    blocks = [make_task_block(rng, family) for family in families]
    starts = [rng.choice((0, 4, 8)) for _ in range(entry_count)]
    last = FRAMES_PER_VIDEO - 1
    if layout == "split":
        entries = ["".join(blocks[index::entry_count]) for index in range(entry_count)]
        return entries, starts, [last] * entry_count
    layout_rng = layout_rng or random.Random(rng.getrandbits(64))
    first = "".join(blocks)
    texts, starts = [first], [0]
    for _ in range(layout_rng.choices(_EXTRA_ENTRIES, weights=_EXTRA_ENTRY_WEIGHTS)[0]):
        if layout_rng.random() < 0.5:
            texts.append(first)
            starts.append(0)
        else:
            texts.append(make_task_block(layout_rng, _family(layout_rng)) + layout_rng.choice(blocks))
            starts.append(layout_rng.choice((4, 8)))
    return texts, starts, [last] * len(texts)


def make_frames(rng: random.Random, size: int) -> list[bytes]:
    """16 JPEG frames: a gradient room with a moving gripper (square) and object (disc), plus sensor noise."""
    noise = np.random.default_rng(rng.getrandbits(64))
    base = np.array([rng.randrange(40, 200) for _ in range(3)], dtype=np.float32)
    ramp = np.linspace(0.6, 1.4, size, dtype=np.float32)[:, None, None]
    background = np.clip(base[None, None, :] * ramp * np.ones((size, size, 1), np.float32), 0, 255)
    object_color = tuple(rng.randrange(256) for _ in range(3))
    start, angle = rng.random(), rng.random() * 2 * math.pi
    frames = []
    for index in range(FRAMES_PER_VIDEO):
        pixels = background + noise.normal(0, 6, background.shape).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        t = index / (FRAMES_PER_VIDEO - 1)
        gx = int(size * (0.1 + 0.7 * ((start + t) % 1.0)))
        gy = int(size * (0.5 + 0.3 * math.sin(angle + 3 * t)))
        draw.rectangle((gx, gy, gx + size // 8, gy + size // 8), fill=(230, 230, 230))
        ox, oy, radius = int(size * (0.3 + 0.4 * t)), int(size * 0.7), max(2, size // 10)
        draw.ellipse((ox - radius, oy - radius, ox + radius, oy + radius), fill=object_color)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        frames.append(buffer.getvalue())
    return frames


def make_record(
    seed: int, split: str, index: int, frame_size: int = DEFAULT_FRAME_SIZE, texts_layout: str = "split"
) -> VideoRecord:
    """The synthetic record for one (seed, split, index) in the given texts layout."""
    rng = random.Random(f"robovqa-synth:{seed}:{split}:{index}")
    unique_id = str(rng.getrandbits(64))
    video_filename = f"videos/{rng.getrandbits(63)}.mp4"
    layout_rng = random.Random(f"robovqa-synth-texts:{seed}:{split}:{index}")
    texts, starts, ends = make_texts(rng, texts_layout, layout_rng)
    return VideoRecord(unique_id, video_filename, make_frames(rng, frame_size), texts, starts, ends)


def _default_shards(videos: int) -> int:
    return max(1, min(_MAX_DEFAULT_SHARDS, math.ceil(videos / _VIDEOS_PER_SHARD)))


def _write_split(folder: Path, split: str, videos: int, shards: int, options: SynthOptions) -> int:
    """Write one split's shards (each under a temporary name, renamed when whole); returns its QA count."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = [round(videos * k / shards) for k in range(shards + 1)]
    qas = 0

    def encoded(indices: range) -> Iterator[bytes]:
        nonlocal qas
        for i in indices:
            record = make_record(options.seed, split, i, options.frame_size, options.texts_layout)
            qas += sum(len(TASK_TAG_RE.findall(text)) for text in record.texts)
            yield encode_record(record)

    for k in range(shards):
        final = folder / f"{split}-{k:05d}-of-{shards:05d}"
        temp = folder / f".{final.name}.tmp"
        write_shard(str(temp), encoded(range(bounds[k], bounds[k + 1])))
        os.replace(temp, final)
    return qas


def synthesize(options: SynthOptions) -> SynthResult:
    """Write the synthetic tree under `options.out/tfrecord`."""
    if options.videos < 1:
        raise DataError("--videos must be at least 1")
    val_videos = options.val_videos if options.val_videos is not None else max(1, round(options.videos / 10))
    if val_videos < 0:
        raise DataError("--val must be 0 or more")
    if not 16 <= options.frame_size <= 2048:
        raise DataError(f"frame size {options.frame_size} is outside 16..2048")
    if options.texts_layout not in TEXTS_LAYOUTS:
        raise DataError(f"texts layout {options.texts_layout!r} is not one of {', '.join(TEXTS_LAYOUTS)}")
    root = Path(options.out) / "tfrecord"
    if root.exists() and any(root.iterdir()):
        if not options.overwrite:
            raise DataError(f"{root} already exists and is not empty", hint="choose another --out or pass --overwrite")
        shutil.rmtree(root)
    train_shards = options.shards or _default_shards(options.videos)
    if train_shards > options.videos:
        raise DataError(f"{train_shards} shards for {options.videos} videos: at most one shard per video")
    val_shards = max(1, min(val_videos, math.ceil(train_shards * val_videos / options.videos))) if val_videos else 0
    counts = {"train": options.videos, "val": val_videos}
    shard_counts = {"train": train_shards, "val": val_shards}
    qas = 0
    for split in ("train", "val"):
        (root / split).mkdir(parents=True, exist_ok=True)
        if counts[split]:
            qas += _write_split(root / split, split, counts[split], shard_counts[split], options)
    return SynthResult(root, counts, shard_counts, qas)


# --- the processed layout, directly (`--jsonl-only`) -------------------------------------------------

#: RoboVQA's stage-1 lines per stage-2 line (QAs per video) in the training split.
ROBOVQA_QAS_PER_VIDEO = 722_979 / 199_721
DEFAULT_POOL_VIDEOS = 64
_QA_POOL_PER_FAMILY = 512
_POOL_SHARD = "pool-00000"


@dataclass(frozen=True)
class ProcessedOptions:
    out: Path
    videos: int  # training videos (stage-2 train lines)
    val_videos: int | None = None  # default: a tenth of `videos`, at least 1
    seed: int = 0
    pool_videos: int = DEFAULT_POOL_VIDEOS  # frame folders written; video k uses folder k mod pool
    frame_size: int = DEFAULT_FRAME_SIZE
    overwrite: bool = False


@dataclass(frozen=True)
class ProcessedResult:
    root: Path
    videos: dict[str, int]
    stage1_lines: dict[str, int]
    frames_written: int


def _qa_pool(seed: int) -> dict[str, list[QA]]:
    """Parsed QAs per task family, made and parsed by the release grammar."""
    rng = random.Random(f"robovqa-synth-qa-pool:{seed}")
    pool: dict[str, list[QA]] = {}
    for family in FAMILY_WEIGHTS:
        qas = []
        for _ in range(_QA_POOL_PER_FAMILY):
            (tag, body), = split_task_blocks(make_task_block(rng, family))
            qa = parse_block(tag, body)
            assert isinstance(qa, QA)
            qas.append(qa)
        pool[family] = qas
    return pool


def _qa_counts(rng: np.random.Generator, videos: int) -> np.ndarray:
    """3 or 4 QAs per video, the 4s placed at random, summing to round(videos × ROBOVQA_QAS_PER_VIDEO)."""
    fours = round(videos * ROBOVQA_QAS_PER_VIDEO) - 3 * videos
    counts = np.full(videos, 3, dtype=np.int64)
    counts[rng.choice(videos, size=fours, replace=False)] = 4
    return counts


class _SplitDraw:
    """One split's QAs: how many each video has and which pooled QA each one is, drawn up front."""

    def __init__(self, rng: np.random.Generator, videos: int, pool: dict[str, list[QA]]) -> None:
        families = list(FAMILY_WEIGHTS)
        weights = np.array([FAMILY_WEIGHTS[f] for f in families])
        counts = _qa_counts(rng, videos)
        self.total = int(counts.sum())
        family_of = rng.choice(len(families), size=self.total, p=weights / weights.sum())
        pick = rng.integers(0, _QA_POOL_PER_FAMILY, size=self.total)
        self.chosen = [pool[families[f]][p] for f, p in zip(family_of.tolist(), pick.tolist(), strict=True)]
        self.starts = np.concatenate(([0], np.cumsum(counts))).tolist()

    def qas(self, video: int) -> list[dict[str, Any]]:
        return [
            {"question": qa.question, "answer": qa.answer, "task_type": qa.task_type, "subtype": qa.subtype, "format": qa.format, "frame_range": [0, FRAMES_PER_VIDEO - 1]}
            for qa in self.chosen[self.starts[video] : self.starts[video + 1]]
        ]

    def task_types(self) -> list[str]:
        return [qa.task_type for qa in self.chosen]

    def formats(self) -> list[str]:
        return [qa.format for qa in self.chosen]


def _write_lines(path: Path, lines: Iterator[str]) -> None:
    """Stream lines to a temporary file beside `path`, fsync, rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with temp.open("w", encoding="utf-8") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def synthesize_processed(options: ProcessedOptions) -> ProcessedResult:
    """Write `options.out` as `vlmft data extract` would (images/, stage1/, stage2/, metadata.json) with
    every video's frames taken from a shared pool; see the module docstring."""
    from vlmft_cli import __version__
    from vlmft_cli.data.layout import IMAGES_DIR, METADATA_FILE, SPLITS, frame_name, frame_paths, stage_file
    from vlmft_cli.data.schema import dumps_line, stage1_lines, stage2_line
    from vlmft_cli.fsutil import atomic_write_json

    if options.videos < 1:
        raise DataError("--videos must be at least 1")
    val_videos = options.val_videos if options.val_videos is not None else max(1, round(options.videos / 10))
    if val_videos < 0:
        raise DataError("--val must be 0 or more")
    if options.pool_videos < 1:
        raise DataError("--pool-videos must be at least 1")
    if not 16 <= options.frame_size <= 2048:
        raise DataError(f"frame size {options.frame_size} is outside 16..2048")
    root = Path(options.out)
    if (root / METADATA_FILE).exists() or any((root / name).exists() for name in (IMAGES_DIR, "stage1", "stage2")):
        if not options.overwrite:
            raise DataError(f"{root} already holds processed data", hint="choose another --out or pass --overwrite")
        (root / METADATA_FILE).unlink(missing_ok=True)
        for name in (IMAGES_DIR, "stage1", "stage2"):
            shutil.rmtree(root / name, ignore_errors=True)
    for k in range(options.pool_videos):
        folder = root / IMAGES_DIR / _POOL_SHARD / f"{k:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for index, frame in enumerate(make_frames(random.Random(f"robovqa-synth-pool:{options.seed}:{k}"), options.frame_size)):
            (folder / frame_name(index)).write_bytes(frame)
    pool_images = [frame_paths(f"{IMAGES_DIR}/{_POOL_SHARD}/{k:05d}", FRAMES_PER_VIDEO) for k in range(options.pool_videos)]
    qa_pool = _qa_pool(options.seed)
    counts = {"train": options.videos, "val": val_videos}
    splits: dict[str, Any] = {}
    for split_index, split in enumerate(SPLITS):
        draw = _SplitDraw(np.random.default_rng([options.seed, split_index]), counts[split], qa_pool)
        keys = [f"synth-{options.seed}-{split}-{v:07d}" for v in range(counts[split])]
        images = [pool_images[v % options.pool_videos] for v in range(counts[split])]
        stage1 = (dumps_line(line) for v, key in enumerate(keys) for line in stage1_lines(key, key, split, images[v], draw.qas(v)))
        _write_lines(stage_file(root, "stage1", split), stage1)
        _write_lines(stage_file(root, "stage2", split), (dumps_line(stage2_line(key, key, split, images[v], draw.qas(v))) for v, key in enumerate(keys)))
        splits[split] = {
            "videos": counts[split],
            "frames": counts[split] * FRAMES_PER_VIDEO,
            "stage1_lines": draw.total,
            "stage2_lines": counts[split],
            "task_types": dict(sorted(Counter(draw.task_types()).items())),
            "formats": dict(sorted(Counter(draw.formats()).items())),
            "skipped_records": {},
            "dropped_qas": {},
        }
    metadata = {
        "vlmft_version": __version__,
        "source": "synthetic (vlmft data synth --jsonl-only)",
        "options": {"size": options.frame_size, "seed": options.seed, "jsonl_only": True, "pool_videos": options.pool_videos},
        "splits": splits,
        "frames_per_video": {str(FRAMES_PER_VIDEO): sum(counts.values())},
        "skipped_records_total": 0,
        "skipped_records": [],
        "damaged_shards": [],
    }
    atomic_write_json(root / METADATA_FILE, metadata)
    return ProcessedResult(root, counts, {split: splits[split]["stage1_lines"] for split in SPLITS}, options.pool_videos * FRAMES_PER_VIDEO)
