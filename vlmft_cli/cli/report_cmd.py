"""`vlmft report`: plots and a markdown summary of runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlmft_cli.cli import output


def report(
    experiments: Annotated[list[str], typer.Argument(help="Runs: folders, run names or experiment names (newest run).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the PNGs and summary.md (default: report/ in the newest run).", show_default=False)] = None,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="Experiments folder to look names up in (default: the `out` setting).", show_default=False)] = None,
) -> None:
    """Plot training curves (stages chained on one axis) and eval scores per task type; write summary.md.

    Example: vlmft report stage1 stage2 --out report
    """
    from vlmft_cli.ckpt.locations import default_out
    from vlmft_cli.report.summary import build_report
    from vlmft_cli.runs import find_run

    experiments_dir = runs_dir or default_out()
    target = out or find_run(experiments_dir, experiments[-1]).path / "report"
    result = build_report(experiments, experiments_dir, target)
    output.console.print(f"Report for {', '.join(result.runs)}:")
    for file in result.files:
        output.console.print(f"  {file}")
