"""The processed JSONL format: building its lines (extraction) and reading them back, validated (training).

stage-1 line (one QA):
    {"id": "<key>-<n>", "images": ["images/train-00000/<key>/00.jpg", …],
     "conversations": [{"from": "human", "value": "<image>\\n…<image>\\n<question>"}, {"from": "gpt", "value": "<answer>"}],
     "metadata": {"task_type", "subtype", "format", "video_id", "frame_range": [s, e] | null, "split"}}
stage-2 line (one video): "id": "<key>", the same images, human/gpt turns for every QA (the `<image>`
placeholders only in the first human turn), "metadata": {"video_id", "split", "turns": [{"task_type",
"subtype", "format", "frame_range"}, … one per QA]}. Either may carry "fps": the rate of the frames listed.

`metadata` is optional, so a line can be written by hand (README, "The processed JSONL"). Left out, it
defaults to: `video_id` the folder of the first image, `split` the file's name when it is `train` or
`val` (else `train`), and per QA `task_type` `unknown`, `subtype` null, `format` `freeform`,
`frame_range` null; `fps` null (the `fps` setting, or the backend's default). When present it must name
`video_id` and `split`; the per-QA fields and `fps` may still be left out, with the same defaults, and
without a `turns` list the task fields given apply to every QA of the line.

The reader rejects a line, with its number and the reason, when it is not JSON, lacks a key or has a
wrong type, has roles that do not alternate human/gpt or an empty answer, has no image or a `<image>`
count unlike its image list, or names an image that is absolute, climbs out of the data root (`..`, or a
symlink resolving outside it), does not exist, is empty, or is not an image of a sane size (its header
read: no pixels, or more than `MAX_FRAME_PIXELS`). A JSONL file that resolves outside the data root is
refused whole. It never opens a file outside the root. Each image is checked once per file read
(many lines share a video's frames).
"""

from __future__ import annotations

import json
import math
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from vlmft_cli.data.layout import SPLITS
from vlmft_cli.errors import DataError

IMAGE_PLACEHOLDER = "<image>"
HUMAN, GPT = "human", "gpt"
#: What a line without metadata (or a QA without its task fields) stands for; see the module docstring.
DEFAULT_TASK_TYPE = "unknown"
DEFAULT_FORMAT = "freeform"
DEFAULT_SPLIT = "train"
#: The largest frame the reader accepts, in pixels: Pillow's default decompression-bomb limit (a frame
#: bigger than this, e.g. a 20000×20000 header, would exhaust a dataloader worker's memory).
MAX_FRAME_PIXELS = 89_478_485


# --- writing -------------------------------------------------------------------------------------------


def human_turn(question: str, frames: int = 0) -> dict[str, str]:
    return {"from": HUMAN, "value": f"{IMAGE_PLACEHOLDER}\n" * frames + question}


def gpt_turn(answer: str) -> dict[str, str]:
    return {"from": GPT, "value": answer}


def turn_metadata(qa: dict[str, Any]) -> dict[str, Any]:
    return {key: qa[key] for key in ("task_type", "subtype", "format", "frame_range")}


def _with_fps(metadata: dict[str, Any], fps: float | None) -> dict[str, Any]:
    return metadata if fps is None else {**metadata, "fps": fps}


def stage1_lines(
    key: str,
    video_id: str,
    split: str,
    images: list[str],
    qas: Sequence[dict[str, Any]],
    fps: float | None = None,
) -> list[dict[str, Any]]:
    """One line per QA; `qas` hold question, answer, task_type, subtype, format, frame_range. `fps`
    (the rate of `images`) is written only when known."""
    return [
        {
            "id": f"{key}-{n}",
            "images": images,
            "conversations": [human_turn(qa["question"], len(images)), gpt_turn(qa["answer"])],
            "metadata": _with_fps({**turn_metadata(qa), "video_id": video_id, "split": split}, fps),
        }
        for n, qa in enumerate(qas)
    ]


def stage2_line(
    key: str,
    video_id: str,
    split: str,
    images: list[str],
    qas: Sequence[dict[str, Any]],
    fps: float | None = None,
) -> dict[str, Any]:
    """One line for the whole video: every QA as a turn, frames in the first."""
    conversations = []
    for n, qa in enumerate(qas):
        conversations += [human_turn(qa["question"], len(images) if n == 0 else 0), gpt_turn(qa["answer"])]
    return {
        "id": key,
        "images": images,
        "conversations": conversations,
        "metadata": _with_fps({"video_id": video_id, "split": split, "turns": [turn_metadata(qa) for qa in qas]}, fps),
    }


def dumps_line(line: dict[str, Any]) -> str:
    return json.dumps(line, ensure_ascii=False) + "\n"


