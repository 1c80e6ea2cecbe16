"""The files of one evaluation and the tables shown for it.

`{folder}/metrics.json` (the metrics document), `{folder}/metrics.md` (what was evaluated, the loss
table and, with generation, the scores table with each headline's 95% interval and a table of every
interval) and, with generation, `{folder}/predictions.jsonl` (one line per answered question). Each is
written atomically; a loss-only evaluation removes a predictions.jsonl left by an earlier one so the
folder never mixes two evaluations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmft_cli.evaluate.metrics import Prediction
from vlmft_cli.fsutil import atomic_write_json, atomic_write_text

METRICS_FILE = "metrics.json"
MARKDOWN_FILE = "metrics.md"
PREDICTIONS_FILE = "predictions.jsonl"

SCORE_FORMAT_NOTES = {
    "clean": "BLEU compares the answers as vlmft trains on them: `yes`",
    "official": "BLEU compares the official loader's targets, which keep the answer marker: `A: yes` against `A: ` + prediction",
}

LOSS_COLUMNS = ["group", "QAs", "loss", "ppl"]
GENERATION_COLUMNS = ["group", "n", "headline [95% CI]", "sBLEU1", "sBLEU2", "sBLEU3", "sBLEU4", "BLEU1", "BLEU2", "BLEU3", "BLEU4", "EM", "yes/no (n)"]
#: The metrics of the interval table, with their column names.
INTERVAL_COLUMNS: tuple[tuple[str, str], ...] = (
    *((f"sentence_bleu{n}", f"sBLEU{n}") for n in (1, 2, 3, 4)),
    *((f"bleu{n}", f"BLEU{n}") for n in (1, 2, 3, 4)),
    ("exact_match", "EM"),
    ("yes_no_accuracy", "yes/no"),
)
LEGEND = (
    "headline: yes/no accuracy for a yes/no task, mean sentence BLEU-4 otherwise, with its bootstrap 95% interval; "
    "n: answers scored; sBLEUn: mean sentence BLEU-n (effective order, as the paper scores single answers); "
    "BLEUn: corpus BLEU-n (0 when every answer of a group is shorter than n tokens: BLEU-2..4 of one-word answers, right or wrong); EM: exact match; "
    "yes/no (n): accuracy on the n yes/no questions"
)
HEADLINE_NAMES = {"yes_no_accuracy": "acc", "sentence_bleu4": "sBLEU4"}


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table: fixed digits, '-' when missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def digits_of(metric: str) -> int:
    return 3 if metric in ("exact_match", "yes_no_accuracy") else 2


def fmt_interval(value: Any, interval: Sequence[float] | None, digits: int = 2) -> str:
    """`41.20 [38.02, 44.10]`; the value alone without an interval."""
    if interval is None or value is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(interval[0], digits)}, {fmt(interval[1], digits)}]"


def has_generation(metrics: dict[str, Any]) -> bool:
    return metrics.get("generation") is not None


def score_format(metrics: dict[str, Any]) -> str:
    """`clean` or `official` (evaluations written before the option scored `clean`)."""
    return str((metrics.get("generation") or {}).get("score_format") or "clean")


def task_label(name: str, group: dict[str, Any]) -> str:
    """The task key with the paper's name when it has one: `affordance:discriminative (discriminative affordance)`."""
    paper = group.get("paper_task")
    return f"{name} ({paper})" if paper and paper != name else name


