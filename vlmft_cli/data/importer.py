"""`vlmft data import`: users' own video conversations → the processed layout `data extract` writes.

Sources: ShareGPT-style JSONL or a JSON list (`conversations` from/value, or `messages` role/content as
ms-swift writes them, or ms-swift's `conversation` of human/assistant pairs) with `videos` or `images`;
a LLaMA-Factory `dataset_info.json` entry (`formatting` sharegpt or alpaca, its `columns` and `tags`);
and `robovqa-jsonl`, the processed JSONL written by hand (read by `schema.iter_samples`). A sample's
video is a frames folder, a list of image files or a video file, read by `video_source.read_video`:
`frames` picked as training picks them (final frame kept), size×size as extraction writes them.

What it decides: a video is its resolved files, wherever samples name it; all QAs naming one video form
its stage-2 conversation (in source order, an identical QA kept once), one stage-1 line each. The split
comes from the source (a `split` field, or `--val` for a second file or entry); else it is drawn per
video with the seed, so a video is never in two splits. Bad samples (not JSON, no conversation, roles
out of order, no video or one that does not decode, a path outside the media root, a split that is not
train/val) are counted with `file:line: reason` and never stop the import. The output is built in a
staging folder beside `--out` and renamed into place whole, `metadata.json` included.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli import __version__
from vlmft_cli.data.extract import check_frame_options
from vlmft_cli.data.frames import DISK_FULL_ERRNOS
from vlmft_cli.data.layout import METADATA_FILE, SPLITS, frame_name, frame_paths, safe_key, shard_id, video_image_dir
from vlmft_cli.data.merge import MAX_LISTED, check_references
from vlmft_cli.data.schema import (
    DEFAULT_FORMAT,
    DEFAULT_TASK_TYPE,
    Rejection,
    dumps_line,
    iter_samples,
    stage1_lines,
    stage2_line,
)
from vlmft_cli.errors import DataError
from vlmft_cli.fsutil import atomic_write_json, staged_folder
from vlmft_cli.reporting import NullReporter, Reporter

FORMATS: tuple[str, ...] = ("sharegpt", "llamafactory", "robovqa-jsonl")
FORMAT_VERSION = 1
#: Videos per images/<split>-NNNNN/ folder, so no folder holds more than a few thousand entries.
VIDEOS_PER_FOLDER = 1000
_VIDEOS_PER_TASK = 4
_MIN_VIDEOS_PER_WORKER = 32

# Why a sample is not in the output (metadata.json `skipped_reasons`).
SKIP_NOT_JSON = "not_json"
SKIP_BAD_CONVERSATION = "bad_conversation"
SKIP_NO_VIDEO = "no_video"
SKIP_OUTSIDE_ROOT = "outside_media_root"
SKIP_BAD_VIDEO = "unreadable_video"
SKIP_BAD_SPLIT = "bad_split"
SKIP_IN_BOTH_SPLITS = "video_in_both_splits"
SKIP_VIDEO_ID_TAKEN = "video_id_of_another_video"
SKIP_INVALID_LINE = "invalid_line"  # robovqa-jsonl: what the processed-JSONL reader rejects

_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "eval": "val",
    "dev": "val",
}
_MEDIA_TAG_RE = re.compile(r"<(?:image|video)>[ \t]*\n?")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")

# LLaMA-Factory's defaults (data/README.md of LLaMA-Factory: `columns` and `tags` of a dataset entry).
_LF_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": None,
    "messages": "conversations",
    "system": None,
    "images": None,
    "videos": None,
}
_LF_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
_LF_REMOTE_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


@dataclass(frozen=True)
class ImportOptions:
    format: str
    source: Path  # the JSON/JSONL file; for llamafactory its dataset_info.json
    out: Path
    dataset: str | None = None  # llamafactory: the entry of dataset_info.json
    val: str | None = None  # the validation file (sharegpt, robovqa-jsonl) or entry (llamafactory)
    media_dir: Path | None = None  # where relative media paths start; default: the source's folder
    frames: int = 16  # frames kept per video (sampled as training samples them)
    size: int = 288
    quality: int = 85
    val_ratio: float = 0.1  # share of videos drawn for val when the source names no split
    seed: int = 0
    workers: int | None = None  # processes decoding videos; default: every core
    strict: bool = False

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise DataError(f"--format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.format == "llamafactory" and not self.dataset:
            raise DataError(
                "--format llamafactory needs --dataset NAME", hint="name the entry of dataset_info.json to import"
            )
        if self.format != "llamafactory" and self.dataset:
            raise DataError("--dataset names an entry of a LLaMA-Factory dataset_info.json: use --format llamafactory")
        if not 1 <= self.frames <= 256:
            raise DataError(f"--frames {self.frames} is outside 1..256")
        check_frame_options(self.size, self.quality, self.workers)
        if not 0 <= self.val_ratio < 1:
            raise DataError(f"--val-ratio {self.val_ratio} is outside [0, 1)")


@dataclass
class ImportResult:
    out: Path
    metadata: dict[str, Any]
    already_complete: bool = False

    @property
    def problems(self) -> int:
        return int(self.metadata["skipped_samples_total"])


# --- bad samples ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A sample left out: where it is (`file:line`, or `file[item]` in a JSON list) and why."""

    source: str
    line: int | None
    item: int | None
    code: str
    reason: str

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else f"{self.source}[{self.item}]"

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class _Bad(ValueError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


# --- what the sources hold ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    source: str
    line: int | None = None
    item: int | None = None

    def skip(self, code: str, reason: str) -> Skipped:
        return Skipped(self.source, self.line, self.item, code, reason)


@dataclass(frozen=True)
class _Video:
    files: tuple[str, ...]  # real paths: one video file, or the frames in order
    label: str  # the folder, file or first frame's folder relative to the media root: the default video id
    kind: str  # "file" (a video file), "folder" (a frames folder) or "images" (an image list)

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    @property
    def description(self) -> str:
        """Where the video came from, for metadata.json."""
        return f"{self.label}/ ({len(self.files)} images listed)" if self.kind == "images" else self.label


@dataclass
class _SourceSample:
    where: _Where
    video: _Video
    qas: list[dict[str, Any]]
    split: str | None = None  # train/val when the source says
    video_id: str | None = None
    fps: float | None = None  # the frames' rate, when the source says


@dataclass(frozen=True)
class _Mapping:
    """How a record's fields are named (LLaMA-Factory `columns` and `tags`; the ShareGPT defaults)."""

    formatting: str = "sharegpt"  # or alpaca
    columns: dict[str, str | None] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    auto: bool = True  # ShareGPT/ms-swift: find the conversation and media under their usual names


@dataclass(frozen=True)
class _SourceFile:
    path: Path
    split: str | None  # "val" for the --val source
    mapping: _Mapping | None  # None: robovqa-jsonl


def _whole_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not {what} (not UTF-8: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}:{exc.colno}: not {what} ({exc.msg})") from None


def _records(path: Path) -> Iterator[tuple[_Where, Any]]:
    """(where, parsed record or a `_Bad`) for each record of a JSONL file (streamed) or a JSON list."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        first = handle.read(4096).lstrip()[:1]
        if first == b"[":
            for item, record in enumerate(_whole_json(path, "a JSON list"), start=1):
                yield _Where(str(path), item=item), record
            return
        handle.seek(0)
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield _Where(str(path), line=number), json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                yield _Where(str(path), line=number), _Bad(SKIP_NOT_JSON, "not UTF-8")
            except json.JSONDecodeError as exc:
                if number == 1 and first == b"{" and isinstance(_whole_json(path, "JSONL"), dict):
                    raise DataError(
                        f"{path} is one JSON object, not JSONL or a JSON list",
                        hint="a LLaMA-Factory dataset_info.json? use --format llamafactory --dataset NAME",
                    ) from None
                yield _Where(str(path), line=number), _Bad(SKIP_NOT_JSON, f"not JSON ({exc.msg})")


def _split_name(value: Any) -> str | None:
    if value is None:
        return None
    split = _SPLIT_NAMES.get(str(value).strip().lower()) if isinstance(value, str) else None
    if split is None:
        raise _Bad(SKIP_BAD_SPLIT, f"split {value!r} is not train or val (nor training/validation/valid/eval/dev)")
    return split


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Bad(SKIP_BAD_CONVERSATION, f"{what} is not a string ({type(value).__name__})")
    return value


def _strip_tags(text: str) -> tuple[str, int]:
    """The text without `<image>`/`<video>` tags (frames go in the first turn), and how many it had."""
    return _MEDIA_TAG_RE.sub("", text).strip(), len(_MEDIA_TAG_RE.findall(text))


def _messages(record: dict[str, Any], mapping: _Mapping) -> list[tuple[str, str]]:
    """(role, text) with role user/assistant/system, from whichever conversation the record carries."""
    tags = {**_LF_TAGS, **mapping.tags}
    if mapping.formatting == "alpaca":
        columns = {**_LF_COLUMNS, **mapping.columns}
        turns: list[tuple[str, str]] = []
        if columns["system"] and record.get(columns["system"]):
            turns.append(("system", _text(record[columns["system"]], f"{columns['system']!r}")))
        history = record.get(columns["history"]) if columns["history"] else None
        for n, pair in enumerate(history or []):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise _Bad(SKIP_BAD_CONVERSATION, f"{columns['history']!r}[{n}] is not a [question, answer] pair")
            turns += [("user", _text(pair[0], "a history question")), ("assistant", _text(pair[1], "a history answer"))]
        prompt = _text(record.get(columns["prompt"], ""), f"{columns['prompt']!r}")
        query = record.get(columns["query"]) if columns["query"] else None
        question = f"{prompt}\n{_text(query, repr(columns['query']))}" if query else prompt
        turns += [("user", question), ("assistant", _text(record.get(columns["response"]), f"{columns['response']!r}"))]
        return turns
    if mapping.auto and "conversation" in record and "conversations" not in record and "messages" not in record:
        # ms-swift's ShareGPT: [{"human": …, "assistant": …}, …] with the system prompt beside it.
        pairs = record["conversation"]
        if not isinstance(pairs, list):
            raise _Bad(SKIP_BAD_CONVERSATION, "'conversation' is not a list")
        turns = [("system", _text(record["system"], "'system'"))] if record.get("system") else []
        for n, pair in enumerate(pairs):
            if not isinstance(pair, dict):
                raise _Bad(SKIP_BAD_CONVERSATION, f"conversation[{n}] is not an object")
            turns += [("user", _text(pair.get("human"), f"conversation[{n}].human"))]
            turns += [("assistant", _text(pair.get("assistant"), f"conversation[{n}].assistant"))]
        return turns
    if mapping.auto:
        key = next((k for k in ("conversations", "messages") if k in record), None)
        if key is None:
            raise _Bad(SKIP_BAD_CONVERSATION, "no 'conversations' or 'messages'")
    else:
        key = mapping.columns.get("messages") or _LF_COLUMNS["messages"]
        if key not in record:
            raise _Bad(SKIP_BAD_CONVERSATION, f"no {key!r} (the entry's messages column)")
    messages = record[key]
    if not isinstance(messages, list):
        raise _Bad(SKIP_BAD_CONVERSATION, f"{key!r} is not a list")
    roles = {
        tags["user_tag"]: "user",
        tags["assistant_tag"]: "assistant",
        tags["system_tag"]: "system",
    }
    if mapping.auto:  # either convention, whatever the key
        roles.update(
            {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
        )
    system_key = "system" if mapping.auto else mapping.columns.get("system")
    has_system = bool(system_key and record.get(system_key))
    turns = [("system", _text(record[system_key], repr(system_key)))] if has_system else []
    for n, message in enumerate(messages):
        where = f"{key}[{n}]"
        if not isinstance(message, dict):
            raise _Bad(SKIP_BAD_CONVERSATION, f"{where} is not an object")
        if mapping.auto:
            role_key = "from" if "from" in message else "role"
            content_key = "value" if "value" in message else "content"
        else:
            role_key, content_key = tags["role_tag"], tags["content_tag"]
        role = message.get(role_key)
        if role not in roles:
            known = ", ".join(repr(r) for r in roles)
            raise _Bad(
                SKIP_BAD_CONVERSATION,
                f"{where} {role_key!r} is {role!r}: vlmft trains on user and assistant turns ({known})",
            )
        turns.append((roles[role], _text(message.get(content_key), f"{where} {content_key!r}")))
    return turns


def _qas(turns: list[tuple[str, str]], frames_tagged: int | None) -> tuple[list[tuple[str, str]], int]:
    """Question/answer pairs from alternating user/assistant turns (a leading system turn dropped, counted
    in the second value). `frames_tagged`: how many media tags the source may carry (None: any)."""
    system = 0
    while turns and turns[0][0] == "system":  # a system column and a system message: one prompt left out
        system, turns = 1, turns[1:]
    if not turns:
        raise _Bad(SKIP_BAD_CONVERSATION, "no user/assistant turns")
    pairs, tags = [], 0
    for n in range(0, len(turns), 2):
        if turns[n][0] != "user" or n + 1 >= len(turns) or turns[n + 1][0] != "assistant":
            got = " ".join(role for role, _ in turns)
            raise _Bad(
                SKIP_BAD_CONVERSATION, f"turns must alternate user/assistant and end with an answer (got: {got})"
            )
        question, found = _strip_tags(turns[n][1])
        answer, in_answer = _strip_tags(turns[n + 1][1])
        if in_answer:
            raise _Bad(SKIP_BAD_CONVERSATION, f"answer {n // 2 + 1} holds an <image>/<video> tag")
        if not answer:
            raise _Bad(SKIP_BAD_CONVERSATION, f"answer {n // 2 + 1} is empty")
        tags += found
        pairs.append((question, answer))
    if frames_tagged is not None and tags not in (0, frames_tagged):
        raise _Bad(SKIP_BAD_CONVERSATION, f"{tags} <image>/<video> tags for {frames_tagged} media item(s)")
    return pairs, system


class _Media:
    """Resolves media paths against the media root; nothing outside it (a symlink included) is read."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self._videos: dict[str, _Video | tuple[str, str]] = {}  # many samples name one video: look once

    def _inside(self, real: str) -> bool:
        return real == str(self.root) or real.startswith(str(self.root) + os.sep)

    def _path(self, value: Any) -> tuple[str, str]:
        """(real path, its path relative to the root)."""
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            raise _Bad(SKIP_NO_VIDEO, f"media path {value!r} is not a path")
        if _URL_RE.match(value):
            raise _Bad(SKIP_NO_VIDEO, f"{value}: URLs are not read (download the media and give its path)")
        path = Path(value) if os.path.isabs(value) else self.root / value
        real = os.path.realpath(path)
        if not self._inside(real):
            raise _Bad(SKIP_OUTSIDE_ROOT, f"{value} resolves outside the media root {self.root} (to {real})")
        if not os.path.exists(real):
            raise _Bad(SKIP_NO_VIDEO, f"{value} does not exist under {self.root}")
        return real, os.path.relpath(real, self.root)

    def video(self, value: Any) -> _Video:
        """A `videos` item: a video file, a frames folder, or a list of frames."""
        if isinstance(value, list):
            return self.images(value)
        key = value if isinstance(value, str) else repr(value)
        found = self._videos.get(key)
        if found is None:
            try:
                found = self._video(value)
            except _Bad as exc:
                found = (exc.code, str(exc))
            self._videos[key] = found
        if isinstance(found, tuple):
            raise _Bad(*found)
        return found

    def _video(self, value: Any) -> _Video:
        from vlmft_cli.video_source import frame_files, is_image_file, is_video_file

        real, relative = self._path(value)
        if os.path.isdir(real):
            try:
                files = frame_files(real)
            except DataError as exc:
                raise _Bad(SKIP_NO_VIDEO, str(exc)) from None
            frames = []
            for file in files:
                frame = os.path.realpath(file)
                if not self._inside(frame):
                    raise _Bad(SKIP_OUTSIDE_ROOT, f"{file} resolves outside the media root {self.root} (to {frame})")
                frames.append(frame)
            return _Video(tuple(frames), relative, "folder")
        if is_video_file(real):
            return _Video((real,), relative, "file")
        if is_image_file(real):
            return _Video((real,), os.path.dirname(relative) or ".", "images")
        raise _Bad(SKIP_NO_VIDEO, f"{value} is not a video file, a frames folder or an image")

    def images(self, values: Any) -> _Video:
        """An image list: the frames of one video, in order."""
        from vlmft_cli.video_source import is_image_file

        if not isinstance(values, list) or not values:
            raise _Bad(SKIP_NO_VIDEO, "the image list is empty")
        frames, first = [], ""
        for value in values:
            real, relative = self._path(value)
            if not (os.path.isfile(real) and is_image_file(real)):
                raise _Bad(SKIP_NO_VIDEO, f"{value} is not an image file (an image list holds the frames of one video)")
            frames.append(real)
            first = first or relative
        return _Video(tuple(frames), os.path.dirname(first) or ".", "images")


def _fps(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise _Bad(SKIP_BAD_CONVERSATION, f"'fps' {value!r} is not a positive number")
    return float(value)


def _optional_text(record: dict[str, Any], key: str, default: str | None) -> str | None:
    value = record.get(key)
    if value is None:
        return default
    return _text(value, repr(key))


def _conversation_sample(
    where: _Where, record: Any, mapping: _Mapping, media: _Media, split: str | None
) -> tuple[_SourceSample, int]:
    """A ShareGPT / ms-swift / LLaMA-Factory record → a sample (and 1 if a system prompt was dropped)."""
    if not isinstance(record, dict):
        raise _Bad(SKIP_BAD_CONVERSATION, "not a JSON object")
    if mapping.auto:
        videos_key, images_key = "videos", "images"
    else:
        videos_key, images_key = mapping.columns.get("videos"), mapping.columns.get("images")
    videos = record.get(videos_key) if videos_key else None
    images = record.get(images_key) if images_key else None
    if videos and images:
        raise _Bad(SKIP_NO_VIDEO, f"both {videos_key!r} and {images_key!r}: a sample shows one video")
    if videos:
        videos = [videos] if isinstance(videos, str) else videos
        if not isinstance(videos, list) or len(videos) != 1:
            count = len(videos) if isinstance(videos, list) else "no list of"
            raise _Bad(SKIP_NO_VIDEO, f"{videos_key!r} holds {count} videos: a sample shows exactly one")
        video, tagged = media.video(videos[0]), 1
    elif images:
        video = media.images(images if isinstance(images, list) else [images])
        tagged = len(images) if isinstance(images, list) else 1
    else:
        mapped = [key for key in (videos_key, images_key) if key]
        raise _Bad(
            SKIP_NO_VIDEO,
            f"no video: {' or '.join(repr(k) for k in mapped)} missing or empty"
            if mapped
            else "no video: the dataset entry maps no 'videos' or 'images' column",
        )
    pairs, system = _qas(_messages(record, mapping), tagged)
    task_type = _optional_text(record, "task_type", DEFAULT_TASK_TYPE)
    subtype = _optional_text(record, "subtype", None)
    answer_format = _optional_text(record, "format", DEFAULT_FORMAT)
    qas = [
        {
            "question": q,
            "answer": a,
            "task_type": task_type,
            "subtype": subtype,
            "format": answer_format,
            "frame_range": None,
        }
        for q, a in pairs
    ]
    return (
        _SourceSample(
            where,
            video,
            qas,
            split=_split_name(record.get("split")) or split,
            video_id=_optional_text(record, "video_id", None),
            fps=_fps(record.get("fps")),
        ),
        system,
    )


def _robovqa_samples(path: Path, media: _Media, split: str | None, skipped: list[Skipped]) -> Iterator[_SourceSample]:
    """Hand-written processed JSONL (images relative to the media root), read by the training reader."""
    rejections: list[Rejection] = []
    for sample in iter_samples(path, media.root, rejections=rejections):
        where = _Where(str(path), line=sample.line)
        try:
            files = tuple(os.path.realpath(media.root / image) for image in sample.images)
            label = os.path.dirname(os.path.relpath(files[0], media.root)) or "."
            # Without metadata the reader's split is the file's name: a guess, not the source's word.
            named = sample.split if sample.metadata_given else None
            qas = [
                {
                    "question": question.strip(),
                    "answer": answer,
                    "task_type": info.task_type,
                    "subtype": info.subtype,
                    "format": info.format,
                    "frame_range": list(info.frame_range) if info.frame_range else None,
                }
                for question, answer, info in zip(sample.questions, sample.answers, sample.turns, strict=True)
            ]
            yield _SourceSample(
                where,
                _Video(files, label, "images"),
                qas,
                split=_split_name(named) or split,
                video_id=sample.video_id if sample.metadata_given else None,
                fps=sample.fps,
            )
        except _Bad as exc:
            skipped.append(where.skip(exc.code, str(exc)))
    skipped.extend(_Where(r.path, line=r.line).skip(SKIP_INVALID_LINE, r.reason) for r in rejections)


# --- LLaMA-Factory dataset_info.json ----------------------------------------------------------------------


def _dataset_entry(info_path: Path, name: str) -> tuple[list[Path], _Mapping]:
    """The files and field mapping of entry `name` of a LLaMA-Factory dataset_info.json."""
    try:
        info = _whole_json(info_path, "a dataset_info.json")
    except OSError as exc:
        raise DataError(f"cannot read {info_path}: {exc.strerror or exc}") from None
    if not isinstance(info, dict):
        raise DataError(f"{info_path}: not a dataset_info.json (an object of named entries)")
    if name not in info:
        import difflib

        close = difflib.get_close_matches(name, list(info), n=1)
        raise DataError(
            f"dataset {name!r} is not in {info_path}" + (f" (did you mean {close[0]!r}?)" if close else ""),
            hint=f"entries: {', '.join(sorted(info)[:20])}",
        )
    entry = info[name]
    where = f"{info_path}: entry {name!r}"
    if not isinstance(entry, dict):
        raise DataError(f"{where} is not an object")
    if not entry.get("file_name"):
        remote = [key for key in _LF_REMOTE_KEYS if entry.get(key)]
        raise DataError(
            f"{where} has no file_name" + (f" ({', '.join(remote)} names a remote dataset)" if remote else ""),
            hint="vlmft imports local files: download the dataset and point file_name at it",
        )
    if entry.get("ranking"):
        raise DataError(f"{where} is a preference dataset (ranking: true): vlmft trains on plain conversations")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise DataError(f"{where}: formatting {formatting!r} is not alpaca or sharegpt")
    columns, tags = entry.get("columns") or {}, entry.get("tags") or {}
    if not isinstance(columns, dict) or not isinstance(tags, dict):
        raise DataError(f"{where}: 'columns' and 'tags' must be objects")
    target = info_path.parent / entry["file_name"]
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() in (".json", ".jsonl"))
        if not files:
            raise DataError(f"{where}: folder {target} holds no .json or .jsonl file")
    elif target.is_file():
        files = [target]
    else:
        raise DataError(f"{where}: file_name {entry['file_name']!r} does not exist in {info_path.parent}")
    for file in files:
        if file.suffix.lower() not in (".json", ".jsonl"):
            raise DataError(f"{file}: vlmft reads .json and .jsonl datasets (convert {file.suffix} first)")
    mapping = _Mapping(formatting, {k: v for k, v in columns.items()}, {k: v for k, v in tags.items()}, auto=False)
    return files, mapping


# --- the plan: videos, their QAs and splits ---------------------------------------------------------------


@dataclass
class _PlannedVideo:
    video_id: str
    video: _Video
    samples: list[_SourceSample] = field(default_factory=list)
    split: str = "train"
    qas: list[dict[str, Any]] = field(default_factory=list)
    fps: float | None = None


@dataclass
class _Plan:
    videos: list[_PlannedVideo]
    split_from: str  # "source" or "seed"
    duplicate_qas_dropped: int = 0


def _video_ids(samples: list[_SourceSample], skipped: list[Skipped]) -> list[_PlannedVideo]:
    """One entry per distinct video, in order of first mention; ids from the source or the video's path."""
    by_files: dict[tuple[str, ...], _PlannedVideo] = {}
    by_id: dict[str, _PlannedVideo] = {}
    for sample in samples:
        planned = by_files.get(sample.video.files)
        if planned is None:
            video_id = sample.video_id or sample.video.label
            if video_id in by_id and sample.video_id is None:  # another video from the same folder
                digest = hashlib.sha1("\n".join(sample.video.files).encode("utf-8", "surrogatepass")).hexdigest()
                video_id = f"{video_id}#{digest[:10]}"
            if video_id in by_id:
                first = by_id[video_id].samples[0].where
                where = f"{first.source}:{first.line}" if first.line is not None else f"{first.source}[{first.item}]"
                skipped.append(
                    sample.where.skip(
                        SKIP_VIDEO_ID_TAKEN, f"video_id {video_id!r} already names another video ({where})"
                    )
                )
                continue
            planned = by_files[sample.video.files] = by_id[video_id] = _PlannedVideo(video_id, sample.video)
        planned.samples.append(sample)
    return list(by_files.values())


def _assign_splits(
    videos: list[_PlannedVideo], by_source: bool, options: ImportOptions, skipped: list[Skipped]
) -> None:
    if by_source:
        for video in videos:
            named = {sample.split or "train" for sample in video.samples}
            video.split = "train" if "train" in named else "val"
            if len(named) > 1:
                kept = []
                for sample in video.samples:
                    if (sample.split or "train") == "train":
                        kept.append(sample)
                    else:
                        skipped.append(
                            sample.where.skip(
                                SKIP_IN_BOTH_SPLITS, f"video {video.video_id!r} is also in train; kept there only"
                            )
                        )
                video.samples = kept
        return
    ids = sorted(video.video_id for video in videos)
    random.Random(options.seed).shuffle(ids)
    count = round(len(ids) * options.val_ratio)
    if options.val_ratio > 0 and len(ids) >= 2:
        count = min(max(count, 1), len(ids) - 1)
    val = set(ids[:count])
    for video in videos:
        video.split = "val" if video.video_id in val else "train"


def _plan(samples: list[_SourceSample], options: ImportOptions, skipped: list[Skipped]) -> _Plan:
    videos = _video_ids(samples, skipped)
    by_source = options.val is not None or any(sample.split is not None for sample in samples)
    _assign_splits(videos, by_source, options, skipped)
    plan = _Plan([], "source" if by_source else "seed")
    for video in videos:
        seen: set[tuple[str, str, str, str | None]] = set()
        for sample in video.samples:
            for qa in sample.qas:
                identity = (qa["question"], qa["answer"], qa["task_type"], qa["subtype"])
                if identity in seen:
                    plan.duplicate_qas_dropped += 1
                    continue
                seen.add(identity)
                video.qas.append(qa)
            video.fps = video.fps or sample.fps
        if video.qas:
            plan.videos.append(video)
    return plan


# --- frames ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FrameJob:
    index: int
    files: tuple[str, ...]
    is_file: bool
    image_dir: str
    fps: float | None


@dataclass(frozen=True)
class _FrameOutcome:
    index: int
    frames: int = 0
    fps: float | None = None
    source_frames: int = 0
    error: str | None = None


def write_frames(jobs: list[_FrameJob], root: str, frames: int, size: int, quality: int) -> list[_FrameOutcome]:
    """Read each video as training samples it and write its frames as `NN.jpg` (runs in worker processes)."""
    from vlmft_cli.video_source import read_video

    outcomes = []
    for job in jobs:
        try:
            video = read_video(
                job.files[0] if job.is_file else list(job.files), max_frames=frames, size=size, fps=job.fps
            )
        except DataError as exc:
            outcomes.append(_FrameOutcome(job.index, error=str(exc)))
            continue
        folder = Path(root, job.image_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for n, image in enumerate(video.frames):
            image.save(folder / frame_name(n), format="JPEG", quality=quality)
        outcomes.append(_FrameOutcome(job.index, len(video.frames), video.fps, video.source_frames))
    return outcomes


def _write_all_frames(
    jobs: list[_FrameJob], root: Path, options: ImportOptions, reporter: Reporter
) -> list[_FrameOutcome]:
    from vlmft_cli.data.workers import default_workers, frame_pool

    # Spawning a worker costs about a second: worth it from a few dozen videos each.
    workers = min(options.workers or default_workers(), max(1, len(jobs) // _MIN_VIDEOS_PER_WORKER))
    batches = [jobs[i : i + _VIDEOS_PER_TASK] for i in range(0, len(jobs), _VIDEOS_PER_TASK)]
    outcomes: list[_FrameOutcome] = []
    with reporter.progress("Importing videos", total=len(jobs), unit="videos") as task:
        if workers == 1:
            for batch in batches:
                outcomes += write_frames(batch, str(root), options.frames, options.size, options.quality)
                task.advance(len(batch))
        else:
            with frame_pool(workers) as pool:
                futures = [
                    pool.submit(write_frames, batch, str(root), options.frames, options.size, options.quality)
                    for batch in batches
                ]
                for future in futures:
                    done = future.result()
                    outcomes += done
                    task.advance(len(done))
    return outcomes


# --- the whole import --------------------------------------------------------------------------------------


def _sources(options: ImportOptions) -> tuple[list[_SourceFile], Path]:
    """The files to read (with the split a --val file stands for) and the media root."""
    source = Path(options.source)
    if not source.is_file():
        raise DataError(
            f"{source} is not a file" + (" (a folder? give the dataset_info.json in it)" if source.is_dir() else "")
        )
    media_root = Path(options.media_dir) if options.media_dir is not None else source.parent
    if not media_root.is_dir():
        raise DataError(f"--media-dir {media_root} is not a folder")
    if options.format == "llamafactory":
        assert options.dataset is not None
        files, mapping = _dataset_entry(source, options.dataset)
        result = [_SourceFile(path, None, mapping) for path in files]
        if options.val is not None:
            val_files, val_mapping = _dataset_entry(source, options.val)
            result += [_SourceFile(path, "val", val_mapping) for path in val_files]
        return result, media_root
    mapping = _Mapping() if options.format == "sharegpt" else None
    result = [_SourceFile(source, None, mapping)]
    if options.val is not None:
        val = Path(options.val)
        if not val.is_file():
            raise DataError(f"--val {val} is not a file")
        result.append(_SourceFile(val, "val", mapping))
    return result, media_root


@dataclass
class _Read:
    samples: list[_SourceSample] = field(default_factory=list)
    records: int = 0  # lines or list items read, bad ones included
    system_dropped: int = 0  # system prompts left out (the `system_prompt` setting decides training's)


def _read_samples(files: list[_SourceFile], media: _Media, skipped: list[Skipped], reporter: Reporter) -> _Read:
    read = _Read()
    with reporter.progress("Reading samples", total=None, unit="samples") as task:
        for file in files:
            _read_file(file, media, skipped, read, task)
    return read


def _read_file(file: _SourceFile, media: _Media, skipped: list[Skipped], read: _Read, task: Any) -> None:
    if file.mapping is None:
        before = len(skipped)
        new = list(_robovqa_samples(file.path, media, file.split, skipped))
        read.samples += new
        read.records += len(new) + len(skipped) - before
        task.advance(len(new) + len(skipped) - before)
        return
    count = 0
    for where, record in _records(file.path):
        read.records += 1
        count += 1
        if count % 1000 == 0:
            task.advance(1000)
        try:
            if isinstance(record, _Bad):
                raise record
            sample, system = _conversation_sample(where, record, file.mapping, media, file.split)
        except _Bad as exc:
            skipped.append(where.skip(exc.code, str(exc)))
            continue
        read.samples.append(sample)
        read.system_dropped += system
    task.advance(count % 1000)


def _fingerprint(options: ImportOptions, files: list[_SourceFile], media_root: Path) -> dict[str, Any]:
    """What decides the output: a rerun with the same fingerprint over a finished output does nothing."""
    from vlmft_cli.fsutil import sha256_file

    used = {k: v for k, v in asdict(options).items() if k not in ("source", "out", "workers", "strict", "media_dir")}
    return {
        "format_version": FORMAT_VERSION,
        "options": used,
        "media_root": os.path.realpath(media_root),
        "sources": [[str(Path(f.path).resolve()), f.split, sha256_file(Path(f.path))] for f in files]
        + (
            [[str(Path(options.source).resolve()), "dataset_info", sha256_file(Path(options.source))]]
            if options.format == "llamafactory"
            else []
        ),
    }


def _check_output(out: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The finished metadata when `out` already holds this very import; refuses any other non-empty folder."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    metadata_path = out / METADATA_FILE
    if metadata_path.is_file():
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{metadata_path} is unreadable: {exc}") from None
        if isinstance(metadata, dict) and metadata.get("fingerprint") == fingerprint:
            return metadata
        raise DataError(
            f"{out} holds other data (another import or extraction, or other options)",
            hint="choose a new or empty --out folder",
        )
    if out.is_dir() and any(out.iterdir()):
        raise DataError(f"--out {out} is not empty", hint="choose a new or empty folder")
    return None


def run_import(options: ImportOptions, reporter: Reporter | None = None) -> ImportResult:
    """Import `options.source` into `options.out` (see the module docstring)."""
    reporter = reporter or NullReporter()
    options.validate()
    started = time.monotonic()
    out = Path(options.out)
    files, media_root = _sources(options)
    fingerprint = _fingerprint(options, files, media_root)
    finished = _check_output(out, fingerprint)
    if finished is not None:
        reporter.info(f"{out} is already complete; nothing to do")
        return ImportResult(out, finished, already_complete=True)

    media = _Media(media_root)
    skipped: list[Skipped] = []
    read = _read_samples(files, media, skipped, reporter)
    plan = _plan(read.samples, options, skipped)
    reporter.info(
        f"{read.records} samples read from {', '.join(str(f.path) for f in files)}: {len(plan.videos)} videos, "
        f"{len(skipped)} skipped so far; split {'from the source' if plan.split_from == 'source' else f'per video, seed {options.seed}'}"
    )

    # Folders per split, in order of first mention; a key that another id of the split already has (a
    # 40-bit hash clash of two unsafe ids) would share a folder, so that video is left out.
    jobs: list[_FrameJob] = []
    keys: dict[int, str] = {}
    for split in SPLITS:
        taken: dict[str, str] = {}
        in_split = [(n, video) for n, video in enumerate(plan.videos) if video.split == split]
        for position, (n, video) in enumerate(in_split):
            key = safe_key(video.video_id)
            if taken.setdefault(key, video.video_id) != video.video_id:
                for sample in video.samples:
                    skipped.append(
                        sample.where.skip(
                            SKIP_VIDEO_ID_TAKEN, f"folder name {key!r} is already video id {taken[key]!r}'s"
                        )
                    )
                continue
            keys[n] = key
            image_dir = video_image_dir(shard_id(split, position // VIDEOS_PER_FOLDER), key)
            jobs.append(_FrameJob(n, video.video.files, video.video.is_file, image_dir, video.fps))

    try:
        metadata = _write_output(out, options, plan, jobs, keys, media, read, skipped, fingerprint, started, reporter)
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        raise DataError(
            f"disk full ({exc.strerror}) writing the import beside {out}: nothing was kept",
            hint="free space on that disk and rerun the same command",
        ) from None
    return ImportResult(out, metadata)


def _write_output(
    out: Path,
    options: ImportOptions,
    plan: _Plan,
    jobs: list[_FrameJob],
    keys: dict[int, str],
    media: _Media,
    read: _Read,
    skipped: list[Skipped],
    fingerprint: dict[str, Any],
    started: float,
    reporter: Reporter,
) -> dict[str, Any]:
    """Frames, the four JSONL files and metadata.json, built in a staging folder renamed to `out` whole."""
    with staged_folder(out) as stage:
        outcomes = {o.index: o for o in _write_all_frames(jobs, stage, options, reporter)}
        splits: dict[str, dict[str, Any]] = {}
        frames_per_video: Counter[int] = Counter()
        videos_meta: list[dict[str, Any]] = []
        for split in SPLITS:
            stats = {
                "videos": 0,
                "frames": 0,
                "stage1_lines": 0,
                "stage2_lines": 0,
                "task_types": Counter(),
                "formats": Counter(),
            }
            stage1, stage2 = [], []
            for job in jobs:
                video = plan.videos[job.index]
                if video.split != split:
                    continue
                outcome = outcomes[job.index]
                if outcome.error is not None:
                    for sample in video.samples:
                        skipped.append(sample.where.skip(SKIP_BAD_VIDEO, outcome.error))
                    continue
                images = frame_paths(job.image_dir, outcome.frames)
                key = keys[job.index]
                lines = stage1_lines(key, video.video_id, split, images, video.qas, fps=outcome.fps)
                stage1 += [dumps_line(line) for line in lines]
                stage2.append(dumps_line(stage2_line(key, video.video_id, split, images, video.qas, fps=outcome.fps)))
                stats["videos"] += 1
                stats["frames"] += outcome.frames
                stats["stage1_lines"] += len(lines)
                stats["stage2_lines"] += 1
                stats["task_types"].update(qa["task_type"] for qa in video.qas)
                stats["formats"].update(qa["format"] for qa in video.qas)
                frames_per_video[outcome.frames] += 1
                if len(videos_meta) < MAX_LISTED:
                    videos_meta.append(
                        {
                            "video_id": video.video_id,
                            "split": split,
                            "image_dir": job.image_dir,
                            "source": video.video.description,
                            "source_frames": outcome.source_frames,
                            "frames": outcome.frames,
                            "fps": outcome.fps,
                        }
                    )
            for stage_name, lines_text in (("stage1", stage1), ("stage2", stage2)):
                (stage / stage_name).mkdir(exist_ok=True)
                (stage / stage_name / f"{split}.jsonl").write_text("".join(lines_text), encoding="utf-8")
            stats["task_types"] = dict(sorted(stats["task_types"].items()))
            stats["formats"] = dict(sorted(stats["formats"].items()))
            splits[split] = stats
        (stage / "images").mkdir(exist_ok=True)
        check_references(stage)
        reasons = Counter(s.code for s in skipped)
        metadata = {
            "vlmft_version": __version__,
            "format_version": FORMAT_VERSION,
            "imported_from": {
                "format": options.format,
                "source": str(options.source),
                "dataset": options.dataset,
                "val": options.val,
                "media_root": str(media.root),
            },
            "options": {
                "size": options.size,
                "quality": options.quality,
                "frames": options.frames,
                "val_ratio": options.val_ratio,
                "seed": options.seed,
            },
            "fingerprint": fingerprint,
            "split_from": plan.split_from,
            "splits": splits,
            "samples_read": read.records,
            "duplicate_qas_dropped": plan.duplicate_qas_dropped,
            "system_prompts_dropped": read.system_dropped,
            "frames_per_video": {str(k): v for k, v in sorted(frames_per_video.items())},
            "skipped_samples_total": len(skipped),
            "skipped_reasons": dict(sorted(reasons.items())),
            "skipped_samples": [
                {"source": s.source, "line": s.line, "item": s.item, "reason": s.code, "detail": s.reason}
                for s in skipped[:MAX_LISTED]
            ],
            "videos": videos_meta,
            "timings": {"total_s": round(time.monotonic() - started, 3)},
        }
        atomic_write_json(stage / METADATA_FILE, metadata, ensure_ascii=False)
    return metadata
