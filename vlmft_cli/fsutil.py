"""Files and folders that readers never see half-written; hashes.

- `atomic_write_text` / `atomic_write_json` / `atomic_write_bytes`: a file written under a temporary name beside it, fsynced,
  then renamed over `path`.
- `staged_folder`: a folder built in a hidden sibling, then renamed into place (replacing an old one
  whole) and the parent fsynced; a failure removes the sibling. `replace_folder` is that last step
  alone, for builders that make their own staging folder.
- `fsync_dir`: make a rename inside a folder durable.
- `sha256_file`: a file's hash, read in chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes, *, temp_dir: Path | None = None) -> None:
    """Write to a temporary file, fsync, then rename it to `path`: readers never see half a file.

    The temporary file lies beside `path`, or in `temp_dir` (on the same file system) where a writer
    that can be killed must not leave strays beside its output (extraction's work folder). The file gets
    the umask's permissions, as `Path.write_bytes` would give it (not mkstemp's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = (temp_dir or path.parent) / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, temp_dir: Path | None = None) -> None:
    """`text` in UTF-8, written with `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"), temp_dir=temp_dir)


def atomic_write_json(path: Path, data: Any, *, ensure_ascii: bool = True, temp_dir: Path | None = None) -> None:
    """`data` as indented JSON (non-JSON values as `str`), written with `atomic_write_text`."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str, ensure_ascii=ensure_ascii) + "\n"
    atomic_write_text(path, text, temp_dir=temp_dir)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """fsync a folder (so renames in it survive a crash); a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_folder(built: Path, destination: Path, *, aside_dir: Path | None = None) -> None:
    """Rename the finished folder `built` to `destination` (same file system), replacing an existing
    `destination` whole, then fsync the parent. The old folder is moved aside first (a hidden sibling,
    or into `aside_dir` where a crash's leftover should be found, e.g. a staging folder) and removed last."""
    replaced = None
    if destination.exists():
        replaced = (aside_dir or destination.parent) / f".{destination.name}.replaced-{uuid.uuid4().hex[:8]}"
        os.replace(destination, replaced)
    os.replace(built, destination)
    fsync_dir(destination.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


@contextmanager
def staged_folder(destination: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling `.{name}.partial-*` of `destination`; when the block ends without
    an error it replaces `destination` (`replace_folder`), on an error it is removed."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replace_folder(partial, destination)
