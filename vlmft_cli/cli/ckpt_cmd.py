"""`vlmft ckpt`: list, verify, merge, export and prune the checkpoints of training runs.

Thin commands over `vlmft_cli.ckpt.*`; heavy libraries are imported inside the commands that need them.
Runs are found under the experiments folder (`--out` for list/verify/prune, `--runs-dir` for merge and
export, whose `--out` is the destination), default the `out` setting (`experiments`, env VLMFT_OUT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import JsonOption
from vlmft_cli.errors import CheckpointError

app = typer.Typer(
    name="ckpt",
    help="Checkpoints of training runs: list, verify, merge into the base model, export the adapter, prune.",
    no_args_is_help=True,
)

OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Experiments folder holding the runs (default: the `out` setting, `experiments`; env VLMFT_OUT).", show_default=False),
]
RunsDirOption = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="Experiments folder to find a run name or `latest` in (default: `experiments`; env VLMFT_OUT).", show_default=False),
]
ExperimentOption = Annotated[str | None, typer.Option("--experiment", "-e", help="Only the runs of this experiment name.", show_default=False)]
CheckpointArgument = Annotated[str, typer.Argument(help="A checkpoint folder, a run folder or name (its newest complete checkpoint), or `latest`.")]
DestinationOption = Annotated[Path, typer.Option("--out", "-o", help="Folder to write to (created; must be empty unless --force).")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace a non-empty output folder.")]


def _runs_folder(out: Path | None) -> Path:
    from vlmft_cli.ckpt.locations import default_out

    return out if out is not None else default_out()


def _home() -> Path:
    from vlmft_cli.ckpt.locations import default_home

    return default_home()


def format_bytes(size: int) -> str:
    """Human-readable size: 512 B, 1.5 KB, 3.2 MB, …"""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover - the loop always returns


@app.command("list")
def list_checkpoints(out: OutOption = None, experiment: ExperimentOption = None, json: JsonOption = False) -> None:
    """List every run and its checkpoints: stage, step, eval loss, size, and whether each is complete.

    Example: vlmft ckpt list --experiment demo --json
    """
    from vlmft_cli.ckpt.listing import summarize_runs

    folder = _runs_folder(out)
    runs = summarize_runs(folder, experiment=experiment)
    if json:
        output.print_json([run.to_dict() for run in runs])
        return
    if not runs:
        output.console.print(f"No runs under {folder}", markup=False)
        return
    rows = []
    for run in runs:
        if not run.checkpoints:
            rows.append([run.name, run.stage, run.status, "-", "", "", "no checkpoints"])
        for ckpt in run.checkpoints:
            state = ("yes (best)" if ckpt.best else "yes") if ckpt.complete else f"no: {ckpt.problem}"
            loss = f"{ckpt.eval_loss:.4f}" if ckpt.eval_loss is not None else ""
            step = ckpt.step if ckpt.step is not None else ckpt.path.name
            rows.append([run.name, ckpt.stage, run.status, step, loss, format_bytes(ckpt.size_bytes), state])
    output.print_table(f"Checkpoints under {folder}", ["run", "stage", "status", "step", "eval loss", "size", "complete"], rows)


@app.command("verify")
def verify(path: Annotated[str, typer.Argument(help="A checkpoint folder, a run folder or name (all its checkpoints), or `latest`.")], out: OutOption = None) -> None:
    """Check checkpoints deeply: marker, file sizes and sha256, safetensors, JSON, optimizer/scheduler state.

    Pickled state is opened only with torch.load(weights_only=True). Exits with code 2 naming the problem.

    Example: vlmft ckpt verify experiments/demo_20260101-120000/checkpoints/checkpoint-200
    """
    from rich.text import Text

    from vlmft_cli.ckpt.verify import checkpoints_to_verify, verify_checkpoint

    results = [verify_checkpoint(c) for c in checkpoints_to_verify(_runs_folder(out), path, reporter=output.make_reporter())]
    for result in results:
        status = Text("OK ", style="bold green") if result.ok else Text("FAILED ", style="bold red")
        output.console.print(Text.assemble(status, str(result.checkpoint.path)))
        for check in result.checks:
            output.console.print(Text(f"  ✓ {check}"))
        for note in result.notes:
            output.console.print(Text(f"  note: {note}", style="dim"))
        if not result.ok:
            output.console.print(Text(f"  ✗ {result.problem}", style="red"))
    failed = [r for r in results if not r.ok]
    if len(failed) == 1 and len(results) == 1:
        raise CheckpointError(f"checkpoint {failed[0].checkpoint.path} failed verification: {failed[0].problem}")
    if failed:
        first = failed[0]
        raise CheckpointError(f"{len(failed)} of {len(results)} checkpoints failed verification; first: {first.checkpoint.path}: {first.problem}")


@app.command("merge")
def merge(
    path: CheckpointArgument,
    out: DestinationOption,
    precision: Annotated[Literal["bf16", "fp16", "fp32"], typer.Option("--precision", help="Precision of the merged weights.")] = "bf16",
    force: ForceOption = False,
    runs_dir: RunsDirOption = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow the base model's own Python code to run.")] = False,
) -> None:
    """Merge a checkpoint's LoRA adapter into its base model; the folder loads with plain transformers.

    Load it with AutoModelForImageTextToText.from_pretrained(DIR); tokenizer and image processor are saved beside it.

    Example: vlmft ckpt merge latest --out merged/demo --precision bf16
    """
    from vlmft_cli.ckpt.merge import merge_checkpoint
    from vlmft_cli.runs import resolve_checkpoint

    reporter = output.make_reporter()
    checkpoint = resolve_checkpoint(_runs_folder(runs_dir), path, reporter=reporter)
    result = merge_checkpoint(checkpoint, out, home=_home(), precision=precision, force=force, trust_remote_code=trust_remote_code, reporter=reporter)
    output.console.print(
        f"Merged {checkpoint.path} (step {checkpoint.step}) into {result.base_model} → {result.destination} "
        f"({format_bytes(result.size_bytes)}, {result.precision})",
        markup=False,
    )


@app.command("export")
def export(path: CheckpointArgument, out: DestinationOption, force: ForceOption = False, runs_dir: RunsDirOption = None) -> None:
    """Export a checkpoint's adapter with the processor and a model card (no optimizer state).

    The folder loads with PeftModel.from_pretrained(base_model, DIR).

    Example: vlmft ckpt export experiments/demo_20260101-120000 --out share/demo-adapter
    """
    from vlmft_cli.ckpt.export import export_checkpoint
    from vlmft_cli.runs import resolve_checkpoint

    reporter = output.make_reporter()
    checkpoint = resolve_checkpoint(_runs_folder(runs_dir), path, reporter=reporter)
    result = export_checkpoint(checkpoint, out, home=_home(), force=force, reporter=reporter)
    output.console.print(
        f"Exported {checkpoint.path} (step {checkpoint.step}) → {result.destination} ({format_bytes(result.size_bytes)}): {', '.join(result.files)}",
        markup=False,
    )


@app.command("prune")
def prune(
    keep: Annotated[int, typer.Option("--keep", "-k", min=0, help="Complete checkpoints to keep per run, newest first (the best and the newest are always kept).")],
    out: OutOption = None,
    experiment: ExperimentOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be removed, remove nothing.")] = False,
) -> None:
    """Per run keep the newest N complete checkpoints plus the best; remove the rest and incomplete leftovers.

    Example: vlmft ckpt prune --keep 2 --dry-run
    """
    from vlmft_cli.ckpt.prune import prune_runs

    result = prune_runs(_runs_folder(out), keep, experiment=experiment, dry_run=dry_run, reporter=output.make_reporter())
    verb = "would remove" if dry_run else "removed"
    for run in result.runs:
        kept = ", ".join(str(step) for step in run.kept) or "none"
        output.console.print(f"{run.run.name}: keeping step(s) {kept}", markup=False)
        for removal in run.removed:
            output.console.print(f"  {verb} {removal.path} ({format_bytes(removal.size_bytes)}): {removal.reason}", markup=False)
    total = f"{len(result.removed)} folder(s), {format_bytes(result.freed_bytes)}"
    output.console.print(f"{'Would free' if dry_run else 'Freed'} {total}" + (" (dry run)" if dry_run else ""), markup=False)