# --- reading -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    role: str  # "human" or "gpt"
    text: str


@dataclass(frozen=True)
class TurnInfo:
    """What one QA is: its task type, subtype, answer format and frame range."""

    task_type: str
    subtype: str | None
    format: str
    frame_range: tuple[int, int] | None


@dataclass(frozen=True)
class Sample:
    """One validated line. `images` are relative to the data root, in frame order; `turns` has one entry
    per human/gpt pair (one for stage 1)."""

    id: str
    images: tuple[str, ...]
    conversations: tuple[Message, ...]
    video_id: str
    split: str
    turns: tuple[TurnInfo, ...]
    line: int
    fps: float | None = None  # rate of `images` when the line says (None: the `fps` setting applies)
    metadata_given: bool = True  # False: the line had no metadata and every field above is a default

    def image_paths(self, root: Path) -> list[Path]:
        return [root / image for image in self.images]

    @property
    def questions(self) -> list[str]:
        """Human turns without their `<image>` placeholders."""
        return [
            m.text.replace(f"{IMAGE_PLACEHOLDER}\n", "").replace(IMAGE_PLACEHOLDER, "") for m in self.conversations[::2]
        ]

    @property
    def answers(self) -> list[str]:
        return [m.text for m in self.conversations[1::2]]


@dataclass(frozen=True)
class Rejection:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class SampleSet:
    samples: list[Sample] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


class _Invalid(ValueError):
    pass


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise _Invalid(reason)


