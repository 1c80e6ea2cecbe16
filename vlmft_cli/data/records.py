"""RoboVQA TFRecord I/O through tensorflow (local folders and `gs://` alike), tolerant of damaged shards.

A record is a `tf.train.SequenceExample`: context `unique_id`, `video_filename` (may be absent);
feature lists `images` (one encoded frame per entry), `texts`, `texts_start`, `texts_end`. Records are
parsed with the protobuf message class (`SequenceExample.FromString`), not the TF parse op: ~25× faster.
TensorFlow is imported on first use only.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vlmft_cli.data.layout import SPLITS
from vlmft_cli.errors import DataError

# A record on disk: 8-byte length, 4-byte length CRC, payload, 4-byte payload CRC.
RECORD_OVERHEAD_BYTES = 16


def tensorflow() -> Any:
    """The tensorflow module, imported on first use with its C++ logging turned down."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


class RecordError(ValueError):
    """The bytes of one record are not a SequenceExample."""


@dataclass
class VideoRecord:
    """The fields of one RoboVQA record that the pipeline uses."""

    unique_id: str | None
    video_filename: str | None = None
    frames: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    texts_start: list[int] = field(default_factory=list)
    texts_end: list[int] = field(default_factory=list)

    def frame_range(self, entry: int) -> tuple[int, int] | None:
        """The frame range that `texts[entry]` applies to, if the record gives one."""
        if entry < len(self.texts_start) and entry < len(self.texts_end):
            return self.texts_start[entry], self.texts_end[entry]
        return None


def _decode_text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def _context_text(example: Any, key: str) -> str | None:
    feature = example.context.feature.get(key)
    if feature is None or not feature.bytes_list.value:
        return None
    return _decode_text(feature.bytes_list.value[0])


def _feature_list(example: Any, key: str) -> list[Any]:
    feature_list = example.feature_lists.feature_list.get(key)
    return list(feature_list.feature) if feature_list is not None else []


def _first_int(features: list[Any]) -> list[int]:
    return [int(f.int64_list.value[0]) if f.int64_list.value else 0 for f in features]


def parse_record(raw: bytes) -> VideoRecord:
    """A record's fields, from its serialized bytes; `RecordError` if they are not a SequenceExample."""
    from google.protobuf.message import DecodeError

    try:
        example = tensorflow().train.SequenceExample.FromString(raw)
    except DecodeError as exc:
        raise RecordError(f"not a SequenceExample: {exc}") from None
    return VideoRecord(
        unique_id=_context_text(example, "unique_id"),
        video_filename=_context_text(example, "video_filename"),
        # A frame entry without bytes stays in the list as b"", so it fails to decode and is counted.
        frames=[bytes(f.bytes_list.value[0]) if f.bytes_list.value else b"" for f in _feature_list(example, "images")],
        texts=[_decode_text(v) for f in _feature_list(example, "texts") for v in f.bytes_list.value],
        texts_start=_first_int(_feature_list(example, "texts_start")),
        texts_end=_first_int(_feature_list(example, "texts_end")),
    )


def encode_record(record: VideoRecord) -> bytes:
    """The serialized SequenceExample for a record (the inverse of `parse_record`)."""
    example = tensorflow().train.SequenceExample()
    if record.unique_id is not None:
        example.context.feature["unique_id"].bytes_list.value.append(record.unique_id.encode("utf-8", "surrogatepass"))
    if record.video_filename is not None:
        example.context.feature["video_filename"].bytes_list.value.append(record.video_filename.encode())
    lists = example.feature_lists.feature_list
    for frame in record.frames:
        lists["images"].feature.add().bytes_list.value.append(frame)
    for text in record.texts:
        lists["texts"].feature.add().bytes_list.value.append(text.encode("utf-8", "surrogatepass"))
    for key, values in (("texts_start", record.texts_start), ("texts_end", record.texts_end)):
        for value in values:
            lists[key].feature.add().int64_list.value.append(value)
    return example.SerializeToString()


def write_shard(path: str, records: Iterable[bytes]) -> int:
    """Write serialized records to a TFRecord file; returns how many were written."""
    tf = tensorflow()
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for raw in records:
            writer.write(raw)
            count += 1
    return count


def _clean_tf_message(message: str) -> str:
    """`{{function_node …}} corrupted record at 50075 [Op:IteratorGetNext] name: …` → `corrupted record at 50075`."""
    message = re.sub(r"\{\{.*?\}\}", "", message.strip().splitlines()[0])
    return re.sub(r"\s*\[Op:.*$", "", message).strip() or "unreadable"


class ShardReader:
    """The raw records of one shard, in order. A truncated or corrupt shard ends the iteration at the
    damage, after every record before it; `damage` then says what was wrong.

    Reads with `tf.compat.v1.io.tf_record_iterator`: the same C++ reader and checks as
    `tf.data.TFRecordDataset`, at a fifth of the cost per record and a thirtieth per file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.damage: str | None = None
        self.bytes_read = 0

    def __iter__(self) -> Iterator[bytes]:
        tf = tensorflow()
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel(logging.ERROR)  # only to hush the once-per-process deprecation notice
        try:
            try:
                records = tf.compat.v1.io.tf_record_iterator(self.path)
            finally:
                logger.setLevel(level)
            for raw in records:
                self.bytes_read += len(raw) + RECORD_OVERHEAD_BYTES
                yield raw
        except tf.errors.OpError as exc:
            self.damage = _clean_tf_message(exc.message or type(exc).__name__)


def file_size(path: str) -> int:
    return int(tensorflow().io.gfile.stat(path).length)


def join_path(base: str, name: str) -> str:
    """Join for local paths and `gs://` URLs alike."""
    return posixpath.join(base, name) if "://" in base else os.path.join(base, name)


@dataclass(frozen=True)
class SourceShards:
    """Where the shards of each split are: `shards["train"]` lists the paths under `<root>/train`, sorted."""

    root: str
    shards: dict[str, list[str]]

    @property
    def total(self) -> int:
        return sum(len(paths) for paths in self.shards.values())


def _list_files(folder: str) -> list[str]:
    gfile = tensorflow().io.gfile
    if not gfile.isdir(folder):
        return []
    names = sorted(name for name in gfile.listdir(folder) if not name.startswith(".") and not name.endswith("/"))
    return [path for path in (join_path(folder, name) for name in names) if not gfile.isdir(path)]


def find_shards(source: str) -> SourceShards:
    """The shards under a source that is the bucket root (with `tfrecord/`), its `tfrecord/` folder, or
    any folder whose `train/` and `val/` hold shards. `DataError` if no shard is found."""
    source = str(source).rstrip("/") or "/"
    for root in (join_path(source, "tfrecord"), source):
        shards = {split: _list_files(join_path(root, split)) for split in SPLITS}
        if any(shards.values()):
            return SourceShards(root, shards)
    raise DataError(
        f"no shards under {source}: expected train/ and val/ folders of TFRecord files (in it or in its tfrecord/ folder)",
        hint="point --source at the bucket root, its tfrecord/ folder, or a folder `vlmft data download` wrote",
    )
