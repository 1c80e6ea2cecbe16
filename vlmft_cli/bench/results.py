"""The JSON document every benchmark writes, and reading it back.

    {
      "schema": 1, "bench": "attention" | "step" | "data" | "extract" | "packing", "created": UTC time, "vlmft": version,
      "device": {...versions and hardware, see `device.device_info`...},
      "parameters": {...what was asked for...},
      "entries": [{"key": {...what was measured...}, "metrics": {name: number | null}, "details": {...}}],
      "unavailable": [{"name": ..., "reason": ...}],   # e.g. attention backends that cannot run here
      "notes": {name: text}                            # formulas and caveats, in words
    }

`compare` matches entries of two documents by their `key` and divides their `metrics`; everything else
is for people. Files are written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli import __version__
from vlmft_cli.errors import DataError
from vlmft_cli.fsutil import atomic_write_json
from vlmft_cli.runs import utc_now

SCHEMA = 1


def significant(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant figures (small rates keep their precision)."""
    return float(f"{value:.{digits}g}")


@dataclass
class Entry:
    """One measurement: what identifies it, its numbers, and anything else worth keeping."""

    key: dict[str, Any]
    metrics: dict[str, float | None]
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "metrics": self.metrics, "details": self.details}


@dataclass
class BenchDocument:
    bench: str
    device: dict[str, Any]
    parameters: dict[str, Any]
    entries: list[Entry] = field(default_factory=list)
    unavailable: list[dict[str, str]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    created: str = field(default_factory=utc_now)
    vlmft: str = __version__

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "bench": self.bench,
            "created": self.created,
            "vlmft": self.vlmft,
            "device": self.device,
            "parameters": self.parameters,
            "entries": [entry.as_dict() for entry in self.entries],
            "unavailable": self.unavailable,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchDocument:
        entries = [Entry(key=dict(e["key"]), metrics=dict(e["metrics"]), details=dict(e.get("details", {}))) for e in data["entries"]]
        return cls(
            bench=str(data["bench"]),
            device=dict(data.get("device", {})),
            parameters=dict(data.get("parameters", {})),
            entries=entries,
            unavailable=list(data.get("unavailable", [])),
            notes=dict(data.get("notes", {})),
            created=str(data.get("created", "")),
            vlmft=str(data.get("vlmft", "")),
        )


def write_document(path: Path, document: BenchDocument) -> None:
    """Write `document` to `path` atomically (folders are created)."""
    atomic_write_json(Path(path), document.as_dict())


def read_document(path: Path) -> BenchDocument:
    """A benchmark document from a file written by `write_document` (or by hand in the same shape)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"benchmark file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a JSON file: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise DataError(f"{path} is not a vlmft benchmark document (schema {SCHEMA})", hint="write one with `vlmft bench … --out FILE`")
    try:
        return BenchDocument.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: malformed benchmark document ({type(exc).__name__}: {exc})") from None