def _typed(container: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    _require(key in container, f"{where} has no {key!r}")
    value = container[key]
    # bool is an int in Python; a JSON true is never a valid value here.
    _require(
        isinstance(value, kind) and not isinstance(value, bool),
        f"{where} {key!r} has the wrong type ({type(value).__name__})",
    )
    return value


def _frame_range(value: Any, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    valid = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )
    _require(valid, f"{where} 'frame_range' must be [start, end] or null")
    return int(value[0]), int(value[1])


def _optional_str(data: dict[str, Any], key: str, default: str, where: str) -> str:
    if data.get(key) is None:
        return default
    return _typed(data, key, str, where)


def _turn_info(data: Any, where: str) -> TurnInfo:
    _require(isinstance(data, dict), f"{where} must be an object")
    subtype = data.get("subtype")
    _require(subtype is None or isinstance(subtype, str), f"{where} 'subtype' must be a string or null")
    return TurnInfo(
        task_type=_optional_str(data, "task_type", DEFAULT_TASK_TYPE, where),
        subtype=subtype,
        format=_optional_str(data, "format", DEFAULT_FORMAT, where),
        frame_range=_frame_range(data.get("frame_range"), where),
    )


def _fps(metadata: dict[str, Any]) -> float | None:
    value = metadata.get("fps")
    if value is None:
        return None
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    _require(valid, "metadata 'fps' must be a positive number or null")
    return float(value)


def default_split(jsonl_path: Path | str) -> str:
    """The split a line without metadata belongs to: its file's name when that is a split, else `train`."""
    stem = Path(jsonl_path).stem
    return stem if stem in SPLITS else DEFAULT_SPLIT


def default_video_id(images: Sequence[str]) -> str:
    """The video a line without metadata shows: the folder of its first image (`.` for the data root)."""
    return str(PurePosixPath(images[0]).parent)


def refuse_outside_root(path: Path | str, root: Path | str) -> None:
    """`DataError` if the file `path` resolves outside the data root `root` (a symlink out of it): such a
    file is refused before anything reads it, as an image path that escapes is."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise DataError(f"{path} resolves outside the data root {real_root} (to {real}): refused, not read")


_JPEG_READ = 8192  # bytes read at a time: a frame's whole header, typically
_JPEG_HEADER_LIMIT = 1 << 20  # a header longer than this is left to Pillow
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended and progressive frame headers
_JPEG_SKIPPED = frozenset({0xC4, 0xDD})  # Huffman tables, restart interval: segments Pillow skips


def _quantization_tables_ok(segment: bytes) -> bool:
    """Pillow's check of a DQT segment: whole tables of 64 one- or two-byte entries."""
    while segment:
        length = 1 + (1 if segment[0] // 16 == 0 else 2) * 64
        if len(segment) < length:
            return False
        segment = segment[length:]
    return True


def _plain_jpeg_size(path: str) -> tuple[int, int] | None:
    """(width, height) of a plain JPEG, read from its markers as Pillow's `Image.open` reads them, for a
    fraction of the cost (Pillow parses each segment in Python; the file open dominates here). Plain:
    SOI, then only JFIF APP0, DQT, DHT, DRI and one 8-bit baseline/progressive frame header with 1, 3 or
    4 components, every segment whole, up to a whole start-of-scan segment; what extraction writes.
    None for anything else (EXIF, other markers, padding, damage): Pillow then judges the file."""
    fd = os.open(path, os.O_RDONLY)  # not `open()`: its buffered file object costs as much as the read
    try:
        data = os.read(fd, _JPEG_READ)

        def have(count: int) -> bool:
            nonlocal data
            while len(data) < count:
                if count > _JPEG_HEADER_LIMIT or not (chunk := os.read(fd, max(count - len(data), _JPEG_READ))):
                    return False
                data += chunk
            return True

        if data[:3] != b"\xff\xd8\xff":
            return None
        position, size = 2, None
        while have(position + 4) and data[position] == 0xFF:
            marker = data[position + 1]
            end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
            if end < position + 4 or not have(end):
                return None
            segment = data[position + 4 : end]
            if marker == 0xDA:  # start of scan: the header is over
                return size
            if marker in _JPEG_SOF:
                # Pillow reads the precision, the size, the component count and whole 3-byte components.
                if len(segment) < 6 or segment[0] != 8 or segment[5] not in (1, 3, 4) or (len(segment) - 6) % 3:
                    return None
                size = (int.from_bytes(segment[3:5], "big"), int.from_bytes(segment[1:3], "big"))
            elif marker == 0xDB:
                if not _quantization_tables_ok(segment):
                    return None
            elif marker == 0xE0:
                if segment.startswith(b"JFIF") and len(segment) < 7:  # Pillow reads the JFIF version
                    return None
            elif marker not in _JPEG_SKIPPED:
                return None
            position = end
    finally:
        os.close(fd)
    return None


def image_file_problem(path: str, size: int) -> str | None:
    """Why the file at `path` (`size` bytes) cannot be a frame, or None: cheap, its header only."""
    if size == 0:
        return "is empty (0 bytes)"
    try:
        dimensions = _plain_jpeg_size(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if dimensions is not None and all(dimensions):
        width, height = dimensions
    else:
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
        except Image.DecompressionBombError as exc:
            return f"is too large to decode ({exc})"
        # Pillow signals unreadable bytes with many exception types; any of them means "not an image".
        except Exception as exc:  # noqa: BLE001
            return f"is not a readable image ({type(exc).__name__})"
    if width <= 0 or height <= 0:
        return f"has no pixels ({width}x{height})"
    if width * height > MAX_FRAME_PIXELS:
        return f"is {width}x{height}, over the {MAX_FRAME_PIXELS:,} pixels a frame may have"
    return None


class _ImageGuard:
    """Checks that image paths stay inside the root, without reading anything outside it, and (with
    `check_exists`) that each names a readable image. Results are cached per path: many lines share a
    video's frames and folder."""

    def __init__(self, root: Path, check_exists: bool) -> None:
        self.root = Path(os.path.realpath(root))
        self.check_exists = check_exists
        self._resolve_dir = lru_cache(maxsize=65536)(self._resolve_dir_uncached)
        self._problem = lru_cache(maxsize=65536)(self._problem_uncached)

    def _inside(self, real: str) -> bool:
        return real == str(self.root) or real.startswith(str(self.root) + os.sep)

    def _resolve_dir_uncached(self, relative_dir: str) -> str | None:
        real = os.path.realpath(self.root / relative_dir)
        return real if self._inside(real) else None

    def check(self, image: str) -> None:
        problem = self._problem(image)
        if problem is not None:
            raise _Invalid(problem)

    def _problem_uncached(self, image: str) -> str | None:
        try:
            self._check(image)
        except _Invalid as exc:
            return str(exc)
        return None

    def _check(self, image: str) -> None:
        pure = PurePosixPath(image)
        _require(
            bool(image) and "\\" not in image and "\0" not in image,
            f"image path {image!r} is empty or has a backslash or NUL",
        )
        _require(
            not pure.is_absolute() and not (len(image) > 1 and image[1] == ":"), f"image path {image!r} is absolute"
        )
        _require(".." not in pure.parts, f"image path {image!r} climbs out of the data root")
        real_dir = self._resolve_dir(str(pure.parent))
        _require(real_dir is not None, f"image path {image!r} resolves outside the data root")
        if not self.check_exists:
            return
        file_path = os.path.join(real_dir, pure.name)
        try:
            info = os.lstat(file_path)
        except OSError:
            raise _Invalid(f"image {image!r} does not exist") from None
        if stat.S_ISLNK(info.st_mode):
            file_path = os.path.realpath(file_path)
            _require(self._inside(file_path), f"image path {image!r} is a symlink resolving outside the data root")
            _require(os.path.isfile(file_path), f"image {image!r} does not exist")
            info = os.stat(file_path)
        else:
            _require(stat.S_ISREG(info.st_mode), f"image {image!r} is not a file")
        problem = image_file_problem(file_path, info.st_size)
        _require(problem is None, f"image {image!r} {problem}")


def _parse_line(text: str, number: int, guard: _ImageGuard, split: str = DEFAULT_SPLIT) -> Sample:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Invalid(f"not JSON ({exc.msg})") from None
    _require(isinstance(data, dict), "not a JSON object")
    sample_id = _typed(data, "id", str, "line")
    _require(bool(sample_id), "'id' is empty")
    images = _typed(data, "images", list, "line")
    _require(all(isinstance(i, str) for i in images), "'images' must be a list of strings")
    _require(bool(images), "'images' is empty: a sample needs at least one frame")
    conversations = _typed(data, "conversations", list, "line")
    metadata_given = data.get("metadata") is not None
    metadata = _typed(data, "metadata", dict, "line") if metadata_given else {}

    messages = []
    for index, turn in enumerate(conversations):
        where = f"conversations[{index}]"
        _require(isinstance(turn, dict), f"{where} must be an object")
        role, value = _typed(turn, "from", str, where), _typed(turn, "value", str, where)
        expected = HUMAN if index % 2 == 0 else GPT
        _require(role == expected, f"{where} is from {role!r}, expected {expected!r} (roles must alternate human/gpt)")
        _require(role == HUMAN or bool(value.strip()), f"{where} is an empty answer")
        messages.append(Message(role, value))
    _require(len(messages) >= 2 and len(messages) % 2 == 0, "conversations must be human/gpt pairs, at least one")

    placeholders = messages[0].text.count(IMAGE_PLACEHOLDER)
    _require(
        all(IMAGE_PLACEHOLDER not in m.text for m in messages[1:]),
        f"{IMAGE_PLACEHOLDER} placeholders outside the first turn",
    )
    _require(placeholders == len(images), f"{placeholders} {IMAGE_PLACEHOLDER} placeholders for {len(images)} images")
    for image in images:
        guard.check(image)

    qas = len(messages) // 2
    if not metadata_given:
        turns: tuple[TurnInfo, ...] = (TurnInfo(DEFAULT_TASK_TYPE, None, DEFAULT_FORMAT, None),) * qas
    elif "turns" in metadata:
        raw_turns = _typed(metadata, "turns", list, "metadata")
        turns = tuple(_turn_info(t, f"metadata.turns[{i}]") for i, t in enumerate(raw_turns))
    else:  # one set of task fields (or their defaults) for every QA of the line
        turns = (_turn_info(metadata, "metadata"),) * qas
    _require(len(turns) == qas, f"{len(turns)} turn metadata entries for {qas} QAs")
    return Sample(
        id=sample_id,
        images=tuple(images),
        conversations=tuple(messages),
        video_id=_typed(metadata, "video_id", str, "metadata") if metadata_given else default_video_id(images),
        split=_typed(metadata, "split", str, "metadata") if metadata_given else split,
        turns=turns,
        line=number,
        fps=_fps(metadata),
        metadata_given=metadata_given,
    )


def iter_samples(
    jsonl_path: Path | str,
    root: Path | str,
    *,
    strict: bool = False,
    rejections: list[Rejection] | None = None,
    check_images: bool = True,
    digest: Any = None,
) -> Iterator[Sample]:
    """Validated samples of a JSONL file whose image paths are relative to `root`. Invalid lines are
    skipped and appended to `rejections` (if given); with `strict`, the first one raises `DataError`
    naming file:line. `check_images=False` skips the existence and header checks (path safety is always
    checked). A file that resolves outside `root` raises `DataError` before anything is read."""
    path = Path(jsonl_path)
    guard = _ImageGuard(Path(root), check_images)
    split = default_split(path)
    refuse_outside_root(path, root)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if digest is not None:  # a hashlib object: the file hashed in the same read (see pipeline.length_cache)
                digest.update(raw)
            try:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise _Invalid("not UTF-8") from None
                _require(bool(text.strip()), "empty line")
                sample = _parse_line(text, number, guard, split)
            except _Invalid as exc:
                rejection = Rejection(str(path), number, str(exc))
                if strict:
                    raise DataError(str(rejection)) from None
                if rejections is not None:
                    rejections.append(rejection)
                continue
            yield sample


def load_samples(
    jsonl_path: Path | str, root: Path | str, *, strict: bool = False, check_images: bool = True
) -> SampleSet:
    """Every valid sample of a JSONL file, and the rejected lines with their reasons."""
    result = SampleSet()
    result.samples.extend(
        iter_samples(jsonl_path, root, strict=strict, rejections=result.rejections, check_images=check_images)
    )
    return result
