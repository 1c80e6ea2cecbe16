"""`vlmft bench`: measure the pipeline's speed and memory (`bench extract` for data extraction)."""

from __future__ import annotations

from typing import Annotated

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import JsonOption

app = typer.Typer(name="bench", help="Benchmarks: throughput and peak memory.", no_args_is_help=True)


@app.command("extract")
def bench_extract(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="TFRecords to extract (a folder with train/ and val/); keep it benchmark-sized or use --limit.",
        ),
    ],
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", min=1, help="Worker processes (default: every core).", show_default=False),
    ] = None,
    size: Annotated[int, typer.Option("--size", min=16, max=4096, help="Frames are resized to size×size.")] = 288,
    quality: Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG quality.")] = 85,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Records per split.", show_default=False)] = None,
    repeat: Annotated[
        int, typer.Option("--repeat", min=1, help="Runs of each; the best counts (less noise from other load).")
    ] = 3,
    json: JsonOption = False,
) -> None:
    """Extraction records/s and frames/s against a bare decode→resize→encode loop on the same frames and cores.

    Reports the ratio (target ≥ 0.75) and peak memory. Extracts into a temporary folder.

    Example: vlmft bench extract --source demo-run/robovqa --workers 2 --json
    """
    from vlmft_cli.data.bench import run_extract_benchmark

    result = run_extract_benchmark(
        source,
        workers=workers,
        size=size,
        quality=quality,
        limit=limit,
        repeat=repeat,
        reporter=output.make_reporter(quiet=json),
    )
    if json:
        output.print_json(result.as_dict())
        return
    output.print_table(
        f"Extraction benchmark: {result.records} videos, {result.frames} frames, {result.workers} workers, "
        f"{result.size}px, best of {result.repeat}",
        ["", "seconds", "records/s", "frames/s"],
        [
            ["extract", result.extract_s, result.extract_records_per_s, result.extract_frames_per_s],
            ["bare loop", result.loop_s, result.loop_records_per_s, result.loop_frames_per_s],
        ],
    )
    verdict = "meets" if result.meets_target else "misses"
    output.console.print(f"extract / loop = {result.ratio:.2f} ({verdict} the {result.target_ratio:.2f} target)")
    output.console.print(
        f"CPU seconds: extract {result.extract_cpu_s}, loop {result.loop_cpu_s}, ratio {result.cpu_ratio:.2f} "
        "(less disturbed by other load)"
    )
    output.console.print(
        f"peak memory: main {result.peak_rss_main_mib} MiB, largest worker {result.peak_rss_worker_mib} MiB, all {result.peak_rss_total_mib} MiB"
    )


@app.command("packing")
def bench_packing(
    data: Annotated[str, typer.Option("--data", "-d", help="Processed data folder (from `vlmft data extract`); stage1/train.jsonl is used.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model whose family, tokenizer and image processor the mid-size random model takes.")] = "tiny-internvl3",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Timed optimizer steps per mode (after one warm-up each).")] = 3,
    global_batch_size: Annotated[int, typer.Option("--global-batch-size", min=1, help="QAs per optimizer step.")] = 8,
    micro_batch_size: Annotated[int, typer.Option("--micro-batch-size", min=1, help="Samples (unpacked) or about this many packed sequences per micro-batch.")] = 2,
    json: JsonOption = False,
) -> None:
    """Stage-1 shared-prefix packing against one QA per sample: tokens per epoch and training QAs/s.

    Trains the same steps both ways, alternating, on a mid-size random InternVL model on the CPU (text 4×256,
    vision 4×128, 448-px frames of 256 tokens). Targets: tokens ≤ 0.4×, QAs/s ≥ 2×.

    Example: vlmft bench packing --data demo-run/robovqa --json
    """
    from pathlib import Path

    from vlmft_cli.settings import resolve_settings
    from vlmft_cli.training.packing_bench import measure_packing

    home = resolve_settings().settings.home
    result = measure_packing(Path(data), model=model, home=home, steps=steps, global_batch_size=global_batch_size, micro_batch_size=micro_batch_size, reporter=output.make_reporter(quiet=json))
    if json:
        output.print_json(result.as_dict())
        return
    output.print_table(
        f"Packing benchmark: {result.qas} QAs of {result.videos} videos, {result.tokens_per_frame} tokens per frame, {result.global_batch_size} QAs per step",
        ["", "tokens per epoch", "QAs/s (median)"],
        [
            ["unpacked", f"{result.tokens_unpacked:,}", f"{result.median_unpacked:.3f}"],
            ["packed", f"{result.tokens_packed:,}", f"{result.median_packed:.3f}"],
        ],
    )
    output.console.print(f"tokens packed/unpacked = {result.token_ratio:.3f} (target ≤ 0.4); QAs/s packed/unpacked = {result.speedup:.2f}× (target ≥ 2×)")
