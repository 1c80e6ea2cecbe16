"""Writing an output folder all at once: built in a hidden sibling, then renamed into place (`fsutil.staged_folder`).

A crash leaves at most a `.{name}.partial-*` sibling, never a half-written destination. A non-empty
destination is refused unless `force`; a folder holding one of the `protect`ed paths (e.g. the source
checkpoint) is refused always.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from vlmft_cli.errors import CheckpointError
from vlmft_cli.fsutil import staged_folder


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
    """`fsutil.staged_folder` after `check_destination`: on success the folder replaces `destination`."""
    check_destination(destination, force=force, protect=protect)
    with staged_folder(destination) as partial:
        yield partial
