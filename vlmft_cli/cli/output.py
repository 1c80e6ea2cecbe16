"""One place for terminal output: human tables, JSON for scripts, warnings on stderr, progress bars.

`make_reporter()` gives library code a `Reporter`: rich progress bars on a terminal, plain log lines
(at most one every few seconds per task) when output is piped or logged.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

# Piped or logged output is read in files and CI logs, where rich's 80-column default folds every table.
_PIPED_WIDTH = None if sys.stdout.isatty() else 160
console = Console(highlight=False, width=_PIPED_WIDTH)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

PLAIN_PROGRESS_INTERVAL_S = 5.0


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, nothing else mixed in."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


def error(message: str, hint: str | None = None) -> None:
    """`Error: message — hint` on stderr, as ONE line whatever the message holds (never read as markup)."""
    text = one_line(message) + (f" — {one_line(hint)}" if hint else "")
    err_console.print(f"[bold red]Error:[/] {escape(text)}", markup=True, emoji=False, soft_wrap=True)


def warning(message: str) -> None:
    """`Warning: message` on stderr, one line."""
    err_console.print(f"[yellow]Warning:[/] {escape(one_line(message))}", markup=True, emoji=False, soft_wrap=True)


def _format_fields(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def format_duration(seconds: float) -> str:
    """A time left as a progress line shows it: 42s, 3m05s, 2h07m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


#: The progress unit whose counts are shown in MB/GB, with the rate in MB/s.
BYTES = "bytes"


def format_bytes(count: float) -> str:
    """1234567 → '1.2 MB' (decimal units, as download sizes are usually given)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


class _RichTask:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: float = 1, **fields: Any) -> None:
        self._progress.update(self._task_id, advance=amount, info=_format_fields(fields) if fields else None)

    def update(self, *, completed: float | None = None, total: float | None = None, **fields: Any) -> None:
        kwargs: dict[str, Any] = {}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        if fields:
            kwargs["info"] = _format_fields(fields)
        self._progress.update(self._task_id, **kwargs)


class _PlainTask:
    def __init__(self, description: str, total: float | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.completed = 0.0
        self.fields: dict[str, Any] = {}
        self._started = self._last = time.monotonic()
        self._logged: str | None = None  # the last line printed

    def _maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PLAIN_PROGRESS_INTERVAL_S:
            return
        self._last = now
        rate = self.completed / max(now - self._started, 1e-9)
        left = f", ETA {format_duration((self.total - self.completed) / rate)}" if self.total and 0 < self.completed < self.total else ""
        extra = f" {_format_fields(self.fields)}" if self.fields else ""
        if self.unit == BYTES:
            of_total = f" of {format_bytes(self.total)}" if self.total else ""
            done = f"{format_bytes(self.completed)}{of_total} ({format_bytes(rate)}/s{left})"
        else:
            of_total = f"/{self.total:g}" if self.total else ""
            done = f"{self.completed:g}{of_total} {self.unit} ({rate:.3g} {self.unit}/s{left})"
        line = f"{self.description}: {done}{extra}"
        if force and line == self._logged:
            return  # the closing line would repeat the last one word for word
        self._logged = line
        err_console.print(line, markup=False)

    def advance(self, amount: float = 1, **fields: Any) -> None:
        self.completed += amount
        self.fields.update(fields)
        self._maybe_log()

    def update(self, *, completed: float | None = None, total: float | None = None, **fields: Any) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        self.fields.update(fields)
        self._maybe_log()


class ConsoleReporter:
    """The CLI's `Reporter`: messages, warnings and progress, all on stderr, so stdout holds only what a
    command prints (its table or its JSON). `quiet` (the `--json` mode) drops the messages but keeps the
    progress, so a long job is never silent."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            err_console.print(message, markup=False, soft_wrap=True)

    def warning(self, message: str) -> None:
        warning(message)

    @contextmanager
    def progress(self, description: str, total: float | None = None, unit: str = "items") -> Iterator[Any]:
        if not err_console.is_terminal:
            task = _PlainTask(description, total, unit)
            yield task
            task._maybe_log(force=True)
            return
        counted = (DownloadColumn(), TransferSpeedColumn()) if unit == BYTES else (MofNCompleteColumn() if total else TextColumn(""),)
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            *counted,
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        with Progress(*columns, console=err_console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, info="")
            yield _RichTask(progress, task_id)


def make_reporter(quiet: bool = False) -> ConsoleReporter:
    return ConsoleReporter(quiet=quiet)
