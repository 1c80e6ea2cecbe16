"""`vlmft bench compare A.json B.json`: the ratio B/A of every metric two benchmark runs share.

Entries are matched by their `key` (backend and sequence length, model and stage, …); for each metric
that is a number in both, the ratio B/A is given (None where A is 0). Entries found in one file only are
listed apart. Both files must come from the same benchmark.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.bench.results import BenchDocument, read_document
from vlmft_cli.errors import DataError


@dataclass(frozen=True)
class Ratio:
    key: dict[str, Any]
    metric: str
    a: float
    b: float
    ratio: float | None  # b / a


@dataclass
class Comparison:
    bench: str
    a: str
    b: str
    device_a: dict[str, Any]
    device_b: dict[str, Any]
    ratios: list[Ratio] = field(default_factory=list)
    only_in_a: list[dict[str, Any]] = field(default_factory=list)
    only_in_b: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratios": [asdict(ratio) for ratio in self.ratios]}


def _key_text(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare_documents(a: BenchDocument, b: BenchDocument, *, name_a: str = "A", name_b: str = "B") -> Comparison:
    """Ratios B/A of the metrics of matching entries; see the module docstring."""
    if a.bench != b.bench:
        raise DataError(f"cannot compare a {a.bench} benchmark ({name_a}) with a {b.bench} benchmark ({name_b})")
    comparison = Comparison(a.bench, name_a, name_b, a.device, b.device)
    in_b = {_key_text(entry.key): entry for entry in b.entries}
    in_a = {_key_text(entry.key) for entry in a.entries}
    for entry in a.entries:
        other = in_b.get(_key_text(entry.key))
        if other is None:
            comparison.only_in_a.append(entry.key)
            continue
        for metric, value in entry.metrics.items():
            theirs = other.metrics.get(metric)
            if _number(value) and _number(theirs):
                ratio = None if value == 0 else round(theirs / value, 4)
                comparison.ratios.append(Ratio(entry.key, metric, value, theirs, ratio))
    comparison.only_in_b = [entry.key for entry in b.entries if _key_text(entry.key) not in in_a]
    return comparison


def compare_files(a: Path, b: Path) -> Comparison:
    return compare_documents(read_document(a), read_document(b), name_a=str(a), name_b=str(b))
