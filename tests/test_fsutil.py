"""Files and folders written whole (`vlmft_cli.fsutil`); staged output folders are also tested in ckpt/."""

import hashlib
import os

import pytest

from vlmft_cli.fsutil import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    replace_folder,
    sha256_file,
    staged_folder,
)


def test_atomic_write_leaves_only_the_file_with_the_umask_permissions(tmp_path):
    path = tmp_path / "deep" / "a.json"
    atomic_write_json(path, {"b": "é", "a": 1})
    atomic_write_json(path, {"b": "é"}, ensure_ascii=False)
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]
    assert path.read_text(encoding="utf-8") == '{\n  "b": "é"\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_temporary_file_can_live_elsewhere_and_a_failure_leaves_nothing(tmp_path):
    temp_dir, out = tmp_path / "work", tmp_path / "out"
    temp_dir.mkdir()
    atomic_write_text(out / "m.txt", "x", temp_dir=temp_dir)
    assert (out / "m.txt").read_text() == "x" and not any(temp_dir.iterdir())
    with pytest.raises(TypeError):  # the write itself fails, after the temporary file was made
        atomic_write_bytes(out / "m.txt", None, temp_dir=temp_dir)  # type: ignore[arg-type]
    assert not any(temp_dir.iterdir())
    assert [p.name for p in out.iterdir()] == ["m.txt"] and (out / "m.txt").read_text() == "x"


def test_staged_folder_replaces_an_old_one_whole_or_not_at_all(tmp_path):
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "old").write_text("old")
    with pytest.raises(RuntimeError), staged_folder(destination) as partial:
        (partial / "new").write_text("new")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in destination.iterdir()] == ["old"]
    with staged_folder(destination) as partial:
        (partial / "new").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in destination.iterdir()] == ["new"]
    built = tmp_path / ".built"
    built.mkdir()
    replace_folder(built, destination)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and not any(destination.iterdir())


def test_sha256_file_reads_in_chunks(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    assert sha256_file(path, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_the_replaced_folder_can_be_put_aside_elsewhere(tmp_path):
    staging, destination, built = tmp_path / ".staging", tmp_path / "checkpoint-1", tmp_path / ".staging" / "checkpoint-1"
    destination.mkdir()
    built.mkdir(parents=True)
    (built / "new").write_text("new")
    replace_folder(built, destination, aside_dir=staging)
    assert [p.name for p in destination.iterdir()] == ["new"] and not any(staging.iterdir())
