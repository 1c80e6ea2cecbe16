"""`load_split`: a split's lines read for training. Frames that could only fail inside a dataloader worker
(an empty file, bytes that are not an image, no frame at all) are rejected at load and counted; a JSONL
file linked from outside the data folder is refused before it is read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vlmft_cli.backends import backend_for
from vlmft_cli.errors import DataError
from vlmft_cli.pipeline.dataset import load_frames
from vlmft_cli.pipeline.splits import load_split
from vlmft_cli.reporting import RecordingReporter
from vlmft_cli.settings import SettingsInput


@pytest.fixture(scope="module")
def backend_and_processor(vlmft_home):
    backend = backend_for("tiny-internvl3")
    return backend, backend.load_processor("tiny-internvl3", vlmft_home)


def _settings(data: Path):
    return SettingsInput(stage=1, profile="cpu", flags={"data": data}, environ={}).resolve().settings


def _copy(processed_data: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(processed_data, data)
    return data


def test_frames_that_would_fail_in_a_worker_are_rejected_at_load_and_counted(
    processed_data, backend_and_processor, tmp_path
):
    data = _copy(processed_data, tmp_path)
    train_file = data / "stage1" / "train.jsonl"
    lines = [json.loads(line) for line in train_file.read_text().splitlines()]
    first_video = lines[0]["metadata"]["video_id"]
    # Three damaged frames of three other videos, and one line without frames.
    others = list(
        dict.fromkeys(line["metadata"]["video_id"] for line in lines if line["metadata"]["video_id"] != first_video)
    )[:3]
    damaged = {}
    for video_id, content in zip(others, (b"", b"not an image at all", b"\xff\xd8\xff"), strict=True):
        image = next(line["images"][-1] for line in lines if line["metadata"]["video_id"] == video_id)
        (data / image).write_bytes(content)
        damaged[video_id] = image
    no_frames = {
        **lines[0],
        "images": [],
        "conversations": [{"from": "human", "value": "Q: now?"}, lines[0]["conversations"][1]],
    }
    train_file.write_text("".join(json.dumps(line) + "\n" for line in [*lines, no_frames]))
    expected_rejected = [n for n, line in enumerate(lines, start=1) if line["metadata"]["video_id"] in damaged] + [
        len(lines) + 1
    ]

    backend, processor = backend_and_processor
    reporter = RecordingReporter()
    examples, summary = load_split(_settings(data), "train", backend, processor, reporter, required=True)

    assert summary.lines == len(lines) + 1 and summary.rejected == len(expected_rejected)
    assert summary.examples == len(lines) + 1 - len(expected_rejected)
    assert {e.video_id for e in examples}.isdisjoint(damaged)
    (warning,) = [w for w in reporter.warnings if "rejected" in w]
    first_bad = expected_rejected[0]
    first_image = next(
        image for video_id, image in damaged.items() if lines[first_bad - 1]["metadata"]["video_id"] == video_id
    )
    assert warning.startswith(
        f"{len(expected_rejected)} line(s) of {train_file} rejected; first: {train_file}:{first_bad}: image '{first_image}' "
    )
    # What is left loads: every frame of every example opens, as a dataloader worker opens it.
    assert sum(len(load_frames(data, example.images)) for example in examples) == sum(len(e.images) for e in examples)


def test_a_train_file_linked_from_outside_the_data_folder_is_refused(processed_data, backend_and_processor, tmp_path):
    data = _copy(processed_data, tmp_path)
    outside = tmp_path / "elsewhere.jsonl"
    shutil.move(data / "stage1" / "train.jsonl", outside)
    (data / "stage1" / "train.jsonl").symlink_to(outside)
    backend, processor = backend_and_processor
    with pytest.raises(DataError) as refused:
        load_split(_settings(data), "train", backend, processor, RecordingReporter(), required=True)
    assert str(refused.value) == (
        f"{data / 'stage1' / 'train.jsonl'} resolves outside the data root {data.resolve()} "
        f"(to {outside.resolve()}): refused, not read"
    )
