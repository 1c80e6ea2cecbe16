"""How library code reports progress and messages without printing: the caller hands it a Reporter.

The CLI passes a rich-backed reporter (see `vlmft_cli.cli.output`); tests pass `RecordingReporter`;
Python API callers may pass nothing and get `NullReporter`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol


class ProgressTask(Protocol):
    """One progress bar: advance it as work completes; extra fields show beside it (loss, lr…)."""

    def advance(self, amount: float = 1, **fields: Any) -> None: ...

    def update(self, *, completed: float | None = None, total: float | None = None, **fields: Any) -> None: ...


class Reporter(Protocol):
    """Where the library sends human-facing output."""

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def progress(self, description: str, total: float | None = None, unit: str = "items") -> Any:
        """A context manager yielding a `ProgressTask`."""
        ...


class _NullTask:
    def advance(self, amount: float = 1, **fields: Any) -> None:
        pass

    def update(self, *, completed: float | None = None, total: float | None = None, **fields: Any) -> None:
        pass


class NullReporter:
    """Discards everything."""

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    @contextmanager
    def progress(self, description: str, total: float | None = None, unit: str = "items") -> Iterator[_NullTask]:
        yield _NullTask()


@dataclass
class _RecordedTask:
    description: str
    total: float | None
    completed: float = 0
    fields: dict[str, Any] = field(default_factory=dict)

    def advance(self, amount: float = 1, **fields: Any) -> None:
        self.completed += amount
        self.fields.update(fields)

    def update(self, *, completed: float | None = None, total: float | None = None, **fields: Any) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        self.fields.update(fields)


@dataclass
class RecordingReporter:
    """Keeps every message and progress task, for tests."""

    infos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tasks: list[_RecordedTask] = field(default_factory=list)

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    @contextmanager
    def progress(self, description: str, total: float | None = None, unit: str = "items") -> Iterator[_RecordedTask]:
        task = _RecordedTask(description, total)
        self.tasks.append(task)
        yield task
