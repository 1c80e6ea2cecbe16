"""One process trains a run at a time: `run.lock` in the run folder, held with `flock` and naming its
holder (PID, host, command).

The kernel releases a `flock` when its holder dies, however it dies, so a lock left by a killed process
never blocks a resume: it is taken over with a message naming the old holder. A live holder is refused
with one line naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmft_cli.errors import CheckpointError

LOCK_FILE = "run.lock"


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    since: str
    command: str = ""

    def describe(self) -> str:
        return f"PID {self.pid} on {self.host} since {self.since}" + (f" ({self.command})" if self.command else "")


def _read_holder(path: Path) -> LockHolder | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockHolder(int(data["pid"]), str(data["host"]), str(data.get("since", "?")), str(data.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _open_locked(path: Path) -> int | None:
    """An fd of `path` holding its exclusive flock, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # released and removed between our open and our flock: try again
            same = False
        if same:
            return fd
        os.close(fd)


@contextmanager
def run_lock(run_dir: Path, *, command: str = "train", reporter: Any = None) -> Iterator[None]:
    """Hold the run's lock for the duration of the block; see the module docstring."""
    path = run_dir / LOCK_FILE
    fd = _open_locked(path)
    if fd is None:
        holder = _read_holder(path)
        named = holder.describe() if holder else "another process"
        raise CheckpointError(f"run {run_dir.name} is being trained by {named} ({path}); wait for it to end or stop it first")
    try:
        previous = _read_holder(path)
        if previous is not None and reporter is not None:
            reporter.warning(f"taking over the lock of run {run_dir.name} from {previous.describe()}, which is no longer running")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
