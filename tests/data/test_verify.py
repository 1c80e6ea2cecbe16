"""verify: passes on extracted data and names each kind of damage."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vlmft_cli.data.extract import ExtractOptions, run_extract
from vlmft_cli.data.verify import VerifyOptions, run_verify

from .builders import video, write_source


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    source = write_source(root / "src", {"train": [[video("t1"), video("t2"), video("t3")]], "val": [[video("v1")]]})
    run_extract(ExtractOptions(str(source), root / "out", size=32, workers=1))
    return root / "out"


@pytest.fixture
def out(pristine, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(pristine, copy)
    return copy


def _problems(out: Path, full: bool = False) -> list[str]:
    report = run_verify(VerifyOptions(out, full=full, workers=1))
    assert report.ok == (report.problem_count == 0)
    return report.problems


def _edit_lines(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("".join(line + "\n" for line in edit(lines)))


def test_extracted_data_passes(out):
    report = run_verify(VerifyOptions(out, full=True, workers=1))
    assert report.ok, report.problems
    assert report.lines == {"stage1/train": 3, "stage1/val": 1, "stage2/train": 3, "stage2/val": 1}
    assert report.videos == {"train": 3, "val": 1} and report.images_decoded == 16


def test_a_missing_image_is_named(out):
    (out / "images" / "train-00000" / "t2" / "03.jpg").unlink()
    problems = _problems(out)
    assert any("images/train-00000/t2/03.jpg' does not exist" in p for p in problems)


def test_images_of_the_wrong_size_or_undecodable_are_found_with_full(out):
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="JPEG")
    (out / "images" / "train-00000" / "t1" / "00.jpg").write_bytes(buffer.getvalue())
    truncated = out / "images" / "train-00000" / "t2" / "01.jpg"  # its header intact, its pixels cut off
    data = truncated.read_bytes()
    truncated.write_bytes(data[: data.index(b"\xff\xda") + 20])  # cut 20 bytes into the scan data
    problems = _problems(out, full=True)
    assert "images/train-00000/t1/00.jpg: 10x10, expected 32x32" in problems
    assert any(p.startswith("images/train-00000/t2/01.jpg: does not decode") for p in problems)


def test_an_image_that_is_not_one_rejects_its_lines_without_full(out):
    (out / "images" / "val-00000" / "v1" / "01.jpg").write_bytes(b"garbage")
    problems = _problems(out)
    for stage in ("stage1", "stage2"):
        assert (
            f"{out / stage / 'val.jsonl'}:1: image 'images/val-00000/v1/01.jpg' is not a readable image"
            in "\n".join(problems)
        )


def test_a_jsonl_file_linked_from_outside_the_folder_is_a_problem_and_not_read(out, tmp_path):
    outside = tmp_path / "elsewhere.jsonl"
    shutil.move(out / "stage2" / "val.jsonl", outside)
    (out / "stage2" / "val.jsonl").symlink_to(outside)
    problems = _problems(out)
    assert (
        f"{out / 'stage2' / 'val.jsonl'} resolves outside the data root {out.resolve()} (to {outside.resolve()}): refused, not read"
        in problems
    )


def test_a_broken_line_and_wrong_counts_are_reported(out):
    _edit_lines(out / "stage1" / "train.jsonl", lambda lines: [*lines, '{"id": "x"'])
    problems = _problems(out)
    assert any("stage1/train.jsonl:4: not JSON" in p for p in problems)


def test_a_video_in_both_splits_is_reported(out):
    train_line = (out / "stage2" / "train.jsonl").read_text().splitlines()[0]
    moved = json.loads(train_line)
    moved["metadata"]["split"] = "val"
    _edit_lines(out / "stage2" / "val.jsonl", lambda lines: [*lines, json.dumps(moved)])
    assert "video 't1' is in both train and val" in _problems(out)


def test_stages_that_disagree_are_reported(out):
    _edit_lines(out / "stage1" / "train.jsonl", lambda lines: lines[1:])
    _edit_lines(out / "stage2" / "val.jsonl", lambda lines: [])
    problems = _problems(out)
    assert any("fewer lines for video 't1'" in p for p in problems)
    assert any("video 'v1' is not in stage2/val.jsonl" in p for p in problems)
    assert any("counts 1 stage2/val lines, the file has 0" in p for p in problems)


def test_missing_pieces_are_reported(out, tmp_path):
    (out / "metadata.json").unlink()
    (out / "stage1" / "val.jsonl").unlink()
    problems = _problems(out)
    assert any("metadata.json is missing" in p for p in problems) and "stage1/val.jsonl is missing" in problems
    assert _problems(tmp_path / "nothing") == [f"{tmp_path / 'nothing'} is not a folder"]
