"""The cached plan of one split: its `ExampleTable` (exact lengths included) and its counts, so a resume,
a second run, a dry run or an evaluation of unchanged data skips reading and tokenizing every line.

One rule for where: under the `home` setting, `{home}/plan-cache/`, never in the data folder (which may be
read-only, and stays as extraction wrote it). A cache file is named by the JSONL file's resolved path and
the key of everything else the examples depend on (see `cache_key`: backend, processor fingerprint,
stage, split, frames, frame sampling, fps, max length, system prompt, pack mode, subset), and it holds the
JSONL's sha256 (taken in the read that parsed it) and its identity (size, inode, mtime and ctime in ns):
it is used only while the file has that identity, so a hit reads nothing of the JSONL, and any write to
it (which moves its ctime) means the file is parsed, and hashed, again in one read.

The format is a NumPy `.npz` read with `allow_pickle=False` (columns as arrays, string tables as one
JSON document), written atomically; one that does not load or does not hold together is ignored with a
warning and computed again, never trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from vlmft_cli.data.schema import TurnInfo
from vlmft_cli.model_backend import Turn
from vlmft_cli.pipeline.examples import ExampleTable

FORMAT = 1
CACHE_DIR = "plan-cache"
_ARRAYS = {  # column → array typecode
    "frame_of": "i",
    "video_of": "i",
    "qa_start": "q",
    "question_of": "i",
    "answer_of": "i",
    "info_of": "i",
    "lengths": "i",
    "fps": "d",
    "lines": "i",
}
_DTYPES = {"i": np.int32, "q": np.int64, "d": np.float64}


class CacheDamaged(ValueError):
    """A cache file that cannot be trusted (unreadable, partial, inconsistent)."""


def processor_fingerprint(processor: Any) -> str:
    """sha256 over what decides token counts: the tokenizer (its whole serialised form for a fast
    tokenizer, else vocabulary and added tokens), the image processor's settings, and the processor's
    plain fields (image tokens per frame, system prompt, frame size, fps…)."""
    digest = hashlib.sha256()
    tokenizer = getattr(processor, "tokenizer", processor)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps(sorted((str(k), str(v)) for k, v in tokenizer.get_added_vocab().items())).encode())
    digest.update(repr(getattr(tokenizer, "chat_template", None)).encode())
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None and hasattr(image_processor, "to_json_string"):
        digest.update(image_processor.to_json_string().encode())
    names = (
        [f.name for f in dataclasses.fields(processor)]
        if dataclasses.is_dataclass(processor)
        else sorted(vars(processor))
    )
    for name in names:
        value = getattr(processor, name, None)
        if value is None or isinstance(value, (bool, int, float, str, tuple)) or dataclasses.is_dataclass(value):
            digest.update(f"{name}={value!r};".encode())
    return digest.hexdigest()


def cache_key(inputs: dict[str, Any]) -> str:
    """A short digest of the settings the examples depend on (`inputs`, JSON-able)."""
    document = json.dumps({"format": FORMAT, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()[:32]


def cache_file(home: Path, jsonl: Path, key: str) -> Path:
    where = hashlib.sha256(os.path.realpath(jsonl).encode()).hexdigest()[:16]
    return Path(home) / CACHE_DIR / f"{jsonl.parent.name}-{jsonl.stem}-{where}-{key}.npz"


def file_identity(path: Path) -> tuple[int, ...]:
    """What tells a file's content changed without reading it, as git's index does: size, inode, and the
    modification and status-change times in ns (a write moves both; the ctime cannot be set back)."""
    info = os.stat(path)
    return info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns


def save(path: Path, table: ExampleTable, *, key: str, identity: tuple[int, ...], summary: dict[str, Any]) -> None:
    """Write the table and `summary` (JSON-able, with the JSONL's `sha256`) to `path`, atomically."""
    from vlmft_cli.fsutil import atomic_write_bytes

    meta = {
        "format": FORMAT,
        "key": key,
        "identity": list(identity),
        "summary": summary,
        "ids": table.ids,
        "frames": table.frames,
        "videos": table.videos,
        "turns": [[turn.role, turn.text] for turn in table.turn_table],
        "infos": [
            [i.task_type, i.subtype, i.format, list(i.frame_range) if i.frame_range else None] for i in table.info_table
        ],
    }
    arrays = {
        name: np.frombuffer(getattr(table, name), dtype=_DTYPES[code])
        if len(getattr(table, name))
        else np.zeros(0, _DTYPES[code])
        for name, code in _ARRAYS.items()
    }
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta, ensure_ascii=False).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, *, key: str, identity: tuple[int, ...]) -> tuple[ExampleTable, dict[str, Any]]:
    """(table, summary with the JSONL's `sha256` when it was read) from `path`, if it was written for `key` and
    for the JSONL file as it is now (`identity`, see `file_identity`). `CacheDamaged` for a file that
    does not load or hold together; `KeyError` for one written for other data or settings (stale)."""
    meta, arrays = _load(path)
    if meta.get("key") != key:
        raise KeyError("written for other settings")
    if meta.get("identity") != list(identity):
        raise KeyError("the data file changed")
    try:
        table = _table(meta, arrays)
        summary = meta["summary"]
        if not isinstance(summary, dict) or not isinstance(summary.get("sha256"), str):
            raise TypeError("summary or its sha256 of the wrong type")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CacheDamaged(f"inconsistent ({type(exc).__name__}: {exc})") from None
    return table, summary


