"""Writing an output folder all at once: build it in a hidden sibling, then rename it into place.

A crash leaves at most a `.{name}.partial-*` sibling, never a half-written destination. A non-empty
destination is refused unless `force`; a folder holding one of the `protect`ed paths (e.g. the source
checkpoint) is refused always.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from vlmft_cli.errors import CheckpointError
from vlmft_cli.runs import fsync_dir


def check_destination(destination: Path, *, force: bool, protect: Sequence[Path] = ()) -> None:
    """Refuse a destination that is a file, holds a protected path, or is non-empty without `force`."""
    if destination.exists() and not destination.is_dir():
        raise CheckpointError(f"{destination} exists and is not a folder")
    resolved = destination.resolve()
    for path in protect:
        guarded = path.resolve()
        if guarded == resolved or resolved in guarded.parents:
            raise CheckpointError(f"{destination} holds {path}; choose another output folder")
    if destination.is_dir() and any(destination.iterdir()) and not force:
        raise CheckpointError(f"{destination} is not empty", hint="pass --force to replace it")


@contextmanager
def staged_directory(destination: Path, *, force: bool = False, protect: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `destination`, on failure it is removed."""
    check_destination(destination, force=force, protect=protect)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replaced = None
    if destination.exists():
        replaced = destination.parent / f".{destination.name}.replaced-{uuid.uuid4().hex[:8]}"
        os.replace(destination, replaced)
    os.replace(partial, destination)
    fsync_dir(destination.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
