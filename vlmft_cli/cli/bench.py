"""`vlmft bench`: measure the pipeline's speed and memory: `extract`, `packing`, `attention`, `step`, `data`, `startup`, and
`compare` for two runs' JSON files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import JsonOption, ProfileOption, StageOption

app = typer.Typer(name="bench", help="Benchmarks: throughput and peak memory.", no_args_is_help=True)

OutOption = Annotated[Path | None, typer.Option("--out", "-o", help="Also write the JSON document to this file (atomically).", show_default=False)]
ModelOption = Annotated[str | None, typer.Option("--model", "-m", help="Model name, local path or architecture variant (default tiny-internvl3).", show_default=False)]


def _emit(document: Any, json: bool, out: Path | None) -> None:
    """Write the document to --out, then print it as JSON or as its table."""
    from vlmft_cli.bench.results import write_document
    from vlmft_cli.bench.tables import document_table

    if out is not None:
        write_document(out, document)
    if json:
        output.print_json(document.as_dict())
        return
    _print_spec(document_table(document))
    if out is not None:
        output.console.print(f"written: {out}")


def _print_spec(spec: Any) -> None:
    output.print_table(spec.title, spec.columns, spec.rows)
    for line in spec.lines:
        output.console.print(line, markup=False)


def _resolve(stage: int, profile: str | None, model: str | None, data: Path | None = None) -> Any:
    from vlmft_cli.settings import resolve_settings

    return resolve_settings(stage=stage, profile=profile, cli={"model": model, "data": data})


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
    out: OutOption = None,
) -> None:
    """Extraction records/s and frames/s against a bare decode→resize→encode loop on the same frames and cores.

    Reports the ratio (target ≥ 0.75) and peak memory. Extracts into a temporary folder.

    Example: vlmft bench extract --source demo-run/robovqa --workers 2 --out extract.json
    """
    from vlmft_cli.bench.extract import measure_extract

    document = measure_extract(
        source,
        workers=workers,
        size=size,
        quality=quality,
        limit=limit,
        repeat=repeat,
        reporter=output.make_reporter(quiet=json),
    )
    _emit(document, json, out)


@app.command("packing")
def bench_packing(
    data: Annotated[str, typer.Option("--data", "-d", help="Processed data folder (from `vlmft data extract`); stage1/train.jsonl is used.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model whose family, tokenizer and image processor the mid-size random model takes.")] = "tiny-internvl3",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Timed optimizer steps per mode (after one warm-up each).")] = 3,
    global_batch_size: Annotated[int, typer.Option("--global-batch-size", min=1, help="QAs per optimizer step.")] = 8,
    micro_batch_size: Annotated[int, typer.Option("--micro-batch-size", min=1, help="Samples (unpacked) or about this many packed sequences per micro-batch.")] = 2,
    json: JsonOption = False,
    out: OutOption = None,
) -> None:
    """Stage-1 shared-prefix packing against one QA per sample: tokens per epoch and training QAs/s.

    Trains the same steps both ways, alternating, on a mid-size random InternVL model on the CPU (text 4×256,
    vision 4×128, 448-px frames of 256 tokens). Targets: tokens ≤ 0.4×, QAs/s ≥ 2×.

    Example: vlmft bench packing --data demo-run/robovqa --out packing.json
    """
    from vlmft_cli.bench.packing import measure_packing

    home = _resolve(1, None, None).settings.home
    document = measure_packing(Path(data), model=model, home=home, steps=steps, global_batch_size=global_batch_size, micro_batch_size=micro_batch_size, reporter=output.make_reporter(quiet=json))
    _emit(document, json, out)


@app.command("attention")
def bench_attention(
    seq_lens: Annotated[str, typer.Option("--seq-lens", help="Comma-separated sequence lengths.")] = "1024,2048,4096,8192",
    masks: Annotated[str, typer.Option("--masks", help="Comma-separated masks training uses: causal, shared-prefix (the stage-1 packing mask), padded.")] = "causal,shared-prefix,padded",
    batch: Annotated[int, typer.Option("--batch", "-b", min=1, help="Sequences per call.")] = 1,
    dtype: Annotated[str | None, typer.Option("--dtype", help="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on the CPU).", show_default=False)] = None,
    backward: Annotated[bool, typer.Option("--backward", help="Also time forward + backward.")] = False,
    model: Annotated[str, typer.Option("--model", "-m", help="Take the head layout from this model's language model (an architecture variant, a tiny model or a local folder).")] = "InternVL3-8B",
    heads: Annotated[int | None, typer.Option("--heads", min=1, help="Query heads (overrides the model's).", show_default=False)] = None,
    kv_heads: Annotated[int | None, typer.Option("--kv-heads", min=1, help="Key/value heads (overrides the model's).", show_default=False)] = None,
    head_dim: Annotated[int | None, typer.Option("--head-dim", min=1, help="Head dimension (overrides the model's).", show_default=False)] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed calls per case (the median is reported).")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls first.")] = 3,
    device: Annotated[str, typer.Option("--device", help="auto, cuda or cpu.")] = "auto",
    json: JsonOption = False,
    out: OutOption = None,
) -> None:
    """Every available attention backend's kernel, called as transformers models call it, with the masks training uses.

    Masks: causal (an unpadded batch), shared-prefix (a stage-1 packed row, its mask built by the model
    backend's packing collate) and padded (two rows, one a quarter shorter). Forward (and with --backward
    forward+backward) latency: median, min–max and IQR; peak memory of one call beyond its inputs (CUDA max
    allocated, or the CPU's resident-set peak); TFLOP/s of the pairs the mask allows. Unavailable backends are
    listed with their reason. Head layout: the model's language model (InternVL3-8B: 28 query, 4 KV heads × 128).

    Example: vlmft bench attention --backward --out attention.json
    """
    from vlmft_cli.bench.architecture import find_variant, resolve_layout
    from vlmft_cli.bench.attention import AttentionOptions, parse_masks, parse_seq_lens, run_attention_bench

    layout, source = resolve_layout(model, heads=heads, kv_heads=kv_heads, head_dim=head_dim, home=_resolve(1, None, None).settings.home)
    options = AttentionOptions(seq_lens=parse_seq_lens(seq_lens), masks=parse_masks(masks), batch=batch, dtype=dtype, backward=backward, repeats=repeats, warmup=warmup, device=device)
    found = find_variant(model)
    document = run_attention_bench(layout, options, layout_source=source, model_backend=found[0] if found else None, reporter=output.make_reporter(quiet=json))
    _emit(document, json, out)


@app.command("step")
def bench_step(
    model: ModelOption = None,
    profile: ProfileOption = None,
    stage: StageOption = 1,
    random_init: Annotated[bool, typer.Option("--random-init", help="Build the real architecture (--variant) with random weights: no download.")] = False,
    variant: Annotated[str | None, typer.Option("--variant", help="Architecture for --random-init, e.g. InternVL3-8B (default: --model).", show_default=False)] = None,
    layers: Annotated[int | None, typer.Option("--layers", min=1, help="With --random-init: at most N text and N vision layers (widths unchanged).", show_default=False)] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Timed steps (the median is reported).")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", min=1, help="Untimed steps first (the first counts the FLOPs).")] = 1,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Take the micro-batch from this processed data folder instead of a synthetic sample.", show_default=False)] = None,
    json: JsonOption = False,
    out: OutOption = None,
) -> None:
    """One LoRA training step of the path training runs: stage 1 packed with its block mask, stage 2 a whole conversation.

    Step time, QAs/s, tokens/s, peak memory; FLOPs executed (forward, backward, checkpoint recomputation)
    and necessary (forward, activation gradients of the trained path, LoRA weight gradients, the head only
    at labelled positions) apart, with their ratio and what the difference is made of; MFU from the necessary
    FLOPs against the profile's datasheet bf16 peak and a matmul measured here; the full curriculum's time
    on RoboVQA projected at the measured rate (see the JSON notes).

    Example: vlmft bench step --model InternVL3-8B --random-init --profile h100-80gb --stage 2 --json
    """
    from vlmft_cli.bench.step import StepOptions, measure_step

    options = StepOptions(random_init=random_init, variant=variant, layers=layers, steps=steps, warmup=warmup)
    _emit(measure_step(_resolve(stage, profile, model, data), options, output.make_reporter(quiet=json)), json, out)


@app.command("data")
def bench_data(
    data: Annotated[Path, typer.Option("--data", "-d", help="Processed data folder (from `vlmft data extract`).")],
    stage: StageOption = 1,
    profile: ProfileOption = None,
    model: ModelOption = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=0, help="Dataloader workers (default: the profile's).", show_default=False)] = None,
    batches: Annotated[int, typer.Option("--batches", min=1, help="Micro-batches timed after the first.")] = 50,
    step_samples_per_s: Annotated[float | None, typer.Option("--step-samples-per-s", help="What a step consumes; default: measured with `bench step` on the same settings.", show_default=False)] = None,
    json: JsonOption = False,
    out: OutOption = None,
) -> None:
    """Dataloader samples/s (training's dataset, collator and length-grouped order) against what a step consumes.

    Reports the ratio (target ≥ 4×) and the padding share with length-grouped batches (target < 10%) and shuffled.

    Example: vlmft bench data --data demo-run/data --stage 2 --profile cpu
    """
    from vlmft_cli.bench.data import DataOptions, measure_data

    options = DataOptions(workers=workers, batches=batches, step_samples_per_s=step_samples_per_s)
    _emit(measure_data(_resolve(stage, profile, model, data), options, output.make_reporter(quiet=json)), json, out)


@app.command("startup")
def bench_startup(
    lines: Annotated[str, typer.Option("--lines", "-n", help="Stage-1 line counts, comma-separated (a stand-in is written for each).")] = "10000,100000,722979",
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Runs of each (the median is reported).")] = 3,
    model: ModelOption = None,
    work: Annotated[Path | None, typer.Option("--work", help="Keep stand-ins and runs in this folder (a rerun reuses the stand-ins); default: a temporary one.", show_default=False)] = None,
    json: JsonOption = False,
    out: OutOption = None,
) -> None:
    """Launch to the first optimizer step, and a resume's, at N stage-1 lines (tiny model, subprocesses).

    Wall time and peak memory of `vlmft train --stage 1` from launch to its first step with no plan cache, then of its resume
    (the plan cached), on a full-scale stand-in (`data synth --jsonl-only`); the model's own load is measured apart and subtracted.

    Example: vlmft bench startup --lines 10000,722979 --repeat 3 --work /tmp/startup --out startup.json
    """
    from vlmft_cli.bench.results import write_document
    from vlmft_cli.bench.startup import StartupOptions, measure_startup, startup_rows
    from vlmft_cli.errors import ConfigError

    try:
        counts = tuple(int(value.replace("_", "")) for value in lines.split(",") if value.strip())
    except ValueError:
        raise ConfigError(f"--lines {lines!r} is not a comma-separated list of whole numbers") from None
    options = StartupOptions(lines=counts, repeat=repeat, model=model or "tiny-internvl3", work=work)
    document = measure_startup(options, output.make_reporter(quiet=json), on_progress=(lambda partial: write_document(out, partial)) if out else None)
    if out is not None:
        write_document(out, document)
    if json:
        output.print_json(document.as_dict())
        return
    output.print_table("Launch to the first optimizer step (medians)", ["lines", "phase", "first step s", "without model load s", "peak RSS MB", "CPU s"], startup_rows(document))
    if out is not None:
        output.console.print(f"written: {out}")


@app.command("compare")
def bench_compare(
    a: Annotated[Path, typer.Argument(help="The reference benchmark JSON (A).")],
    b: Annotated[Path, typer.Argument(help="The benchmark JSON to set against it (B).")],
    json: JsonOption = False,
) -> None:
    """Ratios B/A of every metric of the entries two runs of the same benchmark share.

    Example: vlmft bench compare attention-gb10.json attention-h100.json
    """
    from vlmft_cli.bench.compare import compare_files
    from vlmft_cli.bench.tables import comparison_table

    comparison = compare_files(a, b)
    if json:
        output.print_json(comparison.as_dict())
        return
    _print_spec(comparison_table(comparison))
