"""Synthetic RoboVQA: the release's format and grammar, deterministic per seed."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from PIL import Image

from vlmft_cli.data.grammar import parse_texts
from vlmft_cli.data.records import ShardReader, find_shards, parse_record
from vlmft_cli.data.synth import FRAMES_PER_VIDEO, SynthOptions, synthesize
from vlmft_cli.errors import DataError

FAMILIES = {
    "affordance",
    "success",
    "future_prediction",
    "past_description",
    "planning",
    "immediate_planning_with_context20",
    "remaining5_planning_with_context20",
}


def _records(root):
    shards = find_shards(str(root)).shards
    return {
        split: [parse_record(raw) for path in paths for raw in ShardReader(path)] for split, paths in shards.items()
    }


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tree_layout_and_counts(synth_source):
    tree = synth_source / "tfrecord"
    assert sorted(p.name for p in (tree / "train").iterdir()) == [f"train-0000{k}-of-00003" for k in range(3)]
    assert sorted(p.name for p in (tree / "val").iterdir()) == ["val-00000-of-00001"]
    records = _records(synth_source)
    assert {split: len(r) for split, r in records.items()} == {"train": 12, "val": 4}
    ids = [r.unique_id for split in records.values() for r in split]
    assert len(set(ids)) == len(ids)


def test_records_follow_the_release_format_and_grammar(tmp_path):
    synthesize(SynthOptions(out=tmp_path, videos=150, val_videos=0, seed=1, frame_size=32))
    records = _records(tmp_path)["train"]
    families, qas_per_video = Counter(), []
    for record in records:
        assert record.unique_id.isdigit() and record.video_filename.endswith(".mp4")
        assert len(record.frames) == FRAMES_PER_VIDEO
        assert 2 <= len(record.texts) == len(record.texts_start) == len(record.texts_end)
        assert all(
            0 <= s <= e == FRAMES_PER_VIDEO - 1 for s, e in zip(record.texts_start, record.texts_end, strict=True)
        )
        assert all("<PRED>A: " in text and "</PRED>" in text for text in record.texts)
        parsed = parse_texts(record.texts)
        assert not parsed.dropped
        qas_per_video.append(len(parsed.qas))
        families.update(qa.task_type for qa in parsed.qas)
        for qa in parsed.qas:
            if qa.format == "binary":
                assert qa.answer in ("yes", "no")
    assert set(families) == FAMILIES
    assert 3.2 <= sum(qas_per_video) / len(qas_per_video) <= 3.8
    assert any("<PRED:ANSWER:BINARY>" in t for r in records for t in r.texts)
    assert any("<PRED:BINARY>" in t for r in records for t in r.texts)


def test_frames_decode_and_move(synth_source):
    record = _records(synth_source)["train"][0]
    images = [Image.open(io.BytesIO(frame)) for frame in record.frames]
    assert all(image.format == "JPEG" and image.size == (96, 96) for image in images)
    assert images[0].tobytes() != images[-1].tobytes()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synthesize(SynthOptions(out=tmp_path / name, videos=4, val_videos=1, seed=seed, frame_size=32))
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    assert _tree_bytes(tmp_path / "a") != _tree_bytes(tmp_path / "c")


def test_existing_tree_needs_overwrite(tmp_path):
    synthesize(SynthOptions(out=tmp_path, videos=2, val_videos=1, frame_size=32, shards=2))
    with pytest.raises(DataError, match="already exists"):
        synthesize(SynthOptions(out=tmp_path, videos=1, val_videos=1, frame_size=32))
    synthesize(SynthOptions(out=tmp_path, videos=1, val_videos=1, frame_size=32, overwrite=True))
    assert len(list((tmp_path / "tfrecord" / "train").iterdir())) == 1


def test_the_mixed_layout_has_single_identical_and_differing_entries(tmp_path):
    synthesize(SynthOptions(out=tmp_path / "mixed", videos=40, val_videos=0, seed=2, frame_size=16, texts_layout="mixed"))
    synthesize(SynthOptions(out=tmp_path / "split", videos=40, val_videos=0, seed=2, frame_size=16))
    mixed, split = _records(tmp_path / "mixed")["train"], _records(tmp_path / "split")["train"]
    kinds = Counter()
    for record, same_video in zip(mixed, split, strict=True):
        assert (record.unique_id, record.frames) == (same_video.unique_id, same_video.frames)
        assert len(record.texts) == len(record.texts_start) == len(record.texts_end) <= 4
        assert (record.texts_start[0], record.texts_end) == (0, [FRAMES_PER_VIDEO - 1] * len(record.texts))
        # The first entry holds the video's QAs: the QAs of the split layout.
        first = parse_texts(record.texts[:1]).qas
        assert sorted((qa.question, qa.answer) for qa in first) == sorted(
            (qa.question, qa.answer) for qa in parse_texts(same_video.texts).qas
        )
        contents = [(qa.task_type, qa.question, qa.answer) for qa in first]
        for text, start in zip(record.texts[1:], record.texts_start[1:], strict=True):
            if text == record.texts[0]:
                kinds["identical"] += 1
                assert start == 0
            else:
                kinds["different"] += 1
                assert start in (4, 8)
                later = [(qa.task_type, qa.question, qa.answer) for qa in parse_texts([text]).qas]
                assert len(later) == 2 and later[1] in contents  # a new QA, then a copy of a first-entry QA
        kinds[f"{len(record.texts)} entries"] += 1
    assert kinds["1 entries"] and kinds["identical"] and kinds["different"]
    assert kinds["1 entries"] + kinds["2 entries"] + kinds["3 entries"] + kinds["4 entries"] == 40
    with pytest.raises(DataError, match="texts layout"):
        synthesize(SynthOptions(out=tmp_path / "bad", videos=1, texts_layout="shuffled"))