def _load(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file raises, it is not trusted
        raise CacheDamaged(f"unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CacheDamaged("not a plan cache of this format")
    return meta, arrays


def _column(arrays: dict[str, np.ndarray], name: str) -> array:
    values = arrays[name]
    code = _ARRAYS[name]
    if values.ndim != 1 or values.dtype != _DTYPES[code]:
        raise ValueError(f"column {name} has shape {values.shape} and type {values.dtype}")
    column = array(code)
    column.frombytes(values.tobytes())
    return column


def _table(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> ExampleTable:
    table = ExampleTable()
    table.seal()
    table.ids = [str(i) for i in meta["ids"]]
    table.frames = [tuple(str(f) for f in frames) for frames in meta["frames"]]
    table.videos = [str(v) for v in meta["videos"]]
    table.turn_table = [Turn(role, str(text)) for role, text in meta["turns"]]
    table.info_table = [TurnInfo(str(t), s, str(f), tuple(r) if r else None) for t, s, f, r in meta["infos"]]
    for name in _ARRAYS:
        setattr(table, name, _column(arrays, name))
    n, qas = len(table.ids), len(table.question_of)
    sizes = {
        "frame_of": n,
        "video_of": n,
        "lengths": n,
        "fps": n,
        "lines": n,
        "qa_start": n + 1,
        "answer_of": qas,
        "info_of": qas,
    }
    for name, size in sizes.items():
        if len(getattr(table, name)) != size:
            raise ValueError(f"column {name} has {len(getattr(table, name))} values, expected {size}")
    starts = arrays["qa_start"]
    if starts[0] != 0 or starts[-1] != qas or (np.diff(starts) < 1).any():
        raise ValueError("QA offsets out of order")
    for name, limit in (
        ("frame_of", len(table.frames)),
        ("video_of", len(table.videos)),
        ("question_of", len(table.turn_table)),
        ("answer_of", len(table.turn_table)),
        ("info_of", len(table.info_table)),
    ):
        values = arrays[name]
        if len(values) and (values.min() < 0 or values.max() >= limit):
            raise ValueError(f"column {name} points outside its table")
    if n and (arrays["lengths"].min() < 1 or not all(math.isnan(v) or v > 0 for v in np.unique(arrays["fps"]))):
        raise ValueError("lengths or frame rates out of range")
    return table
