"""Output folders appear complete or not at all."""

import pytest

from vlmft_cli.ckpt.staging import staged_directory
from vlmft_cli.errors import CheckpointError


def test_success_renames_into_place(tmp_path):
    destination = tmp_path / "deep" / "out"
    with staged_directory(destination) as staging:
        assert staging.parent == destination.parent and not destination.exists()
        (staging / "a.txt").write_text("a")
    assert [p.name for p in destination.parent.iterdir()] == ["out"]
    assert (destination / "a.txt").read_text() == "a"


def test_failure_leaves_the_old_destination_untouched(tmp_path):
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_directory(destination, force=True) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in destination.iterdir()] == ["old.txt"]


def test_an_empty_destination_needs_no_force_and_a_file_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with staged_directory(tmp_path / "empty") as staging:
        (staging / "x").write_text("x")
    assert (tmp_path / "empty" / "x").is_file()
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="is not a folder"), staged_directory(tmp_path / "file", force=True):
        pass


def test_protected_paths_are_never_replaced(tmp_path):
    source = tmp_path / "run" / "checkpoints" / "checkpoint-1"
    source.mkdir(parents=True)
    for destination in (source, tmp_path / "run", tmp_path):
        with pytest.raises(CheckpointError, match="holds"), staged_directory(destination, force=True, protect=[source]):
            pass
    assert source.is_dir()
