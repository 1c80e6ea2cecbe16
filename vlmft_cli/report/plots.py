"""PNG plots of runs: training curves on one step axis, and evaluation scores per task (the metric that
means something for each: yes/no accuracy for binary tasks, mean sentence BLEU-4 for free-form ones)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmft_cli.report.runs_data import RunData

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def training_curves(items: list[RunData], path: Path) -> Path:
    """Loss (train and eval), learning rate, step time and peak memory against the (chained) step."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    (loss_ax, lr_ax), (time_ax, memory_ax) = axes
    for colour, item in zip(COLOURS * 10, items, strict=False):
        steps, loss = item.series(item.train, "loss")
        loss_ax.plot(steps, loss, color=colour, lw=1.2, label=f"{item.label} train")
        eval_steps, eval_loss = item.series(item.evals, "loss")
        if eval_steps:
            loss_ax.plot(eval_steps, eval_loss, "o--", color=colour, ms=4, label=f"{item.label} eval")
        lr_ax.plot(*item.series(item.train, "lr"), color=colour, label=item.label)
        time_ax.plot(*item.series(item.train, "step_time_s"), color=colour, label=item.label)
        memory_ax.plot(*item.series(item.train, "peak_memory_gb"), color=colour, label=item.label)
        if item.step_offset:
            for ax in (loss_ax, lr_ax, time_ax, memory_ax):
                ax.axvline(item.step_offset, color="grey", lw=0.8, ls=":")
    for ax, title, ylabel in (
        (loss_ax, "Loss", "cross-entropy on answer tokens"),
        (lr_ax, "Learning rate", "lr"),
        (time_ax, "Step time", "seconds per optimizer step"),
        (memory_ax, "Peak memory", "GB"),
    ):
        ax.set_title(title)
        ax.set_xlabel("optimizer step (stages chained)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class TaskBar:
    """One bar of the per-task chart: the task, the metric that means something for it, its value on the
    chart's 0-100 scale (accuracy in percent) or the loss, its 95% interval and how many QAs it holds."""

    task: str  # the task key (full tag)
    label: str  # the paper's name when it has one
    metric: str  # "yes_no_accuracy", "sentence_bleu4" or "loss"
    value: float | None
    interval: tuple[float, float] | None
    count: int


METRIC_NAMES = {"yes_no_accuracy": "yes/no accuracy (%)", "sentence_bleu4": "mean sentence BLEU-4", "loss": "eval loss"}


def _is_binary(group: dict[str, Any]) -> bool:
    if "binary" in group:
        return bool(group["binary"])
    count, answers = group.get("yes_no_count") or 0, group.get("answers") or 0
    return count > 0 and count == answers  # an evaluation written before tasks said so


def task_bars(doc: dict[str, Any]) -> list[TaskBar]:
    """The bars of one evaluation: yes/no accuracy for a binary task, mean sentence BLEU-4 for the others
    (corpus BLEU-4 is 0 for one-word answers), or the loss without generation."""
    generated = doc.get("generation") is not None
    bars = []
    for task, group in (doc.get("per_task") or {}).items():
        if generated:
            metric = group.get("headline") or ("yes_no_accuracy" if _is_binary(group) else "sentence_bleu4")
            scale = 100.0 if metric == "yes_no_accuracy" else 1.0
            count = int(group.get("yes_no_count") or 0) if metric == "yes_no_accuracy" else int(group.get("answers") or 0)
        else:
            metric, scale, count = "loss", 1.0, int(group.get("qas") or 0)
        value = group.get(metric)
        interval = (group.get("ci95") or {}).get(metric)
        bars.append(
            TaskBar(
                task=task,
                label=group.get("paper_task") or task,
                metric=metric,
                value=None if value is None else float(value) * scale,
                interval=None if interval is None else (float(interval[0]) * scale, float(interval[1]) * scale),
                count=count,
            )
        )
    return bars


def scores_by_task(items: list[RunData], path: Path) -> Path | None:
    """Bars per task for the newest evaluation of each run (see `task_figure`), as a PNG; None when no run
    has an evaluation."""
    fig = task_figure(items)
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def task_figure(items: list[RunData]) -> Any:
    """Bars per task for the newest evaluation of each run: yes/no accuracy (%) for binary tasks (hatched),
    mean sentence BLEU-4 for the others, each with its bootstrap 95% interval and its count; the loss per
    task when any evaluation has no generation. None when no run has an evaluation."""
    from matplotlib.patches import Patch

    latest = [(item, item.evaluations[-1]) for item in items if item.evaluations]
    if not latest:
        return None
    generated = all(doc.get("generation") is not None for _, doc in latest)
    if not generated:
        latest = [(item, {**doc, "generation": None}) for item, doc in latest]
    per_run = [{bar.task: bar for bar in task_bars(doc)} for _, doc in latest]
    tasks: list[str] = []
    for bars in per_run:
        tasks += [task for task in bars if task not in tasks]
    labels = {task: next(bars[task] for bars in per_run if task in bars) for task in tasks}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(9, 1.3 * len(tasks) + 2), 6.5), constrained_layout=True)
    width = 0.8 / len(latest)
    top = 0.0
    handles: list[Any] = []
    names: list[str] = []
    for index, ((item, doc), bars) in enumerate(zip(latest, per_run, strict=True)):
        colour = COLOURS[index % len(COLOURS)]
        data = doc["eval_set"]
        fmt_name = (doc.get("generation") or {}).get("score_format") or "clean"
        handles.append(Patch(facecolor=colour))
        names.append(f"{item.label}, stage {data['stage']} {data['split']}" + (f", {fmt_name} score format" if generated else ""))
        for t, task in enumerate(tasks):
            bar = bars.get(task)
            if bar is None or bar.value is None:
                continue
            x = t + index * width
            binary = bar.metric == "yes_no_accuracy"
            ax.bar(x, bar.value, width, color=colour, edgecolor="black" if binary else colour, hatch="//" if binary else None)
            high = bar.value
            if bar.interval is not None:
                low, high = bar.interval
                ax.errorbar(x, bar.value, yerr=[[max(0.0, bar.value - low)], [max(0.0, high - bar.value)]], fmt="none", ecolor="black", capsize=3, lw=1)
            ax.annotate(f"n={bar.count}", (x, high), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
            top = max(top, high)
    ax.set_xticks([t + 0.4 - width / 2 for t in range(len(tasks))])
    ax.set_xticklabels([f"{textwrap.fill(labels[task].label, 14)}\n({'accuracy' if labels[task].metric == 'yes_no_accuracy' else 'sBLEU-4' if generated else 'loss'})" for task in tasks], fontsize=8)
    if generated:
        ax.set_title("Generation score per task (whiskers: bootstrap 95% interval; n: answers scored)")
        ax.set_ylabel("yes/no accuracy (%) or mean sentence BLEU-4 (0-100)")
        ax.set_ylim(0, max(100.0, top) * 1.1)
        handles += [Patch(facecolor="white", edgecolor="black", hatch="//"), Patch(facecolor="grey")]
        names += ["hatched: yes/no accuracy (%), binary tasks", "solid: mean sentence BLEU-4, free-form tasks"]
    else:
        ax.set_title("Eval loss per task (n: QAs)")
        ax.set_ylabel("cross-entropy on answer tokens")
        ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles, names, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return fig
