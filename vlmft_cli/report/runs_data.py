"""What a report reads from a run folder: its lineage, metric CSVs and evaluations, put in chain order."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli import runs
from vlmft_cli.run_record import RunRecord


def _floats(rows: list[dict[str, str]], key: str) -> list[float | None]:
    values: list[float | None] = []
    for row in rows:
        try:
            values.append(float(row[key]))
        except (KeyError, TypeError, ValueError):
            values.append(None)
    return values


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@dataclass
class RunData:
    run: runs.Run
    record: RunRecord
    train: list[dict[str, str]]
    evals: list[dict[str, str]]
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # metrics.json documents, oldest first
    step_offset: int = 0  # where this run starts on a chain's shared step axis

    @property
    def label(self) -> str:
        return f"stage {self.record.stage or '?'} ({self.run.name})"

    def series(self, rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
        steps, values = _floats(rows, "step"), _floats(rows, key)
        pairs = [(s + self.step_offset, v) for s, v in zip(steps, values, strict=True) if s is not None and v is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]


def load_run(run: runs.Run) -> RunData:
    evaluations = []
    for metrics in sorted((run.path / "eval").glob("*/metrics.json")):
        try:
            evaluations.append(json.loads(metrics.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    evaluations.sort(key=lambda doc: str(doc.get("created", "")))
    return RunData(run, run.record(), read_rows(run.logs_dir / runs.TRAIN_METRICS), checkpoint_evals(read_rows(run.logs_dir / runs.EVAL_METRICS)), evaluations)


def checkpoint_evals(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The eval rows one curve can show: with `eval_limit`, checkpoints evaluate a fixed subset and the
    last step also the whole split (`eval_set` full); the curve keeps the subset, the same QAs throughout."""
    if any(row.get("eval_set") == "subset" for row in rows):
        return [row for row in rows if row.get("eval_set") == "subset"]
    return rows


def chain_order(items: list[RunData]) -> list[RunData]:
    """Parents before children; a child's steps continue after its parent's last step."""
    by_path = {str(item.run.path.resolve()): item for item in items}
    ordered: list[RunData] = []

    def visit(item: RunData) -> None:
        if item in ordered:
            return
        parent_path = item.record.parent.run_path if item.record.parent else None
        parent = by_path.get(str(Path(parent_path).resolve())) if parent_path else None
        if parent is not None:
            visit(parent)
            last = parent.series(parent.train, "loss")[0]
            item.step_offset = int(last[-1]) if last else parent.step_offset
        ordered.append(item)

    for item in sorted(items, key=lambda i: i.record.created or ""):
        visit(item)
    return ordered
