"""Several evaluations side by side, each with its change in percent against the first and whether that
change is significant.

An evaluation is named by its metrics.json, its eval folder, or a run (folder or name under the
experiments folder, or any folder with an `eval/` inside, such as a zero-shot one): the newest
evaluation in it. Δ% = (value − first) / |first| × 100, so a lower loss shows as a negative Δ% and a
higher BLEU as a positive one. Evaluations of different data (stage, split, file, limit) or score
formats are compared anyway, with a warning.

Significance (95%) of a generation metric's difference, per group:
- `paired`: both evaluations answered the same QAs (the same ids, turns and references in their
  predictions.jsonl): a paired bootstrap resamples those QAs, the same ones for both, and recomputes
  the difference (corpus BLEU from the resampled n-gram counts); significant when the 95% interval of
  the difference excludes 0. This is the test used whenever it can be.
- `intervals`: otherwise, significant when the two evaluations' own bootstrap 95% intervals (`ci95` in
  metrics.json) do not overlap, a stricter test.
- none for the loss (no per-QA losses are stored), for BLEU across score formats, and for groups of
  fewer than 2 answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli import runs
from vlmft_cli.errors import CheckpointError, DataError, VlmftError
from vlmft_cli.evaluate.report_files import METRICS_FILE, PREDICTIONS_FILE, fmt, markdown_table, score_format
from vlmft_cli.evaluate.scoring import INTERVAL_METRICS
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
    ("sentence_bleu4", "sentence BLEU-4", True),
    ("bleu4", "BLEU-4", True),
    ("exact_match", "exact match", True),
    ("yes_no_accuracy", "yes/no accuracy", True),
)
EVAL_SET_KEYS = ("stage", "split", "file", "limit", "eval_limit", "examples")
PAIRED, INTERVALS = "paired", "intervals"
SIGNIFICANCE_LEGEND = (
    "sig.: is the difference significant at 95%? paired: a paired bootstrap over the same QAs (its 95% interval "
    "of the difference excludes 0); intervals: the two evaluations' own 95% intervals do not overlap (when the QAs "
    "differ); -: no test (loss, other score formats, fewer than 2 answers, or no intervals)"
)


@dataclass(frozen=True)
class LoadedMetrics:
    label: str
    path: Path  # the metrics.json
    metrics: dict[str, Any]

    def predictions(self) -> dict[str, dict[tuple[str, int], tuple[str, Any]]] | None:
        """The scored answers of predictions.jsonl (next to metrics.json) per group (`overall`, a task,
        `turn N`): (id, turn) → (reference, AnswerScores); None without a usable file."""
        from vlmft_cli.evaluate.metrics import task_key
        from vlmft_cli.evaluate.scoring import AnswerScores

        path = self.path.parent / PREDICTIONS_FILE
        if self.metrics.get("generation") is None or not path.is_file():
            return None
        grouped: dict[str, dict[tuple[str, int], tuple[str, Any]]] = {}
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                scores = AnswerScores.from_dict(item["scores"])
                if len(scores.ngrams) != 10:
                    return None  # written before n-gram counts were kept
                key, entry = (str(item["id"]), int(item["turn"])), (str(item["reference"]), scores)
                task = item.get("task") or task_key(item["task_type"], item.get("subtype"))
                for group in ("overall", task, f"turn {item['turn']}"):
                    grouped.setdefault(group, {})[key] = entry
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return grouped


@dataclass(frozen=True)
class Significance:
    """Whether a difference against the first evaluation is significant at 95%, and by which test."""

    significant: bool
    method: str  # PAIRED or INTERVALS
    difference_ci95: list[float] | None = None  # the paired test's interval of the difference


@dataclass(frozen=True)
class ComparisonRow:
    group: str  # "overall", a task type or "turn N"
    metric: str  # the metrics.json key
    label: str  # e.g. "affordance BLEU-4"
    higher_is_better: bool
    values: list[float | None]
    deltas: list[float | None]  # Δ% against the first; None for the first and where undefined
    significance: list[Significance | None] = field(default_factory=list)  # None for the first and where untested


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
    """(group label, that group's dict in each evaluation, metrics to compare) in display order; the label
    of a task is its key, of a turn `turn N` (the group names of `LoadedMetrics.predictions`)."""
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
        if item.metrics.get("generation") and loaded[0].metrics.get("generation") and score_format(item.metrics) != score_format(loaded[0].metrics):
            warnings.append(
                f"{label} scored BLEU in the {score_format(item.metrics)} format, {labels[0]} in the {score_format(loaded[0].metrics)} format: "
                "their BLEU figures are not comparable (and are not tested for significance)"
            )
    return warnings


def _paired(first: dict[tuple[str, int], tuple[str, Any]] | None, other: dict[tuple[str, int], tuple[str, Any]] | None) -> dict[str, list[float] | None] | None:
    """The paired bootstrap of `other − first` for every generation metric, when both answered the same QAs
    (same ids, turns and references), at least 2; else None."""
    from vlmft_cli.evaluate.scoring import ScoreArrays, paired_bootstrap

    if not first or not other or set(first) != set(other) or len(first) < 2:
        return None
    keys = sorted(first)
    if any(first[key][0] != other[key][0] for key in keys):
        return None
    return paired_bootstrap(ScoreArrays.of([first[key][1] for key in keys]), ScoreArrays.of([other[key][1] for key in keys]))


def _by_intervals(metric: str, first: dict[str, Any], other: dict[str, Any]) -> Significance | None:
    a, b = (first.get("ci95") or {}).get(metric), (other.get("ci95") or {}).get(metric)
    if a is None or b is None or (first.get("answers") or 0) < 2 or (other.get("answers") or 0) < 2:
        return None
    return Significance(significant=a[1] < b[0] or b[1] < a[0], method=INTERVALS)


def significance(metric: str, first: dict[str, Any], other: dict[str, Any], paired: dict[str, list[float] | None] | None, same_format: bool) -> Significance | None:
    """The test of one metric's difference (see the module docstring); None where there is none."""
    if metric not in INTERVAL_METRICS or (metric.startswith(("bleu", "sentence_bleu")) and not same_format):
        return None
    if paired is not None:
        interval = paired.get(metric)
        if interval is None:
            return None
        return Significance(significant=interval[0] > 0 or interval[1] < 0, method=PAIRED, difference_ci95=interval)
    return _by_intervals(metric, first, other)


def compare(loaded: Sequence[LoadedMetrics]) -> Comparison:
    """Rows of every compared metric that at least one evaluation has, with Δ% against the first."""
    if len(loaded) < 2:
        raise VlmftError("comparing needs at least two evaluations")
    labels = _unique([item.label for item in loaded])
    comparison = Comparison(labels=labels, paths=[item.path for item in loaded], warnings=eval_set_warnings(loaded, labels))
    answers = [item.predictions() for item in loaded]
    same_format = [score_format(item.metrics) == score_format(loaded[0].metrics) for item in loaded]
    for group, dicts, metrics in _groups(loaded):
        paired = [None] + [
            _paired((answers[0] or {}).get(group), (other or {}).get(group)) if any(key in INTERVAL_METRICS for key, _, _ in metrics) else None
            for other in answers[1:]
        ]
        for key, name, higher in metrics:
            values = [d.get(key) if isinstance(d.get(key), (int, float)) else None for d in dicts]
            if all(value is None for value in values):
                continue
            deltas = [None] + [delta_pct(value, values[0]) for value in values[1:]]
            tests = [None] + [
                significance(key, dicts[0], dicts[i], paired[i], same_format[i]) if values[0] is not None and values[i] is not None else None
                for i in range(1, len(loaded))
            ]
            comparison.rows.append(ComparisonRow(group, key, f"{group} {name}", higher, values, deltas, tests))
    return comparison


def _fmt_delta(delta: float | None) -> str:
    return "-" if delta is None else f"{delta:+.1f}%"


def _fmt_significance(test: Significance | None) -> str:
    return "-" if test is None else f"{'yes' if test.significant else 'no'} ({test.method})"


def comparison_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """metric | first | second | Δ% second | sig. second | …"""
    columns = ["metric", comparison.labels[0]]
    for label in comparison.labels[1:]:
        columns += [label, f"Δ% {label}", f"sig. {label}"]
    rows = []
    for row in comparison.rows:
        digits = 4 if row.metric == "loss" else 3 if row.metric in ("perplexity", "exact_match", "yes_no_accuracy") else 2
        cells = [row.label, fmt(row.values[0], digits)]
        tests = row.significance[1:] if row.significance else [None] * (len(row.values) - 1)
        for value, delta, test in zip(row.values[1:], row.deltas[1:], tests, strict=True):
            cells += [fmt(value, digits), _fmt_delta(delta), _fmt_significance(test)]
        rows.append(cells)
    return columns, rows


def comparison_markdown(comparison: Comparison) -> str:
    sources = "\n".join(f"- {label}: `{path}`" for label, path in zip(comparison.labels, comparison.paths, strict=True))
    warnings = "".join(f"\n> Warning: {warning}\n" for warning in comparison.warnings)
    columns, rows = comparison_table(comparison)
    return f"{sources}\n{warnings}\nΔ% is against {comparison.labels[0]}. {SIGNIFICANCE_LEGEND}.\n\n{markdown_table(columns, rows)}"


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "evaluations": [{"label": label, "metrics": str(path)} for label, path in zip(comparison.labels, comparison.paths, strict=True)],
        "warnings": comparison.warnings,
        "rows": [
            {
                "group": r.group,
                "metric": r.metric,
                "higher_is_better": r.higher_is_better,
                "values": r.values,
                "delta_pct": r.deltas,
                "significant": [None if t is None else t.significant for t in r.significance],
                "significance_test": [None if t is None else t.method for t in r.significance],
                "difference_ci95": [None if t is None else t.difference_ci95 for t in r.significance],
            }
            for r in comparison.rows
        ],
    }


def compare_evaluations(refs: Sequence[str], runs_dir: Path) -> Comparison:
    """Load each reference's metrics and compare them against the first."""
    return compare([load_metrics(ref, runs_dir) for ref in refs])
