"""The files of one evaluation and the table shown for it.

`{folder}/metrics.json` (the metrics document), `{folder}/metrics.md` (what was evaluated and a markdown
table) and, with generation, `{folder}/predictions.jsonl` (one line per answered question). Each is
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

LOSS_COLUMNS = ["group", "QAs", "loss", "ppl"]
GENERATION_COLUMNS = ["BLEU1", "BLEU2", "BLEU3", "BLEU4", "sBLEU4", "EM", "yes/no (n)"]
LEGEND = "BLEUn: corpus BLEU-n; sBLEU4: mean sentence BLEU-4 (effective order); EM: exact match; yes/no (n): accuracy on the n yes/no questions"


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table: fixed digits, '-' when missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def has_generation(metrics: dict[str, Any]) -> bool:
    return metrics.get("generation") is not None


def _group_row(name: str, group: dict[str, Any], generation: bool) -> list[str]:
    row = [name, fmt(group.get("qas")), fmt(group.get("loss"), 4), fmt(group.get("perplexity"), 3)]
    if generation:
        row += [fmt(group.get(f"bleu{n}")) for n in (1, 2, 3, 4)]
        row.append(fmt(group.get("sentence_bleu4")))
        row.append(fmt(group.get("exact_match"), 3))
        accuracy, count = group.get("yes_no_accuracy"), group.get("yes_no_count") or 0
        row.append(f"{fmt(accuracy, 3)} ({count})")
    return row


def summary_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows (overall, each task type, each turn) shared by the screen and metrics.md."""
    generation = has_generation(metrics)
    columns = LOSS_COLUMNS + (GENERATION_COLUMNS if generation else [])
    rows = [_group_row("overall", metrics["overall"], generation)]
    rows += [_group_row(task, group, generation) for task, group in metrics.get("per_task", {}).items()]
    rows += [_group_row(f"turn {turn}", group, generation) for turn, group in metrics.get("per_turn", {}).items()]
    return columns, rows


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    aligns = ["---"] + ["---:"] * (len(columns) - 1)
    return "\n".join([line(columns), line(aligns), *(line(row) for row in rows)]) + "\n"


def title(metrics: dict[str, Any]) -> str:
    data = metrics["eval_set"]
    return f"{metrics['model']['label']} on stage {data['stage']} {data['split']}"


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """metrics.md: a heading, what was evaluated on what, and the summary table."""
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
        lines.append(f"- generation: greedy, at most {gen['max_new_tokens']} new tokens, batch {gen['batch_size']}; BLEU from sacrebleu")
        lines.append(f"- {LEGEND}")
    else:
        lines.append("- generation: not run (pass --generate for BLEU and yes/no accuracy)")
    columns, rows = summary_table(metrics)
    return "\n".join(lines) + "\n\n" + markdown_table(columns, rows)


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
