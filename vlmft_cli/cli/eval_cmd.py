"""`vlmft eval`: evaluate a checkpoint (or the base model) on a processed split; `vlmft eval compare`.

`eval` is a group whose callback runs the evaluation when no subcommand follows, so both
`vlmft eval --checkpoint latest --stage 1 --data DIR --generate` and `vlmft eval compare A B` work.
Thin over `vlmft_cli.evaluate`; heavy libraries load only inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import JsonOption, ProfileOption
from vlmft_cli.evaluate.scoring import ScoreFormat

app = typer.Typer(
    name="eval",
    help="Evaluate a checkpoint or the base model: loss and perplexity, and with --generate BLEU-1..4 and yes/no accuracy per task type. `eval compare` puts evaluations side by side.",
    invoke_without_command=True,
    no_args_is_help=True,
    rich_markup_mode="rich",
)

RunsDirOption = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="Experiments folder to find `latest` and run names in (default: the `out` setting, `experiments`; env VLMFT_OUT).", show_default=False),
]
GEN = "Generation"


def _defaults() -> tuple[Path, Path | None]:
    """The experiments folder (VLMFT_OUT or `experiments`) and the home folder if one is set (VLMFT_HOME);
    without one, a checkpoint is evaluated with its run's own home."""
    from vlmft_cli.settings import resolve_settings

    resolved = resolve_settings()
    return resolved.settings.out, resolved.settings.home if "home" in resolved.sources else None


@app.callback()
def evaluate(
    ctx: typer.Context,
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", "-k", help="'latest', a checkpoint folder, or a run folder or name (its newest complete checkpoint). Leave out, or 'none', for the base model (zero-shot).", show_default=False)] = None,
    stage: Annotated[int | None, typer.Option("--stage", "-s", min=1, max=2, help="Which data: 1 (one QA per sample) or 2 (conversations, scored turn by turn). Default: the run's stage, 1 for the base model.", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Processed data folder (default: the run's).", show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="train or val.")] = "val",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N examples (QAs in stage 1, conversations in stage 2).", show_default=False)] = None,
    eval_limit: Annotated[int | None, typer.Option("--eval-limit", min=1, help="Only the seeded subset of at most N QAs per task type that training evaluates at checkpoints with eval_limit N (the run's seed); not with --limit.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base model for a zero-shot evaluation (default tiny-internvl3).", show_default=False)] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="Model backend plugin (default: the run's, or the one that recognises --model).", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", min=1, help="Samples per forward and prompts per generate call (default: the eval_batch_size setting).", show_default=False)] = None,
    generate: Annotated[bool, typer.Option("--generate", help="Also answer every question greedily and score it (BLEU-1..4, exact match, yes/no accuracy).", rich_help_panel=GEN)] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Longest generated answer in tokens.", rich_help_panel=GEN)] = 64,
    score_format: Annotated[ScoreFormat, typer.Option("--score-format", help="What BLEU compares: 'clean', the answers vlmft trains on ('yes'), or 'official', the official loader's targets with their answer marker ('A: yes' against 'A: ' + prediction), to compare with the paper's figures.", rich_help_panel=GEN)] = ScoreFormat.CLEAN,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: {run}/eval/stage{S}-{split}-step{N}).", show_default=False)] = None,
    runs_dir: RunsDirOption = None,
    profile: ProfileOption = None,
    json: JsonOption = False,
) -> None:
    """Evaluate a checkpoint, or the base model, on a processed split.

    Example: vlmft eval --checkpoint latest --stage 1 --data robovqa --generate

    Example: vlmft eval --model tiny-internvl3 --stage 2 --data robovqa --generate   (zero-shot baseline)
    """
    if ctx.invoked_subcommand is not None:
        return
    from vlmft_cli.evaluate.report_files import LEGEND, has_generation, summary_tables
    from vlmft_cli.evaluate.runner import EvalRequest, evaluate_checkpoint

    default_out, home = _defaults()
    request = EvalRequest(
        data=data, stage=stage, checkpoint=checkpoint, model=model, backend=backend, split=split, limit=limit, eval_limit=eval_limit,
        generate=generate, batch_size=batch_size, max_new_tokens=max_new_tokens, score_format=score_format.value, out=out,
        runs_dir=runs_dir or default_out, home=home, profile=profile,
    )  # fmt: skip
    report = evaluate_checkpoint(request, output.make_reporter(quiet=json))
    if json:
        output.print_json({"output_dir": report.output_dir, "files": report.files, "metrics": report.metrics})
        return
    for table_title, columns, rows in summary_tables(report.metrics):
        output.print_table(table_title, columns, rows)
    if has_generation(report.metrics):
        output.console.print(LEGEND, markup=False, style="dim")
    output.console.print(report.message, markup=False)


@app.command("compare")
def compare(
    evaluations: Annotated[list[str], typer.Argument(help="metrics.json files, eval folders, or runs (folder or name: the newest evaluation inside). The first is the baseline.", show_default=False)],
    runs_dir: RunsDirOption = None,
    json: JsonOption = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a markdown table instead of a rich one.")] = False,
) -> None:
    """Evaluations side by side, with Δ% against the first and whether each difference is significant (95%: a paired bootstrap when both answered the same QAs, else non-overlapping intervals).

    Example: vlmft eval compare experiments/stage2-only_… experiments/stage2_…   (the curriculum ablation)
    """
    from vlmft_cli.evaluate.compare import compare_evaluations, comparison_json, comparison_markdown, comparison_table

    comparison = compare_evaluations(evaluations, runs_dir or _defaults()[0])
    if json:
        output.print_json(comparison_json(comparison))
        return
    for warning in comparison.warnings:
        output.err_console.print(f"[yellow]Warning:[/] {warning}", markup=True, soft_wrap=True)
    if markdown:
        output.console.print(comparison_markdown(comparison), markup=False, soft_wrap=True)
        return
    columns, rows = comparison_table(comparison)
    output.print_table(f"Δ% against {comparison.labels[0]}", columns, rows)
