"""Extraction: the processed layout and JSONL schema, the official split, reruns, options and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmft_cli import __version__
from vlmft_cli.data.extract import ExtractOptions, run_extract
from vlmft_cli.data.grammar import parse_texts
from vlmft_cli.data.layout import safe_key, subset_fraction
from vlmft_cli.data.records import ShardReader, encode_record, find_shards, parse_record
from vlmft_cli.data.schema import IMAGE_PLACEHOLDER, load_samples
from vlmft_cli.data.verify import VerifyOptions, run_verify
from vlmft_cli.errors import DataError
from vlmft_cli.reporting import RecordingReporter

from .builders import video, write_source

SIZE = 48


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _source_records(source: Path) -> dict[str, list]:
    shards = find_shards(str(source)).shards
    return {
        split: [parse_record(raw) for path in paths for raw in ShardReader(path)] for split, paths in shards.items()
    }


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def extracted(synth_source, tmp_path_factory):
    out = tmp_path_factory.mktemp("extract") / "out"
    reporter = RecordingReporter()
    result = run_extract(ExtractOptions(str(synth_source), out, size=SIZE, quality=80, workers=2), reporter)
    return out, result, reporter


def test_layout_is_complete_and_tidy(extracted):
    out, result, reporter = extracted
    assert sorted(p.name for p in out.iterdir()) == ["images", "metadata.json", "stage1", "stage2"]
    assert not result.already_complete and result.problems == 0
    assert reporter.tasks[0].description == "Extracting" and reporter.tasks[0].completed == 16


def test_stage_lines_hold_every_qa_of_every_record_in_the_official_split(extracted, synth_source):
    out, _, _ = extracted
    for split, records in _source_records(synth_source).items():
        stage1, stage2 = _lines(out / "stage1" / f"{split}.jsonl"), _lines(out / "stage2" / f"{split}.jsonl")
        assert [line["metadata"]["video_id"] for line in stage2] == [r.unique_id for r in records]
        expected_stage1 = []
        for record, line in zip(records, stage2, strict=True):
            qas = parse_texts(record.texts).qas
            key = safe_key(record.unique_id)
            assert set(line) == {"id", "images", "conversations", "metadata"}
            assert line["id"] == key
            assert line["images"] == [f"images/{line['images'][0].split('/')[1]}/{key}/{i:02d}.jpg" for i in range(16)]
            assert line["images"][0].split("/")[1].startswith(f"{split}-")
            turns = line["conversations"]
            assert [t["from"] for t in turns] == ["human", "gpt"] * len(qas)
            assert turns[0]["value"] == f"{IMAGE_PLACEHOLDER}\n" * 16 + qas[0].question
            assert [t["value"] for t in turns[2::2]] == [qa.question for qa in qas[1:]]
            assert [t["value"] for t in turns[1::2]] == [qa.answer for qa in qas]
            assert line["metadata"] == {
                "video_id": record.unique_id,
                "split": split,
                "turns": [
                    {
                        "task_type": qa.task_type,
                        "subtype": qa.subtype,
                        "format": qa.format,
                        "frame_range": list(record.frame_range(qa.entry)),
                    }
                    for qa in qas
                ],
            }
            for n, qa in enumerate(qas):
                expected_stage1.append(
                    {
                        "id": f"{key}-{n}",
                        "images": line["images"],
                        "conversations": [
                            {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n" * 16 + qa.question},
                            {"from": "gpt", "value": qa.answer},
                        ],
                        "metadata": {
                            "task_type": qa.task_type,
                            "subtype": qa.subtype,
                            "format": qa.format,
                            "frame_range": list(record.frame_range(qa.entry)),
                            "video_id": record.unique_id,
                            "split": split,
                        },
                    }
                )
        assert stage1 == expected_stage1


def test_frames_are_stored_once_at_the_requested_size(extracted):
    out, _, _ = extracted
    referenced = {
        image
        for split in ("train", "val")
        for line in _lines(out / "stage2" / f"{split}.jsonl")
        for image in line["images"]
    }
    stored = {p.relative_to(out).as_posix() for p in (out / "images").rglob("*.jpg")}
    assert referenced == stored and len(stored) == 16 * 16
    for image in sorted(stored)[:20]:
        with Image.open(out / image) as frame:
            assert frame.size == (SIZE, SIZE) and frame.format == "JPEG"


def test_metadata_counts_everything(extracted):
    out, result, _ = extracted
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata == result.metadata
    assert metadata["vlmft_version"] == __version__
    assert metadata["options"] == {
        "size": SIZE,
        "quality": 80,
        "workers": 2,
        "subset_ratio": None,
        "limit": None,
        "strict": False,
    }
    assert metadata["frames_per_video"] == {"16": 16}
    assert metadata["skipped_records_total"] == 0 and metadata["damaged_shards"] == [] and metadata["renamed_ids"] == []
    for split, videos in (("train", 12), ("val", 4)):
        stats = metadata["splits"][split]
        assert stats["videos"] == stats["stage2_lines"] == stats["records_read"] == videos
        assert stats["frames"] == 16 * videos
        assert sum(stats["task_types"].values()) == sum(stats["formats"].values()) == stats["stage1_lines"]
        assert stats["stage1_lines"] == len(_lines(out / "stage1" / f"{split}.jsonl"))
    assert set(metadata["timings"]) >= {"extract_s", "merge_s", "total_s"}


def test_the_training_reader_and_verify_accept_the_output(extracted):
    out, _, _ = extracted
    for stage in ("stage1", "stage2"):
        for split in ("train", "val"):
            loaded = load_samples(out / stage / f"{split}.jsonl", out)
            assert loaded.rejections == [] and loaded.samples
    assert run_verify(VerifyOptions(out, full=True, workers=1)).ok


def test_a_rerun_over_finished_output_does_nothing(extracted, synth_source):
    out, _, _ = extracted
    before = _snapshot(out)
    reporter = RecordingReporter()
    result = run_extract(ExtractOptions(str(synth_source), out, size=SIZE, quality=80, workers=2), reporter)
    assert result.already_complete and reporter.tasks == []
    assert _snapshot(out) == before


def test_a_rerun_with_other_options_is_refused(extracted, synth_source):
    out, _, _ = extracted
    with pytest.raises(DataError, match="size"):
        run_extract(ExtractOptions(str(synth_source), out, size=SIZE + 1, quality=80))


def test_a_foreign_non_empty_folder_is_refused(synth_source, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        run_extract(ExtractOptions(str(synth_source), tmp_path))


def test_options_are_validated(synth_source, tmp_path):
    for bad in ({"size": 8}, {"quality": 0}, {"subset_ratio": 0.0}, {"limit": 0}, {"workers": 0}):
        with pytest.raises(DataError):
            run_extract(ExtractOptions(str(synth_source), tmp_path / "out", **bad))


def test_subset_ratio_keeps_a_stable_share_of_videos(synth_source, tmp_path):
    result = run_extract(ExtractOptions(str(synth_source), tmp_path / "out", size=SIZE, workers=1, subset_ratio=0.5))
    for split, records in _source_records(synth_source).items():
        expected = [r.unique_id for r in records if subset_fraction(r.unique_id) < 0.5]
        for stage in ("stage1", "stage2"):
            kept = {line["metadata"]["video_id"] for line in _lines(tmp_path / "out" / stage / f"{split}.jsonl")}
            assert kept == set(expected)
        assert result.metadata["splits"][split]["records_selected"] == len(expected)


def test_limit_reads_the_first_records_of_each_split_in_shard_order(synth_source, tmp_path):
    result = run_extract(ExtractOptions(str(synth_source), tmp_path / "out", size=SIZE, workers=1, limit=5))
    for split, records in _source_records(synth_source).items():
        kept = [line["metadata"]["video_id"] for line in _lines(tmp_path / "out" / "stage2" / f"{split}.jsonl")]
        assert kept == [r.unique_id for r in records[:5]]
    assert result.metadata["splits"]["train"]["records_read"] == 5


def test_a_split_without_shards_gives_empty_files(tmp_path):
    source = write_source(tmp_path / "src", {"train": [[video("a"), video("b")]]})
    result = run_extract(ExtractOptions(str(source), tmp_path / "out", size=32, workers=1))
    assert (tmp_path / "out" / "stage1" / "val.jsonl").read_text() == ""
    assert result.metadata["splits"]["val"]["shards"] == 0 and result.metadata["splits"]["train"]["videos"] == 2


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A source with one of every kind of bad input, extracted once."""
    root = tmp_path_factory.mktemp("hostile")
    bad_frame = video("bad-frame")
    bad_frame.frames[2] = b"not a jpeg"
    truncated_victim = encode_record(video("cut-short"))
    corrupt_victim = encode_record(video("corrupted"))
    source = write_source(
        root / "src",
        {
            "train": [
                [
                    video("g1"),
                    bad_frame,
                    video("no-qa", texts=["no task tags at all", "<task:success> no answer marker"]),
                    video("../../escape"),
                    video("a/b"),
                    video("a\\b"),
                    video(".."),
                    video(None),
                    video("no-frames", frames=0),
                    b"\xff\xff\xff not a proto",
                    video("g1"),
                ],
                [video("g1"), video("g2"), truncated_victim],
                [video("g3"), corrupt_victim, video("after-damage")],
            ],
            "val": [[video("g2"), video("v1")]],
        },
    )
    train = source / "train"
    shard = train / "train-00001-of-00003"
    shard.write_bytes(shard.read_bytes()[:-20])
    shard = train / "train-00002-of-00003"
    data = bytearray(shard.read_bytes())
    data[len(encode_record(video("g3"))) + 16 + 12 + 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    out = root / "out"
    result = run_extract(ExtractOptions(str(source), out, size=32, workers=2))
    return root, out, result


def test_bad_input_is_skipped_and_counted_with_reasons(hostile):
    _, out, result = hostile
    metadata = result.metadata
    assert metadata["splits"]["train"]["skipped_records"] == {
        "duplicate_video": 2,
        "missing_unique_id": 1,
        "no_frames": 1,
        "no_qa": 1,
        "undecodable_frame": 1,
        "unparseable_record": 1,
    }
    assert metadata["splits"]["val"]["skipped_records"] == {"video_in_both_splits": 1}
    assert metadata["skipped_records_total"] == 8 and result.problems == 10
    reasons = {(s["video_id"], s["skipped"]) for s in metadata["skipped_records"]}
    assert ("bad-frame", "undecodable_frame") in reasons and ("g2", "video_in_both_splits") in reasons
    assert next(s["detail"] for s in metadata["skipped_records"] if s["skipped"] == "undecodable_frame").startswith(
        "frame 2:"
    )
    damage = {d["source"]: d for d in metadata["damaged_shards"]}
    assert (
        damage["train-00001-of-00003"]["records_before_damage"] == 2
        and "truncated" in damage["train-00001-of-00003"]["error"]
    )
    assert (
        damage["train-00002-of-00003"]["records_before_damage"] == 1
        and "corrupted" in damage["train-00002-of-00003"]["error"]
    )


def test_good_records_survive_and_unsafe_ids_keep_their_original_id(hostile):
    _, out, result = hostile
    train = [line["metadata"]["video_id"] for line in _lines(out / "stage2" / "train.jsonl")]
    assert train == ["g1", "../../escape", "a/b", "a\\b", "..", "g2", "g3"]
    assert [line["metadata"]["video_id"] for line in _lines(out / "stage2" / "val.jsonl")] == ["v1"]
    renamed = {r["video_id"]: r["key"] for r in result.metadata["renamed_ids"]}
    assert set(renamed) == {"../../escape", "a/b", "a\\b", ".."}
    assert all(key == safe_key(video_id) for video_id, key in renamed.items())


def test_nothing_is_written_outside_out_and_no_reference_dangles(hostile):
    root, out, _ = hostile
    outside = [p for p in root.rglob("*") if p.is_file() and out not in p.parents and (root / "src") not in p.parents]
    assert outside == []
    report = run_verify(VerifyOptions(out, full=True, workers=1))
    assert report.ok, report.problems
    stored = {p.relative_to(out).as_posix() for p in (out / "images").rglob("*.jpg")}
    referenced = {
        i for split in ("train", "val") for line in _lines(out / "stage2" / f"{split}.jsonl") for i in line["images"]
    }
    assert stored == referenced  # the refused copies' frames are gone, the undecodable video never written
