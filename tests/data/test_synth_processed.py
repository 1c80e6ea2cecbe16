"""`synth --jsonl-only`: the processed layout at any scale, frames from a shared pool; it passes `verify`,
and `verify` reports its progress against the recorded counts and decodes every frame with `full`."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from vlmft_cli.data.synth import FRAMES_PER_VIDEO, ProcessedOptions, synthesize_processed
from vlmft_cli.data.verify import VerifyOptions, run_verify
from vlmft_cli.errors import DataError
from vlmft_cli.reporting import RecordingReporter

#: RoboVQA: stage-1 and stage-2 training lines; the task mix of its QAs by family.
ROBOVQA_TRAIN = (722_979, 199_721)
MIX = {"affordance": 0.33, "planning": 0.35, "success": 0.14, "future_prediction": 0.11, "past_description": 0.06}
PLANNING = {"planning", "immediate_planning_with_context20", "remaining5_planning_with_context20"}


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin")
    synthesize_processed(ProcessedOptions(out=root, videos=1500, val_videos=30, pool_videos=3, frame_size=32, seed=5))
    return root


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_it_passes_verify_with_robovqa_lines_per_video_and_task_mix(standin):
    reporter = RecordingReporter()
    report = run_verify(VerifyOptions(standin, workers=1), reporter)
    assert report.ok, report.problems
    expected_train = round(1500 * ROBOVQA_TRAIN[0] / ROBOVQA_TRAIN[1])
    assert report.lines == {
        "stage1/train": expected_train,
        "stage1/val": round(30 * ROBOVQA_TRAIN[0] / ROBOVQA_TRAIN[1]),
        "stage2/train": 1500,
        "stage2/val": 30,
    }
    # Progress was counted in lines, against what metadata.json records, to the end.
    (task,) = [t for t in reporter.tasks if t.description == "Verifying"]
    assert task.total == task.completed == sum(report.lines.values())
    types = Counter(line["metadata"]["task_type"] for line in _lines(standin / "stage1" / "train.jsonl"))
    families = Counter("planning" if t in PLANNING else t for t in types.elements())
    for family, share in MIX.items():
        assert families[family] / expected_train == pytest.approx(share, abs=0.03), family
    # Only the pool's frames exist on disk, shared by every video.
    frames = sorted(p for p in (standin / "images").rglob("*.jpg"))
    assert len(frames) == 3 * FRAMES_PER_VIDEO
    stage2 = _lines(standin / "stage2" / "train.jsonl")
    assert (
        len({tuple(line["images"]) for line in stage2}) == 3
        and len({line["metadata"]["video_id"] for line in stage2}) == 1500
    )


def test_full_decodes_every_frame_reference_with_progress(tmp_path):
    synthesize_processed(ProcessedOptions(out=tmp_path, videos=40, val_videos=4, pool_videos=2, frame_size=16))
    reporter = RecordingReporter()
    report = run_verify(VerifyOptions(tmp_path, full=True, workers=1), reporter)
    assert report.ok and report.images_decoded == (40 + 4) * FRAMES_PER_VIDEO
    (task,) = [t for t in reporter.tasks if t.description == "Decoding frames"]
    assert task.total == task.completed == report.images_decoded


def test_same_seed_same_bytes_and_existing_data_is_kept(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        synthesize_processed(ProcessedOptions(out=root, videos=20, val_videos=2, pool_videos=1, frame_size=16, seed=3))
    for name in ("stage1/train.jsonl", "stage2/val.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    with pytest.raises(DataError, match="already holds processed data"):
        synthesize_processed(ProcessedOptions(out=a, videos=20, frame_size=16))
    synthesize_processed(ProcessedOptions(out=a, videos=10, val_videos=1, pool_videos=1, frame_size=16, overwrite=True))
    assert len(_lines(a / "stage2" / "train.jsonl")) == 10
