"""PNG plots of runs: training curves on one step axis, and evaluation scores per task type."""

from __future__ import annotations

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


def scores_by_task(items: list[RunData], path: Path) -> Path | None:
    """Bars per task type: the newest evaluation of each run (BLEU-4 when generated, else loss)."""
    latest = [(item, item.evaluations[-1]) for item in items if item.evaluations]
    if not latest:
        return None
    generated = all(doc.get("generation") is not None for _, doc in latest)
    metric, title = ("bleu4", "Corpus BLEU-4 per task type") if generated else ("loss", "Eval loss per task type")
    tasks = sorted({task for _, doc in latest for task in doc.get("per_task", {})})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(tasks)), 5), constrained_layout=True)
    width = 0.8 / len(latest)
    for index, (item, doc) in enumerate(latest):
        values = [float(doc["per_task"].get(task, {}).get(metric) or 0.0) for task in tasks]
        positions = [t + index * width for t in range(len(tasks))]
        ax.bar(positions, values, width, label=f"{item.label}, stage {doc['eval_set']['stage']} {doc['eval_set']['split']}", color=COLOURS[index % len(COLOURS)])
    ax.set_xticks([t + 0.4 - width / 2 for t in range(len(tasks))])
    ax.set_xticklabels([task.replace("_", "\n") for task in tasks], fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(metric)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
