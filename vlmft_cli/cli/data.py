"""`vlmft data`: download, inspect, synthesise, extract and verify RoboVQA data.

Each command parses its options into a typed config, calls one library function from
`vlmft_cli.data`, and prints a summary (a table, or JSON with --json). Library imports happen inside
the commands so `vlmft --help` never loads tensorflow or Pillow.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import JsonOption
from vlmft_cli.data.download import DEFAULT_SOURCE
from vlmft_cli.data.grammar import DROP_DUPLICATE, DROP_NOT_FIRST_ENTRY, TextsMode

app = typer.Typer(
    name="data",
    help="RoboVQA data: download, inspect, synthesise, extract to training JSONL, verify.",
    no_args_is_help=True,
)


class SynthTextsLayout(str, Enum):
    """`vlmft data synth --texts-layout` (`vlmft_cli.data.synth.TEXTS_LAYOUTS`, kept here so --help stays light)."""

    SPLIT = "split"
    MIXED = "mixed"


WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", "-w", min=1, help="Worker processes (default: every core).", show_default=False),
]


@app.command("download")
def download_command(
    dest: Annotated[Path, typer.Option("--dest", help="Local folder to mirror train/ and val/ into.")],
    source: Annotated[
        str, typer.Option("--source", help="Bucket folder, its root, or a local folder laid out the same way.")
    ] = DEFAULT_SOURCE,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Files copied at once.")] = 8,
    json: JsonOption = False,
) -> None:
    """Copy the RoboVQA TFRecords (train/ and val/) to a local folder: parallel, resumable, with retries.

    A file is written under a temporary name and renamed when whole; a rerun skips complete files and continues partial ones.

    Example: vlmft data download --dest data/robovqa --workers 16
    """
    from vlmft_cli.data.download import DownloadOptions, download

    result = download(DownloadOptions(dest=dest, source=source, workers=workers), output.make_reporter(quiet=json))
    if json:
        output.print_json(result.as_dict())
    else:
        output.print_table(
            f"Download into {dest}",
            ["files", "fetched", "already complete", "failed", "MiB fetched", "retries"],
            [
                [
                    result.files,
                    result.downloaded,
                    result.skipped,
                    len(result.failed),
                    f"{result.bytes_downloaded / 2**20:.1f}",
                    result.retries,
                ]
            ],
        )
        for path, reason in result.failed.items():
            output.error(f"{path}: {reason}")
    if result.failed:
        raise typer.Exit(1)


@app.command("inspect")
def inspect_command(
    source: Annotated[str, typer.Argument(help="A shard file, or a folder with train/ and val/ (local or gs://).")],
    records: Annotated[int, typer.Option("--records", "-n", min=1, help="Records read per split.")] = 100,
    json: JsonOption = False,
) -> None:
    """Show what the TFRecords hold: keys and types, frames, resolutions, task mix, parsed QAs.

    Example: vlmft data inspect demo-run/robovqa --records 50
    """
    from vlmft_cli.data.inspect import inspect_source

    report = inspect_source(source, records).as_dict()
    if json:
        output.print_json(report)
        return
    output.console.print(f"{report['records']} records from {len(report['files'])} files under {source}")
    schema_rows = [
        ["context", key, ", ".join(stats["types"]), stats["records"], ""] for key, stats in report["context"].items()
    ] + [
        ["feature list", key, ", ".join(stats["types"]), stats["records"], _length(stats)]
        for key, stats in report["feature_lists"].items()
    ]
    output.print_table("Schema", ["kind", "key", "types", "records", "entries per record"], schema_rows)
    output.print_table(
        "Frames",
        ["frames per record", "resolutions", "formats", "undecodable"],
        [
            [
                _counts(report["frames_per_record"]),
                _counts(report["resolutions"]),
                _counts(report["image_formats"]),
                report["undecodable_frames"],
            ]
        ],
    )
    output.print_table("Task types", ["task type", "QAs"], [[k, v] for k, v in report["task_types"].items()])
    _print_texts(report["texts"])
    output.print_table(
        "Example QAs",
        ["task type", "subtype", "format", "question", "answer"],
        [[e["task_type"], e["subtype"], e["format"], e["question"], e["answer"]] for e in report["examples"]],
    )
    problems = {
        **{f"damaged: {path}": reason for path, reason in report["damage"].items()},
        **report["dropped_task_blocks"],
    }
    if report["unparseable_records"]:
        problems["unparseable records"] = report["unparseable_records"]
    if problems:
        output.print_table("Problems seen", ["what", "count or reason"], [[k, v] for k, v in problems.items()])


def _print_texts(texts: dict[str, Any]) -> None:
    qas = texts["qas"]
    output.print_table(
        "Texts entries (the official loader reads the first only)",
        ["entries per record", "frame ranges", "several", "identical", "differing", "QAs: first / all (duplicates dropped)"],
        [
            [
                _counts(texts["entries_per_record"]),
                _counts(texts["frame_ranges"]),
                texts["records_with_several_entries"],
                texts["records_with_identical_entries"],
                texts["records_with_differing_entries"],
                f"{qas['first']} / {qas['all']} ({qas['duplicates_dropped_by_all']})",
            ]
        ],
    )
    for record in texts["differing_examples"]:
        ranges = ", ".join("-".join(map(str, r)) if r else "missing" for r in record["frame_ranges"])
        output.console.print(
            f"entries differ: {record['video_id']}: {record['distinct_entries']} distinct of {record['entries']} (frames {ranges})"
        )


def _length(stats: dict[str, Any]) -> str:
    length = stats.get("length")
    return f"{length['min']}-{length['max']} (mean {length['mean']})" if length else ""


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in counts.items()) or "-"


@app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write tfrecord/train and tfrecord/val into.")],
    videos: Annotated[int, typer.Option("--videos", min=1, help="Training videos.")],
    val: Annotated[
        int | None,
        typer.Option("--val", min=0, help="Validation videos (default: a tenth of --videos).", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards", min=1, help="Training shards (default: one per 25 videos, at most 8).", show_default=False
        ),
    ] = None,
    frame_size: Annotated[
        int, typer.Option("--frame-size", min=16, max=2048, help="Frame width and height in pixels.")
    ] = 96,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing tfrecord/ folder.")] = False,
    texts_layout: Annotated[
        SynthTextsLayout,
        typer.Option(
            "--texts-layout",
            help="split: a video's QAs spread over 2-3 different texts entries; mixed: all in the first entry, "
            "0-3 more entries each a copy of it or a different one (with a QA repeated).",
        ),
    ] = SynthTextsLayout.SPLIT,
    jsonl_only: Annotated[
        bool,
        typer.Option(
            "--jsonl-only",
            help="Write the processed layout (stage1/, stage2/, metadata.json) directly, every video's frames "
            "from a small shared pool: RoboVQA's size (--videos 199721 --val 22191) in seconds.",
        ),
    ] = False,
    pool_videos: Annotated[
        int, typer.Option("--pool-videos", min=1, help="With --jsonl-only: frame folders the videos share.")
    ] = 64,
    json: JsonOption = False,
) -> None:
    """Write a synthetic RoboVQA TFRecord tree: every task family, real grammar, 16 frames per video.

    With --jsonl-only, write what `vlmft data extract` would make of one instead, at any scale.

    Example: vlmft data synth --out demo-run/robovqa --videos 200 --val 20 --seed 0
    """
    from vlmft_cli.data.synth import SynthOptions, synthesize

    if jsonl_only:
        _synth_processed(out, videos, val, seed, pool_videos, frame_size, overwrite, json)
        return

    options = SynthOptions(
        out=out,
        videos=videos,
        val_videos=val,
        seed=seed,
        shards=shards,
        frame_size=frame_size,
        overwrite=overwrite,
        texts_layout=SynthTextsLayout(texts_layout).value,
    )
    result = synthesize(options)
    if json:
        output.print_json(
            {"root": str(result.root), "videos": result.videos, "shards": result.shards, "qas": result.qas}
        )
        return
    output.print_table(
        f"Synthetic RoboVQA in {result.root}",
        ["split", "videos", "shards"],
        [[split, result.videos[split], result.shards[split]] for split in result.videos],
    )
    output.console.print(f"{result.qas} QAs in all. Next: vlmft data extract --source {out} --out <folder>")


def _synth_processed(out: Path, videos: int, val: int | None, seed: int, pool: int, size: int, overwrite: bool, json: bool) -> None:
    from vlmft_cli.data.synth import ProcessedOptions, synthesize_processed

    result = synthesize_processed(
        ProcessedOptions(out=out, videos=videos, val_videos=val, seed=seed, pool_videos=pool, frame_size=size, overwrite=overwrite)
    )
    if json:
        output.print_json(
            {"root": str(result.root), "videos": result.videos, "stage1_lines": result.stage1_lines, "frames_written": result.frames_written}
        )
        return
    output.print_table(
        f"Synthetic processed RoboVQA in {result.root}",
        ["split", "videos", "stage1 lines"],
        [[split, result.videos[split], result.stage1_lines[split]] for split in result.videos],
    )
    output.console.print(f"{result.frames_written} frame files shared by all videos. Next: vlmft data verify {out}")


@app.command("extract")
def extract_command(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="Bucket root, its tfrecord/ folder, or any folder with train/ and val/ shards (local or gs://).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (images/, stage1/, stage2/, metadata.json).")],
    size: Annotated[int, typer.Option("--size", min=16, max=4096, help="Frames are resized to size×size.")] = 288,
    quality: Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG quality of the stored frames.")] = 85,
    workers: WorkersOption = None,
    subset_ratio: Annotated[
        float | None,
        typer.Option(
            "--subset-ratio",
            min=0.0,
            max=1.0,
            help="Keep this fraction of videos (chosen by id, stable).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help="Read at most this many records per split, in shard order.", show_default=False
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 if any record was skipped or any shard damaged.")
    ] = False,
    texts: Annotated[
        TextsMode,
        typer.Option(
            "--texts",
            help="Which texts entries of a record give QAs: all (identical QAs of a video kept once) or first "
            "(the official loader's texts.feature[0]).",
        ),
    ] = TextsMode.ALL,
    json: JsonOption = False,
) -> None:
    """Turn RoboVQA TFRecords into frames + stage-1/stage-2 JSONL. Resumable: rerun after any stop.

    Bad input (undecodable frames, records without QA, damaged shards, unsafe ids) is skipped and counted in metadata.json and the summary.

    Example: vlmft data extract --source data/robovqa --out data/processed --size 288 --workers 16
    """
    from vlmft_cli.data.extract import ExtractOptions, run_extract

    options = ExtractOptions(
        source=source,
        out=out,
        size=size,
        quality=quality,
        workers=workers,
        subset_ratio=subset_ratio,
        limit=limit,
        strict=strict,
        texts=TextsMode(texts).value,
    )
    result = run_extract(options, output.make_reporter(quiet=json))
    if json:
        output.print_json(
            {
                "out": str(result.out),
                "already_complete": result.already_complete,
                "problems": result.problems,
                **result.metadata,
            }
        )
    else:
        _print_extract_summary(result.out, result.metadata, result.already_complete)
    if strict and result.problems:
        output.error(f"--strict: {result.problems} problems in the input (see {out}/metadata.json)")
        raise typer.Exit(1)


def _print_extract_summary(out: Path, metadata: dict[str, Any], already_complete: bool) -> None:
    splits = metadata["splits"]
    output.print_table(
        f"Extracted into {out}" + (" (already complete, nothing done)" if already_complete else ""),
        ["split", "shards", "read", "videos", "frames", "stage1", "stage2", "skipped", "damaged"],
        [
            [
                split,
                s["shards"],
                s["records_read"],
                s["videos"],
                s["frames"],
                s["stage1_lines"],
                s["stage2_lines"],
                sum(s["skipped_records"].values()),
                s["damaged_shards"],
            ]
            for split, s in splits.items()
        ],
    )
    _print_task_types(splits)
    _print_extract_texts(metadata)
    reasons = sorted({r for s in splits.values() for r in s["skipped_records"]})
    not_bad = {DROP_DUPLICATE, DROP_NOT_FIRST_ENTRY}  # what --texts chose, shown above
    dropped = sorted({r for s in splits.values() for r in s["dropped_qas"]} - not_bad)
    if reasons or dropped or metadata["damaged_shards"]:
        rows = [[f"skipped record: {r}", *(s["skipped_records"].get(r, 0) for s in splits.values())] for r in reasons]
        rows += [[f"dropped QA: {r}", *(s["dropped_qas"].get(r, 0) for s in splits.values())] for r in dropped]
        output.print_table("Bad input (details in metadata.json)", ["what", *splits], rows)
        for damage in metadata["damaged_shards"]:
            output.console.print(
                f"damaged shard {damage['source']} ({damage['split']}): kept {damage['records_before_damage']} records before: {damage['error']}"
            )
    output.console.print(f"Frames per video: {_counts(metadata['frames_per_video'])}. Next: vlmft data verify {out}")


def _print_task_types(splits: dict[str, Any]) -> None:
    task_types = sorted({t for s in splits.values() for t in s["task_types"]})
    output.print_table(
        "QAs per task type",
        ["task type", *splits],
        [[t, *(s["task_types"].get(t, 0) for s in splits.values())] for t in task_types],
    )


def _print_extract_texts(metadata: dict[str, Any]) -> None:
    texts = metadata.get("texts")
    if not texts:
        return
    if texts["mode"] == TextsMode.FIRST.value:
        what = f"the first texts entry only (the official loader); {texts['later_entry_qas_not_read']} QAs of later entries not read"
    else:
        what = f"every texts entry; {texts['duplicate_qas_dropped']} duplicate QAs dropped"
    output.console.print(
        f"QAs from {what}; {texts['records_with_several_entries']} videos with several entries; {texts['qas_kept']} QAs kept."
    )


@app.command("verify")
def verify_command(
    root: Annotated[Path, typer.Argument(help="A folder `vlmft data extract` wrote.")],
    full: Annotated[bool, typer.Option("--full", help="Decode every image, not a sample.")] = False,
    sample: Annotated[int, typer.Option("--sample", min=1, help="Images decoded without --full: a uniform sample drawn with --seed.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --sample draw (same seed, same images).")] = 0,
    workers: WorkersOption = None,
    json: JsonOption = False,
) -> None:
    """Check processed data before training: structure, every line, images, splits, stages. Exit 1 on problems.

    By default each frame's header is read and a seeded sample decoded; --full decodes every frame on all cores (progress with an ETA).

    Example: vlmft data verify data/processed --full
    """
    from vlmft_cli.data.verify import VerifyOptions, run_verify

    report = run_verify(
        VerifyOptions(root=root, full=full, sample=sample, seed=seed, workers=workers), output.make_reporter(quiet=json)
    )
    if json:
        output.print_json(report.as_dict())
    else:
        output.print_table(
            f"Verify {root}",
            ["file", "valid lines"],
            [[name, count] for name, count in sorted(report.lines.items())],
        )
        output.console.print(
            f"videos: {_counts(report.videos)}; image references checked: {report.images_checked}; images decoded: {report.images_decoded}"
        )
        for problem in report.problems:
            output.error(problem)
        if report.problem_count > len(report.problems):
            output.error(f"… and {report.problem_count - len(report.problems)} more problems")
        output.console.print("OK" if report.ok else f"FAILED: {report.problem_count} problems")
    if not report.ok:
        raise typer.Exit(1)


class ImportFormat(str, Enum):
    """`vlmft data import --format` (`vlmft_cli.data.importer.FORMATS`, kept here so --help stays light)."""

    SHAREGPT = "sharegpt"
    LLAMAFACTORY = "llamafactory"
    ROBOVQA_JSONL = "robovqa-jsonl"


@app.command("import")
def import_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="A JSONL file or JSON list (sharegpt, robovqa-jsonl), or a LLaMA-Factory dataset_info.json.",
            show_default=False,
        ),
    ],
    source_format: Annotated[
        ImportFormat,
        typer.Option(
            "--format",
            "-f",
            help="sharegpt: conversations (from/value) or messages (role/content, ms-swift) with videos or images; "
            "llamafactory: an entry of dataset_info.json (--dataset); robovqa-jsonl: the processed JSONL written by hand.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (images/, stage1/, stage2/, metadata.json).")],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="llamafactory: the entry of dataset_info.json to import.", show_default=False),
    ] = None,
    val: Annotated[
        str | None,
        typer.Option(
            "--val",
            help="Validation data: a second file (sharegpt, robovqa-jsonl) or entry (llamafactory). "
            "Without it and without `split` fields, val videos are drawn per video with --seed.",
            show_default=False,
        ),
    ] = None,
    media_dir: Annotated[
        Path | None,
        typer.Option(
            "--media-dir",
            help="Where relative video and image paths start; nothing outside it is read (default: SOURCE's folder).",
            show_default=False,
        ),
    ] = None,
    frames: Annotated[
        int,
        typer.Option("--frames", min=1, max=256, help="Frames kept per video, sampled evenly with the final frame."),
    ] = 16,
    size: Annotated[int, typer.Option("--size", min=16, max=4096, help="Frames are resized to size×size.")] = 288,
    quality: Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG quality of the stored frames.")] = 85,
    val_ratio: Annotated[
        float,
        typer.Option("--val-ratio", min=0.0, max=0.99, help="Share of videos drawn for val when the source names no split."),
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the per-video val draw.")] = 0,
    workers: WorkersOption = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 if any sample was skipped.")] = False,
    json: JsonOption = False,
) -> None:
    """Import your own videos and conversations into the layout `data extract` writes (frames once per video).

    Every QA of a video is one stage-1 line; all of a video's QAs are its stage-2 conversation. Bad samples are skipped and counted with file:line in metadata.json and the summary.

    Example: vlmft data import --format sharegpt my_videos.jsonl --out data/mine
    """
    from vlmft_cli.data.importer import ImportOptions, run_import

    options = ImportOptions(
        format=ImportFormat(source_format).value,
        source=source,
        out=out,
        dataset=dataset,
        val=val,
        media_dir=media_dir,
        frames=frames,
        size=size,
        quality=quality,
        val_ratio=val_ratio,
        seed=seed,
        workers=workers,
        strict=strict,
    )
    result = run_import(options, output.make_reporter(quiet=json))
    metadata = result.metadata
    if json:
        output.print_json(
            {"out": str(result.out), "already_complete": result.already_complete, "problems": result.problems, **metadata}
        )
    else:
        splits = metadata["splits"]
        output.print_table(
            f"Imported into {result.out}" + (" (already complete, nothing done)" if result.already_complete else ""),
            ["split", "videos", "frames", "stage1", "stage2"],
            [[split, s["videos"], s["frames"], s["stage1_lines"], s["stage2_lines"]] for split, s in splits.items()],
        )
        _print_task_types(splits)
        split_from = "from the source" if metadata["split_from"] == "source" else f"drawn per video (seed {seed})"
        output.console.print(
            f"{metadata['samples_read']} samples read; split {split_from}; "
            f"{metadata['duplicate_qas_dropped']} duplicate QAs dropped; {metadata['system_prompts_dropped']} system prompts "
            "left out (the system_prompt setting decides)."
        )
        if metadata["skipped_samples_total"]:
            output.print_table(
                "Skipped samples",
                ["reason", "samples"],
                [[reason, count] for reason, count in metadata["skipped_reasons"].items()],
            )
            for skipped in metadata["skipped_samples"][:5]:
                where = f"{skipped['source']}:{skipped['line']}" if skipped["line"] is not None else f"{skipped['source']}[{skipped['item']}]"
                output.console.print(f"  {where}: {skipped['detail']}")
        output.console.print(f"Frames per video: {_counts(metadata['frames_per_video'])}. Next: vlmft data verify {result.out}")
    if strict and result.problems:
        output.error(f"--strict: {result.problems} samples skipped (see {out}/metadata.json)")
        raise typer.Exit(1)
