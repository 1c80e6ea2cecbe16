"""Extraction faults: ids whose folder names would collide, a reference left without its frame, and a full
disk (one line naming the folder and the bytes, exit 2; the rerun after freeing space is byte-identical)."""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlmft_cli.cli.app import app
from vlmft_cli.data import extract, frames, merge
from vlmft_cli.data.extract import ExtractOptions, run_extract
from vlmft_cli.data.verify import VerifyOptions, run_verify
from vlmft_cli.errors import DataError

from .builders import extracted_tree, video, write_source

runner = CliRunner()
RERUN = " — free space on that disk and rerun the same command: it resumes where this run stopped"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _folder_files(out: Path, line: dict) -> list[str]:
    folder = out / line["images"][0].rsplit("/", 1)[0]
    return sorted(p.name for p in folder.iterdir())


def test_an_id_spelled_like_another_ids_hashed_folder_gets_a_folder_of_its_own(tmp_path):
    # `x y` is unsafe on disk: its folder is its cleaned form plus 10 hex digits of its sha1, and that name
    # is also a perfectly safe id of its own.
    lookalike = "x_y-" + hashlib.sha1(b"x y").hexdigest()[:10]
    source = write_source(tmp_path / "src", {"train": [[video("x y", frames=4), video(lookalike, frames=3)]]})
    out = tmp_path / "out"
    result = run_extract(ExtractOptions(str(source), out, size=32, workers=1))
    stage2 = _lines(out / "stage2" / "train.jsonl")
    assert [line["metadata"]["video_id"] for line in stage2] == ["x y", lookalike]
    assert [_folder_files(out, line) for line in stage2] == [
        ["00.jpg", "01.jpg", "02.jpg", "03.jpg"],
        ["00.jpg", "01.jpg", "02.jpg"],
    ]
    assert len({line["id"] for line in stage2}) == 2 and result.problems == 0
    report = run_verify(VerifyOptions(out, full=True, workers=1))
    assert report.ok, report.problems


@pytest.mark.parametrize("same_shard", [True, False], ids=["same-shard", "other-shards"])
def test_two_ids_that_still_share_a_folder_name_keep_the_first_whole(tmp_path, monkeypatch, same_shard):
    # A true clash (the same cleaned form and 40 bits of sha1) cannot be built by hand: force one.
    monkeypatch.setattr(extract, "safe_key", lambda video_id: "clash" if video_id in ("a/1", "a/2") else video_id)
    first, second = video("a/1", frames=4), video("a/2", frames=3)
    shards = [[first, video("other"), second]] if same_shard else [[first, video("other")], [second]]
    source = write_source(tmp_path / "src", {"train": shards})
    out = tmp_path / "out"
    result = run_extract(ExtractOptions(str(source), out, size=32, workers=1))
    stage2 = _lines(out / "stage2" / "train.jsonl")
    assert [line["metadata"]["video_id"] for line in stage2] == ["a/1", "other"]
    assert _folder_files(out, stage2[0]) == ["00.jpg", "01.jpg", "02.jpg", "03.jpg"]
    (skipped,) = result.metadata["skipped_records"]
    assert (skipped["video_id"], skipped["skipped"]) == ("a/2", "folder_name_collision")
    assert result.metadata["splits"]["train"]["skipped_records"] == {"folder_name_collision": 1}
    report = run_verify(VerifyOptions(out, full=True, workers=1))
    assert report.ok, report.problems


def test_extraction_never_finishes_with_a_reference_to_a_missing_frame(tmp_path, monkeypatch):
    source = write_source(tmp_path / "src", {"train": [[video("a"), video("b")]], "val": [[video("c")]]})
    out = tmp_path / "out"
    real_merge = extract.merge_parts

    def merge_after_losing_a_frame(out_dir, *args):
        (out_dir / "images" / "train-00000" / "b" / "02.jpg").unlink()  # as a wrong removal would
        return real_merge(out_dir, *args)

    monkeypatch.setattr(extract, "merge_parts", merge_after_losing_a_frame)
    with pytest.raises(DataError) as failed:
        run_extract(ExtractOptions(str(source), out, size=32, workers=1))
    # stage1/train.jsonl: line 1 is video a's only QA, line 2 video b's.
    assert str(failed.value) == (
        f"extraction left 2 image reference(s) without a file in {out} "
        "(first: stage1/train.jsonl:2: images/train-00000/b/02.jpg); metadata.json was not written"
    )
    assert not (out / "metadata.json").exists()


def test_check_references_names_the_first_missing_frame(tmp_path):
    source = write_source(tmp_path / "src", {"train": [[video("a"), video("b")]]})
    out = tmp_path / "out"
    run_extract(ExtractOptions(str(source), out, size=32, workers=1))
    merge.check_references(out)  # whole: nothing raised
    (out / "images" / "train-00000" / "a" / "03.jpg").unlink()
    with pytest.raises(
        DataError, match=r"left 2 image reference\(s\) .*first: stage1/train\.jsonl:1: images/train-00000/a/03\.jpg"
    ):
        merge.check_references(out)


# --- a full disk ------------------------------------------------------------------------------------------


