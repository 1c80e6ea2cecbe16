"""TFRecord I/O: round trips, damaged shards, and where the shards of a source are found."""

from __future__ import annotations

import pytest

from vlmft_cli.data.records import (
    RecordError,
    ShardReader,
    VideoRecord,
    encode_record,
    find_shards,
    parse_record,
    write_shard,
)
from vlmft_cli.errors import DataError

from .builders import video


def test_a_record_round_trips(tmp_path):
    record = VideoRecord("id-1", "videos/1.mp4", [b"a", b"bb"], ["t1", "t2 é"], [0, 3], [1, 1])
    assert parse_record(encode_record(record)) == record
    bare = parse_record(encode_record(VideoRecord(None)))
    assert bare == VideoRecord(None, None, [], [], [], [])
    assert bare.frame_range(0) is None and record.frame_range(1) == (3, 1)


def test_bytes_that_are_no_sequence_example_raise_record_error():
    with pytest.raises(RecordError):
        parse_record(b"\xff\xff\xff")


def _three_record_shard(tmp_path):
    raws = [encode_record(video(f"v{i}")) for i in range(3)]
    path = tmp_path / "shard"
    write_shard(str(path), raws)
    return path, raws


def test_reader_yields_every_record_of_a_whole_shard(tmp_path):
    path, raws = _three_record_shard(tmp_path)
    reader = ShardReader(str(path))
    assert list(reader) == raws and reader.damage is None


def test_reader_keeps_the_records_before_a_truncation(tmp_path):
    path, raws = _three_record_shard(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    reader = ShardReader(str(path))
    assert list(reader) == raws[:2]
    assert "truncated" in reader.damage and "Op:" not in reader.damage


def test_reader_keeps_the_records_before_a_crc_error(tmp_path):
    path, raws = _three_record_shard(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(raws[0]) + 16 + 12 + 5] ^= 0xFF  # a byte inside the second record's payload
    path.write_bytes(bytes(data))
    reader = ShardReader(str(path))
    assert list(reader) == raws[:1]
    assert "corrupted" in reader.damage


def test_shards_are_found_from_the_root_its_tfrecord_folder_or_a_split_folder(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "tfrecord" / split).mkdir(parents=True)
        for name in (f"{split}-00001", f"{split}-00000", f".{split}-00002.partial"):
            (tmp_path / "tfrecord" / split / name).write_bytes(b"")
    expected = {"train": ["train-00000", "train-00001"], "val": ["val-00000", "val-00001"]}
    for source in (tmp_path, tmp_path / "tfrecord"):
        found = find_shards(str(source))
        assert {split: [p.rsplit("/", 1)[1] for p in paths] for split, paths in found.shards.items()} == expected
        assert found.root == str(tmp_path / "tfrecord") and found.total == 4


def test_a_source_without_shards_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no shards"):
        find_shards(str(tmp_path))