def groups(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(row label, group) for overall, each task and each turn."""
    rows = [("overall", metrics["overall"])]
    rows += [(task_label(task, group), group) for task, group in metrics.get("per_task", {}).items()]
    rows += [(f"turn {turn}", group) for turn, group in metrics.get("per_turn", {}).items()]
    return rows


def headline_cell(group: dict[str, Any]) -> str:
    metric = group.get("headline") or "sentence_bleu4"
    value = group.get(metric)
    if value is None:
        return "-"
    return f"{HEADLINE_NAMES.get(metric, metric)} {fmt_interval(value, (group.get('ci95') or {}).get(metric), digits_of(metric))}"


def _generation_row(name: str, group: dict[str, Any]) -> list[str]:
    row = [name, fmt(group.get("answers")), headline_cell(group)]
    row += [fmt(group.get(f"sentence_bleu{n}")) for n in (1, 2, 3, 4)]
    row += [fmt(group.get(f"bleu{n}")) for n in (1, 2, 3, 4)]
    row.append(fmt(group.get("exact_match"), 3))
    count = group.get("yes_no_count") or 0
    row.append(f"{fmt(group.get('yes_no_accuracy'), 3)} ({count})" if count else "-")
    return row


def summary_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The loss table (overall, each task, each turn) shared by the screen and metrics.md."""
    rows = [[name, fmt(group.get("qas")), fmt(group.get("loss"), 4), fmt(group.get("perplexity"), 3)] for name, group in groups(metrics)]
    return list(LOSS_COLUMNS), rows


def generation_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """The generation scores table (None without generation), shared by the screen and metrics.md."""
    if not has_generation(metrics):
        return None
    return list(GENERATION_COLUMNS), [_generation_row(name, group) for name, group in groups(metrics)]


def interval_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Every generation metric of every group with its bootstrap 95% interval (None without generation)."""
    if not has_generation(metrics):
        return None
    rows = []
    for name, group in groups(metrics):
        intervals = group.get("ci95") or {}
        rows.append([name, fmt(group.get("answers")), *(fmt_interval(group.get(key), intervals.get(key), digits_of(key)) for key, _ in INTERVAL_COLUMNS)])
    return ["group", "n", *(label for _, label in INTERVAL_COLUMNS)], rows


def summary_tables(metrics: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, columns, rows) of what the screen shows: the loss table, then the generation table."""
    tables = [(f"{title(metrics)}: teacher-forced loss", *summary_table(metrics))]
    generation = generation_table(metrics)
    if generation is not None:
        tables.append((f"{title(metrics)}: generation, {score_format(metrics)} score format", *generation))
    return tables


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    aligns = ["---"] + ["---:"] * (len(columns) - 1)
    return "\n".join([line(columns), line(aligns), *(line(row) for row in rows)]) + "\n"


def title(metrics: dict[str, Any]) -> str:
    data = metrics["eval_set"]
    return f"{metrics['model']['label']} on stage {data['stage']} {data['split']}"


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """metrics.md: a heading, what was evaluated on what, the loss table, and with generation the scores
    table and the interval table."""
    data, model = metrics["eval_set"], metrics["model"]
    lines = [
        f"# Evaluation: {title(metrics)}",
        "",
        f"- model: `{model['model']}`" + (f", checkpoint `{model['checkpoint']}` (step {model['step']})" if model["checkpoint"] else " (base model, zero-shot)"),
        f"- data: `{data['file']}`: {data['examples']} examples, {data['qas']} QAs" + (f" (first {data['limit']} examples)" if data.get("limit") else ""),
        f"- inputs: {data['max_frames']} frames ({data['frame_sampling']}), max length {data['max_length']}",
    ]
    if has_generation(metrics):
        gen = metrics["generation"]
        fmt_name = score_format(metrics)
        lines.append(f"- generation: greedy, at most {gen['max_new_tokens']} new tokens, batch {gen['batch_size']}; BLEU from sacrebleu")
        lines.append(f"- score format: `{fmt_name}`: {SCORE_FORMAT_NOTES.get(fmt_name, '')}")
        intervals = metrics.get("intervals") or {}
        if intervals:
            lines.append(f"- intervals: {intervals.get('method')}, {intervals.get('resamples')} resamples, seed {intervals.get('seed')}")
        lines.append(f"- {LEGEND}")
    else:
        lines.append("- generation: not run (pass --generate for BLEU and yes/no accuracy)")
    text = "\n".join(lines) + "\n\n## Teacher-forced loss\n\n" + markdown_table(*summary_table(metrics))
    generation, intervals_table = generation_table(metrics), interval_table(metrics)
    if generation is not None and intervals_table is not None:
        text += f"\n## Generation ({score_format(metrics)} score format)\n\n" + markdown_table(*generation)
        text += "\n## Bootstrap 95% intervals\n\n" + markdown_table(*intervals_table)
    return text


def write_eval_files(folder: Path, metrics: dict[str, Any], predictions: Sequence[Prediction] | None) -> list[Path]:
    """Write the evaluation's files into `folder` (created); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    predictions_path = folder / PREDICTIONS_FILE
    if predictions is not None:
        atomic_write_text(predictions_path, "".join(json.dumps(p.as_dict(), ensure_ascii=False) + "\n" for p in predictions))
        written.append(predictions_path)
    else:
        predictions_path.unlink(missing_ok=True)
    atomic_write_json(folder / METRICS_FILE, metrics)
    atomic_write_text(folder / MARKDOWN_FILE, metrics_markdown(metrics))
    written += [folder / METRICS_FILE, folder / MARKDOWN_FILE]
    return written
