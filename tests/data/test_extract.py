"""Extraction: the processed layout and JSONL schema, the official split, reruns, options and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from vlmft_cli import __version__
from vlmft_cli.data.extract import ExtractOptions, run_extract
from vlmft_cli.data.layout import safe_key, subset_fraction
from vlmft_cli.data.records import ShardReader, encode_record, find_shards, parse_record
from vlmft_cli.data.schema import load_samples
from vlmft_cli.data.synth import make_record
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


#: A task block as the synthetic source renders it (`synth` → `grammar.render_block`):
#: "<task:TAG>\n{question} <PRED>A: {answer wrapped in PRED tags}\n</PRED>".
_SYNTH_BLOCK_RE = re.compile(r"<(?:task|Task):([^>]*)>\n(.*?) <PRED>A: (.*?)\n</PRED>", re.DOTALL)
_SYNTH_PRED_TAG_RE = re.compile(r"</?PRED(?::[A-Z]+)*>")
_FORMAT_FIELDS = {"freeform", "discrete", "binary"}


def _synth_turns(record) -> list[dict]:
    """The QAs of a synthetic record, read off the texts it was written with by a parser of the test's
    own (the synthetic grammar only: one format field per tag, answers wrapped in PRED tags)."""
    turns = []
    for entry, text in enumerate(record.texts):
        blocks = _SYNTH_BLOCK_RE.findall(text)
        assert len(blocks) == text.lower().count("<task:")  # every block of the entry is read
        for tag, question, wrapped in blocks:
            task_type, *rest = tag.split(":")
            subtype = ":".join(field for field in rest if field.lower() not in _FORMAT_FIELDS) or None
            turns.append(
                {
                    "question": question,
                    "answer": _SYNTH_PRED_TAG_RE.sub("", wrapped),
                    "task_type": task_type.lower(),
                    "subtype": subtype,
                    "format": "binary" if "BINARY" in wrapped else "freeform",
                    "frame_range": [record.texts_start[entry], record.texts_end[entry]],
                }
            )
    return turns


def test_stage_lines_hold_every_qa_of_every_record_in_the_official_split(extracted):
    out, _, _ = extracted
    # The `synth_source` fixture: seed 7, 12 train videos in 3 shards of 4, 4 val videos in 1 shard.
    for split, count, per_shard in (("train", 12, 4), ("val", 4, 4)):
        records = [make_record(7, split, index) for index in range(count)]
        stage1, stage2 = _lines(out / "stage1" / f"{split}.jsonl"), _lines(out / "stage2" / f"{split}.jsonl")
        expected_stage1, expected_stage2 = [], []
        for index, record in enumerate(records):
            turns = _synth_turns(record)
            assert 3 <= len(turns) <= 4 and record.unique_id.isdigit()  # the synthetic mix: 3-4 QAs, numeric ids
            key = record.unique_id  # already a safe file name
            images = [f"images/{split}-{index // per_shard:05d}/{key}/{i:02d}.jpg" for i in range(16)]
            frames = "<image>\n" * 16
            conversation = []
            for n, turn in enumerate(turns):
                conversation += [
                    {"from": "human", "value": (frames if n == 0 else "") + turn["question"]},
                    {"from": "gpt", "value": turn["answer"]},
                ]
            info = [{k: turn[k] for k in ("task_type", "subtype", "format", "frame_range")} for turn in turns]
            expected_stage2.append(
                {
                    "id": key,
                    "images": images,
                    "conversations": conversation,
                    "metadata": {"video_id": record.unique_id, "split": split, "turns": info},
                }
            )
            for n, turn in enumerate(turns):
                expected_stage1.append(
                    {
                        "id": f"{key}-{n}",
                        "images": images,
                        "conversations": [
                            {"from": "human", "value": frames + turn["question"]},
                            {"from": "gpt", "value": turn["answer"]},
                        ],
                        "metadata": {**info[n], "video_id": record.unique_id, "split": split},
                    }
                )
        assert stage2 == expected_stage2
        assert stage1 == expected_stage1


# Hand-written records in the release's grammar, with what extraction must make of them written out.
HAND_TEXTS_A = [
    "scene notes, not a task <task:success:discrete:True>\nput the cup down Q: satisfied? "
    "<PRED>A: <PRED:ANSWER:BINARY>yes</PRED:ANSWER:BINARY>\n</PRED>",
    "<Task:planning:freeform>\ncurrent goal is: tidy up the desk Q: immediate next step?  "
    "<PRED>A: slide the tray < 10 cm to the right</PRED>"
    "<task:future_prediction:freeform> Q: what is likely to happen next?"  # no answer marker: dropped
    "<task:past_description:freeform> Q: what just  happened? a: put   book on the table",
]
HAND_TEXTS_B = [
    "<task:affordance:discriminative:discrete:False>\npick up the sanitizer Q: possible right now? "
    "<PRED>A: <PRED:ANSWER><PRED:DISCRETE><PRED:BINARY>no</PRED:BINARY></PRED:DISCRETE></PRED:ANSWER>\n</PRED>"
    "<task:affordance:generative:negative>\nQ: what action is not possible? "
    "<PRED>A: <PRED:ANSWER:DISCRETE>open the top drawer</PRED:ANSWER:DISCRETE>\n</PRED>",
]


def test_hand_written_records_give_the_lines_written_out_here(tmp_path):
    source = write_source(
        tmp_path / "src",
        {
            "train": [[video("ep-0001", frames=3, texts=HAND_TEXTS_A, texts_start=[0, 1], texts_end=[2, 2])]],
            "val": [[video("ep-0002", frames=2, texts=HAND_TEXTS_B, texts_start=[1], texts_end=[1])]],
        },
    )
    result = run_extract(ExtractOptions(str(source), tmp_path / "out", size=32, workers=1))
    out = tmp_path / "out"
    a_images = [
        "images/train-00000/ep-0001/00.jpg",
        "images/train-00000/ep-0001/01.jpg",
        "images/train-00000/ep-0001/02.jpg",
    ]
    b_images = ["images/val-00000/ep-0002/00.jpg", "images/val-00000/ep-0002/01.jpg"]
    a_turns = [
        {"task_type": "success", "subtype": "True", "format": "binary", "frame_range": [0, 2]},
        {"task_type": "planning", "subtype": None, "format": "freeform", "frame_range": [1, 2]},
        {"task_type": "past_description", "subtype": None, "format": "freeform", "frame_range": [1, 2]},
    ]
    b_turns = [
        {"task_type": "affordance", "subtype": "discriminative:False", "format": "binary", "frame_range": [1, 1]},
        {"task_type": "affordance", "subtype": "generative:negative", "format": "discrete", "frame_range": [1, 1]},
    ]
    a_qas = [
        ("<image>\n<image>\n<image>\nput the cup down Q: satisfied?", "yes"),
        ("current goal is: tidy up the desk Q: immediate next step?", "slide the tray < 10 cm to the right"),
        ("Q: what just happened?", "put book on the table"),
    ]
    b_qas = [
        ("<image>\n<image>\npick up the sanitizer Q: possible right now?", "no"),
        ("Q: what action is not possible?", "open the top drawer"),
    ]
    assert _lines(out / "stage2" / "train.jsonl") == [
        {
            "id": "ep-0001",
            "images": a_images,
            "conversations": [
                {"from": role, "value": text} for q, a in a_qas for role, text in (("human", q), ("gpt", a))
            ],
            "metadata": {"video_id": "ep-0001", "split": "train", "turns": a_turns},
        }
    ]
    assert _lines(out / "stage2" / "val.jsonl") == [
        {
            "id": "ep-0002",
            "images": b_images,
            "conversations": [
                {"from": role, "value": text} for q, a in b_qas for role, text in (("human", q), ("gpt", a))
            ],
            "metadata": {"video_id": "ep-0002", "split": "val", "turns": b_turns},
        }
    ]
    frames_a, frames_b = "<image>\n" * 3, "<image>\n" * 2
    assert _lines(out / "stage1" / "train.jsonl") == [
        {
            "id": "ep-0001-0",
            "images": a_images,
            "conversations": [{"from": "human", "value": a_qas[0][0]}, {"from": "gpt", "value": "yes"}],
            "metadata": {**a_turns[0], "video_id": "ep-0001", "split": "train"},
        },
        {
            "id": "ep-0001-1",
            "images": a_images,
            "conversations": [
                {"from": "human", "value": frames_a + "current goal is: tidy up the desk Q: immediate next step?"},
                {"from": "gpt", "value": "slide the tray < 10 cm to the right"},
            ],
            "metadata": {**a_turns[1], "video_id": "ep-0001", "split": "train"},
        },
        {
            "id": "ep-0001-2",
            "images": a_images,
            "conversations": [
                {"from": "human", "value": frames_a + "Q: what just happened?"},
                {"from": "gpt", "value": "put book on the table"},
            ],
            "metadata": {**a_turns[2], "video_id": "ep-0001", "split": "train"},
        },
    ]
    assert _lines(out / "stage1" / "val.jsonl") == [
        {
            "id": "ep-0002-0",
            "images": b_images,
            "conversations": [{"from": "human", "value": b_qas[0][0]}, {"from": "gpt", "value": "no"}],
            "metadata": {**b_turns[0], "video_id": "ep-0002", "split": "val"},
        },
        {
            "id": "ep-0002-1",
            "images": b_images,
            "conversations": [
                {"from": "human", "value": frames_b + "Q: what action is not possible?"},
                {"from": "gpt", "value": "open the top drawer"},
            ],
            "metadata": {**b_turns[1], "video_id": "ep-0002", "split": "val"},
        },
    ]
    stats = result.metadata["splits"]
    assert (stats["train"]["videos"], stats["train"]["stage1_lines"], stats["train"]["frames"]) == (1, 3, 3)
    assert (stats["val"]["videos"], stats["val"]["stage1_lines"], stats["val"]["frames"]) == (1, 2, 2)
    assert stats["train"]["task_types"] == {"success": 1, "planning": 1, "past_description": 1}
    assert stats["val"]["formats"] == {"binary": 1, "discrete": 1}


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
        "texts": "all",
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
        flag = "--" + next(iter(bad)).replace("_", "-")
        with pytest.raises(DataError, match=flag):
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
