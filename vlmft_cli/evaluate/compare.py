"""Several evaluations side by side, each with its change in percent against the first.

An evaluation is named by its metrics.json, its eval folder, or a run (folder or name under the
experiments folder, or any folder with an `eval/` inside, such as a zero-shot one): the newest
evaluation in it. Δ% = (value − first) / |first| × 100, so a lower loss shows as a negative Δ% and a
higher BLEU as a positive one. Evaluations of different data (stage, split, file, limit) are compared
anyway, with a warning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli import runs
from vlmft_cli.errors import CheckpointError, DataError, VlmftError
from vlmft_cli.evaluate.report_files import METRICS_FILE, fmt, markdown_table
from vlmft_cli.evaluate.target import EVAL_DIR

#: Metrics compared for the overall group, and for each task type and turn; (key, label, higher is better).
OVERALL_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("loss", "loss", False),
    ("perplexity", "perplexity", False),
    ("bleu1", "BLEU-1", True),
    ("bleu2", "BLEU-2", True),
    ("bleu3", "BLEU-3", True),
    ("bleu4", "BLEU-4", True),
    ("sentence_bleu4", "sentence BLEU-4", True),
    ("exact_match", "exact match", True),
    ("yes_no_accuracy", "yes/no accuracy", True),
)
GROUP_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("loss", "loss", False),
    ("bleu4", "BLEU-4", True),
    ("sentence_bleu4", "sentence BLEU-4", True),
    ("yes_no_accuracy", "yes/no accuracy", True),
)
EVAL_SET_KEYS = ("stage", "split", "file", "limit", "examples")


@dataclass(frozen=True)
class LoadedMetrics:
    label: str
    path: Path  # the metrics.json
    metrics: dict[str, Any]


@dataclass(frozen=True)
class ComparisonRow:
    group: str  # "overall", a task type or "turn N"
    metric: str  # the metrics.json key
    label: str  # e.g. "affordance BLEU-4"
    higher_is_better: bool
    values: list[float | None]
    deltas: list[float | None]  # Δ% against the first; None for the first and where undefined


@dataclass
class Comparison:
    labels: list[str]
    paths: list[Path]
    rows: list[ComparisonRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def newest_eval(folder: Path) -> Path | None:
    """The most recently written `eval/*/metrics.json` under `folder`, if any."""
    found = [path for path in (folder / EVAL_DIR).glob(f"*/{METRICS_FILE}") if path.is_file()]
    return max(found, key=lambda path: (path.stat().st_mtime, str(path))) if found else None


def find_metrics(ref: str, runs_dir: Path) -> Path:
    """The metrics.json a reference names (see the module docstring)."""
    path = Path(ref)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / METRICS_FILE).is_file():
            return path / METRICS_FILE
        folder = path
    else:
        folder = runs.find_run(runs_dir, ref).path
    newest = newest_eval(folder)
    if newest is None:
        raise CheckpointError(f"{folder} holds no evaluation (no {METRICS_FILE}, nor {EVAL_DIR}/*/{METRICS_FILE})", hint="run `vlmft eval` on it first")
    return newest


def short_label(metrics: dict[str, Any]) -> str:
    """E.g. "stage2_20250101-120000@6 s1-val" or "tiny-internvl3 (zero-shot) s1-val"."""
    model, data = metrics["model"], metrics["eval_set"]
    who = f"{model['run']}@{model['step']}" if model.get("run") else model["label"]
    return f"{who} s{data['stage']}-{data['split']}"


def load_metrics(ref: str, runs_dir: Path) -> LoadedMetrics:
    path = find_metrics(ref, runs_dir)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(metrics, dict) or not {"model", "eval_set", "overall"} <= set(metrics):
        raise DataError(f"{path} is not a metrics.json written by `vlmft eval`")
    return LoadedMetrics(short_label(metrics), path, metrics)


def delta_pct(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return (value - base) / abs(base) * 100.0


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        result.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return result


def _groups(loaded: Sequence[LoadedMetrics]) -> list[tuple[str, list[dict[str, Any]], tuple[tuple[str, str, bool], ...]]]:
    """(group label, that group's dict in each evaluation, metrics to compare) in display order."""
    groups = [("overall", [item.metrics["overall"] for item in loaded], OVERALL_METRICS)]
    for section, prefix in (("per_task", ""), ("per_turn", "turn ")):
        names: list[str] = []
        for item in loaded:
            names += [name for name in item.metrics.get(section) or {} if name not in names]
        for name in names:
            groups.append((f"{prefix}{name}", [(item.metrics.get(section) or {}).get(name, {}) for item in loaded], GROUP_METRICS))
    return groups


def eval_set_warnings(loaded: Sequence[LoadedMetrics], labels: Sequence[str]) -> list[str]:
    first = loaded[0].metrics["eval_set"]
    warnings = []
    for item, label in zip(loaded[1:], labels[1:], strict=True):
        other = item.metrics["eval_set"]
        differing = [key for key in EVAL_SET_KEYS if other.get(key) != first.get(key)]
        if differing:
            changes = ", ".join(f"{key} {first.get(key)} vs {other.get(key)}" for key in differing)
            warnings.append(f"{label} was evaluated on other data than {labels[0]} ({changes})")
    return warnings


def compare(loaded: Sequence[LoadedMetrics]) -> Comparison:
    """Rows of every compared metric that at least one evaluation has, with Δ% against the first."""
    if len(loaded) < 2:
        raise VlmftError("comparing needs at least two evaluations")
    labels = _unique([item.label for item in loaded])
    comparison = Comparison(labels=labels, paths=[item.path for item in loaded], warnings=eval_set_warnings(loaded, labels))
    for group, dicts, metrics in _groups(loaded):
        for key, name, higher in metrics:
            values = [d.get(key) if isinstance(d.get(key), (int, float)) else None for d in dicts]
            if all(value is None for value in values):
                continue
            deltas = [None] + [delta_pct(value, values[0]) for value in values[1:]]
            comparison.rows.append(ComparisonRow(group, key, f"{group} {name}", higher, values, deltas))
    return comparison


def _fmt_delta(delta: float | None) -> str:
    return "-" if delta is None else f"{delta:+.1f}%"


def comparison_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """metric | first | second | Δ% second | …"""
    columns = ["metric", comparison.labels[0]]
    for label in comparison.labels[1:]:
        columns += [label, f"Δ% {label}"]
    rows = []
    for row in comparison.rows:
        digits = 4 if row.metric == "loss" else 3 if row.metric in ("perplexity", "exact_match", "yes_no_accuracy") else 2
        cells = [row.label, fmt(row.values[0], digits)]
        for value, delta in zip(row.values[1:], row.deltas[1:], strict=True):
            cells += [fmt(value, digits), _fmt_delta(delta)]
        rows.append(cells)
    return columns, rows


def comparison_markdown(comparison: Comparison) -> str:
    sources = "\n".join(f"- {label}: `{path}`" for label, path in zip(comparison.labels, comparison.paths, strict=True))
    warnings = "".join(f"\n> Warning: {warning}\n" for warning in comparison.warnings)
    columns, rows = comparison_table(comparison)
    return f"{sources}\n{warnings}\nΔ% is against {comparison.labels[0]}.\n\n{markdown_table(columns, rows)}"


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "evaluations": [{"label": label, "metrics": str(path)} for label, path in zip(comparison.labels, comparison.paths, strict=True)],
        "warnings": comparison.warnings,
        "rows": [
            {"group": r.group, "metric": r.metric, "higher_is_better": r.higher_is_better, "values": r.values, "delta_pct": r.deltas}
            for r in comparison.rows
        ],
    }


def compare_evaluations(refs: Sequence[str], runs_dir: Path) -> Comparison:
    """Load each reference's metrics and compare them against the first."""
    return compare([load_metrics(ref, runs_dir) for ref in refs])
