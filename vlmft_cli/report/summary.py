"""The report: plots plus a markdown summary with each run's lineage and headline figures."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmft_cli import runs
from vlmft_cli.errors import CheckpointError
from vlmft_cli.fsutil import atomic_write_text
from vlmft_cli.report.plots import METRIC_NAMES, scores_by_task, task_bars, training_curves
from vlmft_cli.report.runs_data import RunData, chain_order, load_run

SUMMARY_FILE = "summary.md"


@dataclass
class Report:
    out: Path
    files: list[Path]
    runs: list[str]


def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def headline(item: RunData) -> dict[str, Any]:
    losses = item.series(item.train, "loss")[1]
    evals = item.series(item.evals, "loss")[1]
    step_times = item.series(item.train, "step_time_s")[1]
    tokens = item.series(item.train, "tokens_per_s")[1]
    memory = item.series(item.train, "peak_memory_gb")[1]
    return {
        "steps": int(item.series(item.train, "loss")[0][-1] - item.step_offset) if losses else 0,
        "final_train_loss": losses[-1] if losses else None,
        "best_eval_loss": min(evals) if evals else None,
        "median_step_time_s": statistics.median(step_times) if step_times else None,
        "median_tokens_per_s": statistics.median(tokens) if tokens else None,
        "peak_memory_gb": max(memory) if memory else None,
    }


def markdown(items: list[RunData], images: list[Path]) -> str:
    lines = ["# vlmft report", ""]
    for image in images:
        lines += [f"![{image.stem}]({image.name})", ""]
    lines += ["## Runs", "", "| run | stage | status | steps | final train loss | best eval loss | median step time (s) | median tokens/s | peak memory (GB) |", "|---|---|---|---|---|---|---|---|---|"]
    for item in items:
        h = headline(item)
        lines.append(
            f"| {item.run.name} | {item.record.stage or '?'} | {item.record.status} | {h['steps']} | {_num(h['final_train_loss'])} | "
            f"{_num(h['best_eval_loss'])} | {_num(h['median_step_time_s'], 3)} | {_num(h['median_tokens_per_s'], 4)} | {_num(h['peak_memory_gb'], 3)} |"
        )
    lines += ["", "## Lineage", ""]
    for item in items:
        record = item.record
        files = record.data.files if record.data else {}
        lines.append(f"- **{item.run.name}**: model `{record.model}` ({record.backend}), profile `{record.profile}`, attention `{record.attention}`")
        lines.append(f"  - started from: {record.parent.checkpoint if record.parent else 'the base model'}")
        for split, meta in files.items():
            lines.append(f"  - {split} data: `{meta.path}` ({meta.lines} lines, sha256 {meta.sha256[:12]}…)")
        versions = record.versions
        lines.append("  - versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    evaluated = [(item, doc) for item in items for doc in item.evaluations]
    if evaluated:
        lines += [
            "",
            "## Evaluations",
            "",
            "sBLEU-4: mean sentence BLEU-4 (effective order); BLEU-4: corpus BLEU-4; [low, high]: bootstrap 95% interval.",
            "",
            "| run | eval set | score format | QAs | loss | ppl | sBLEU-4 | BLEU-4 | yes/no acc (n) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for item, doc in evaluated:
            overall, eval_set = doc.get("overall", {}), doc.get("eval_set", {})
            intervals = overall.get("ci95") or {}
            generated = doc.get("generation") is not None
            lines.append(
                f"| {item.run.name} | stage {eval_set.get('stage')} {eval_set.get('split')} | {_score_format(doc) if generated else '-'} | {overall.get('qas')} | "
                f"{_num(overall.get('loss'))} | {_num(overall.get('perplexity'))} | {_with_interval(overall.get('sentence_bleu4'), intervals.get('sentence_bleu4'))} | "
                f"{_with_interval(overall.get('bleu4'), intervals.get('bleu4'))} | {_with_interval(overall.get('yes_no_accuracy'), intervals.get('yes_no_accuracy'), 3)} ({overall.get('yes_no_count') or 0}) |"
            )
        per_task = [(item, doc) for item, doc in evaluated if doc.get("generation") is not None and doc.get("per_task")]
        if per_task:
            lines += [
                "",
                "## Scores per task",
                "",
                "The metric that means something for each task: yes/no accuracy (%) for binary tasks, mean sentence BLEU-4 for free-form ones.",
                "",
                "| run | eval set | task | paper task | metric | n | score [95% interval] |",
                "|---|---|---|---|---|---|---|",
            ]
            for item, doc in per_task:
                eval_set = doc.get("eval_set", {})
                for bar in task_bars(doc):
                    interval = list(bar.interval) if bar.interval else None
                    lines.append(
                        f"| {item.run.name} | stage {eval_set.get('stage')} {eval_set.get('split')} | {bar.task} | {bar.label if bar.label != bar.task else '-'} | "
                        f"{METRIC_NAMES[bar.metric]} | {bar.count} | {_with_interval(bar.value, interval)} |"
                    )
    return "\n".join(lines) + "\n"


def _score_format(doc: dict[str, Any]) -> str:
    return str((doc.get("generation") or {}).get("score_format") or "clean")


def _with_interval(value: Any, interval: Any, digits: int = 2) -> str:
    """`41.20 [38.02, 44.10]`, the value alone without an interval, '-' without a value."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    if interval:
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


def build_report(refs: list[str], experiments: Path, out: Path) -> Report:
    """Plots and summary.md for the runs named by `refs` (run folders or names under `experiments`)."""
    if not refs:
        raise CheckpointError("name at least one run (a run folder, or a run or experiment name)")
    items = chain_order([load_run(runs.find_run(experiments, ref)) for ref in refs])
    if not any(item.train for item in items):
        raise CheckpointError("none of these runs has logged training metrics yet")
    out.mkdir(parents=True, exist_ok=True)
    images = [training_curves(items, out / "training.png")]
    bars = scores_by_task(items, out / "eval_by_task.png")
    if bars is not None:
        images.append(bars)
    summary = out / SUMMARY_FILE
    atomic_write_text(summary, markdown(items, images))
    return Report(out=out, files=[*images, summary], runs=[item.run.name for item in items])
