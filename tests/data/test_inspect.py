"""inspect: schema, frames, task mix and QAs of the first records."""

from __future__ import annotations

from vlmft_cli.data.inspect import inspect_source

from .builders import video, write_source


def test_reports_the_schema_frames_and_task_mix(synth_source):
    report = inspect_source(str(synth_source), records=3).as_dict()
    assert report["records"] == 6 and len(report["files"]) == 2
    assert report["context"] == {
        "unique_id": {"types": {"bytes_list": 6}, "records": 6},
        "video_filename": {"types": {"bytes_list": 6}, "records": 6},
    }
    assert set(report["feature_lists"]) == {"images", "texts", "texts_start", "texts_end"}
    assert report["feature_lists"]["images"]["length"] == {"min": 16, "max": 16, "mean": 16.0}
    assert report["feature_lists"]["texts_start"]["types"] == {"int64_list": 6}
    assert report["frames_per_record"] == {"16": 6}
    assert report["resolutions"] == {"96x96": 96} and report["image_formats"] == {"JPEG": 96}
    assert sum(report["task_types"].values()) == sum(int(k) * v for k, v in report["qas_per_record"].items())
    example = report["examples"][0]
    assert example["question"] and example["answer"] and "<" not in example["answer"].replace("< 10", "")


def test_a_single_damaged_file_is_inspected_as_far_as_it_reads(tmp_path):
    bad = video("b")
    bad.frames[0] = b"nope"
    source = write_source(tmp_path, {"train": [[video("a"), bad, video("c", texts=["no tags"])]]})
    shard = source / "train" / "train-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-5])
    report = inspect_source(str(shard), records=10).as_dict()
    assert report["records"] == 2 and report["undecodable_frames"] == 1
    assert "truncated" in report["damage"][str(shard)]
    assert report["qas_per_record"] == {"1": 2}


def test_texts_entries_are_counted_with_their_frame_ranges_and_differing_ones_flagged(tmp_path):
    qa = "<task:success:discrete:True> Q: satisfied? A: yes"
    other = "<task:past_description:freeform> Q: what just happened? A: put book on the table"
    records = [
        video("one", texts=[qa]),  # 4 frames: range 0-3
        video("same", texts=[qa, qa], texts_start=[0, 2], texts_end=[3, 3]),
        video("mixed", texts=[qa, qa + other, other], texts_start=[0, 1, 1], texts_end=[3, 3, 3]),
        video("bare", texts=[qa, other], texts_start=[], texts_end=[]),
    ]
    source = write_source(tmp_path, {"train": [records]})
    texts = inspect_source(str(source), records=10).as_dict()["texts"]
    assert texts["entries_per_record"] == {"1": 1, "2": 2, "3": 1}
    assert texts["frame_ranges"] == {"0-3": 3, "1-3": 2, "2-3": 1, "missing": 2}
    assert texts["records_with_several_entries"] == 3
    assert texts["records_with_identical_entries"] == 1 and texts["records_with_differing_entries"] == 2
    assert texts["records_with_differing_frame_ranges"] == 2  # "same" (0-3, 2-3) and "mixed"
    assert texts["differing_examples"] == [
        {"video_id": "mixed", "entries": 3, "distinct_entries": 3, "frame_ranges": [[0, 3], [1, 3], [1, 3]]},
        {"video_id": "bare", "entries": 2, "distinct_entries": 2, "frame_ranges": [None, None]},
    ]
    # first: one QA per record; all: "mixed" and "bare" add the past_description QA once each.
    assert texts["qas"] == {"first": 4, "all": 6, "duplicates_dropped_by_all": 3}