@pytest.fixture
def in_process_pool(monkeypatch):
    """Frame work on a thread of this process, so the monkeypatched frame write is the one that runs."""
    monkeypatch.setattr(extract, "frame_pool", lambda workers: ThreadPoolExecutor(max_workers=1))


def _extract_cli(source: Path, out: Path):
    return runner.invoke(
        app, ["data", "extract", "--source", str(source), "--out", str(out), "--size", "32", "--workers", "1"]
    )


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _the_one_error(failed) -> str:
    """The single `Error:` line of a run that stopped on a full disk (exit 2, no traceback)."""
    assert failed.exit_code == 2 and "Traceback" not in failed.output
    (error,) = _error_lines(failed)
    return error


def test_a_full_disk_while_writing_frames_is_one_line_and_the_rerun_is_byte_identical(
    tmp_path, monkeypatch, in_process_pool
):
    records = [video(f"v{i}", frames=4) for i in range(6)]
    source = write_source(tmp_path / "src", {"train": [records[:3], records[3:]], "val": [[video("w")]]})
    reference = tmp_path / "reference"
    assert _extract_cli(source, reference).exit_code == 0
    real_write = frames.write_atomically
    lock = threading.Lock()
    written: list[Path] = []

    def filling_up(path: Path, data: bytes) -> None:
        with lock:  # shards run on threads here: the first six frames written fit, then the disk is full
            if len(written) >= 6:
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append(path)
        real_write(path, data)

    monkeypatch.setattr(frames, "write_atomically", filling_up)
    out = tmp_path / "out"
    failed = _extract_cli(source, out)
    assert failed.exit_code == 2
    assert "Traceback" not in failed.output
    (error,) = _error_lines(failed)
    named = re.match(r"Error: disk full \(No space left on device\) writing frames into (\S+): ", error)
    assert named, error
    folder = Path(named.group(1))
    assert folder.parent.parent == out / "images" and (reference / folder.relative_to(out)).is_dir()
    # The frames of that video still to write, by the reference extraction's sizes.
    done = {p.name for p in written if p.parent == folder}
    needed = sum(p.stat().st_size for p in (reference / folder.relative_to(out)).iterdir() if p.name not in done)
    match = re.fullmatch(
        rf"Error: disk full \(No space left on device\) writing frames into {re.escape(str(folder))}: "
        rf"{needed:,} bytes needed, ([\d,]+) bytes(?: \(.*\))? free; the ~\d+ records left need about .* more" + RERUN,
        error,
    )
    assert match, error
    assert not (out / "metadata.json").exists()

    monkeypatch.setattr(frames, "write_atomically", real_write)  # space freed
    rerun = _extract_cli(source, out)
    assert rerun.exit_code == 0, rerun.output
    assert extracted_tree(out) == extracted_tree(reference)


def test_a_full_disk_while_writing_a_shards_results_names_the_folder(tmp_path, monkeypatch, in_process_pool):
    source = write_source(tmp_path / "src", {"train": [[video("a")]]})
    monkeypatch.setattr(extract, "write_part", _no_space)
    out = tmp_path / "out"
    error = _the_one_error(_extract_cli(source, out))
    assert re.fullmatch(
        rf"Error: disk full \(No space left on device\) writing the results of shard train-00000 into "
        rf"{re.escape(str(out / '.extract' / 'parts'))}: [\d,]+ bytes needed, [\d,]+ bytes(?: \(.*\))? free" + RERUN,
        error,
    ), error


def test_a_full_disk_while_merging_names_the_bytes_the_jsonl_files_take(tmp_path, monkeypatch, in_process_pool):
    source = write_source(tmp_path / "src", {"train": [[video("a"), video("b")]], "val": [[video("c")]]})
    reference = tmp_path / "reference"
    assert _extract_cli(source, reference).exit_code == 0
    jsonl_bytes = sum(p.stat().st_size for p in reference.glob("stage*/*.jsonl"))
    monkeypatch.setattr(extract, "merge_parts", _no_space)
    out = tmp_path / "out"
    error = _the_one_error(_extract_cli(source, out))
    assert re.fullmatch(
        rf"Error: disk full \(No space left on device\) writing the JSONL files into {re.escape(str(out))}: "
        rf"{jsonl_bytes:,} bytes needed, [\d,]+ bytes(?: \(.*\))? free" + RERUN,
        error,
    ), error


def test_a_worker_that_runs_out_of_space_reports_the_folder_and_bytes_across_the_pool(tmp_path, monkeypatch):
    source_frames = video("a").frames[:3]
    data = [frames.transcode_frame(frame, 32, 85) for frame in source_frames]
    job = frames.VideoJob(0, "images/train-00000/a", source_frames)
    calls = []

    def third_fails(path: Path, content: bytes) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(frames, "write_atomically", third_fails)
    with pytest.raises(frames.DiskFull) as raised:
        frames.write_videos([job], str(tmp_path), 32, 85)
    # What the parent process receives from the pool is the exception pickled and rebuilt.
    received = pickle.loads(pickle.dumps(raised.value))
    assert (received.folder, received.needed, received.video_bytes, received.reason) == (
        str(tmp_path / "images" / "train-00000" / "a"),
        len(data[2]),
        sum(map(len, data)),
        "Disk quota exceeded",
    )
