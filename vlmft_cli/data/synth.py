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
"""

from __future__ import annotations

import io
import math
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vlmft_cli.data.grammar import TASK_TAG_RE, render_block
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
