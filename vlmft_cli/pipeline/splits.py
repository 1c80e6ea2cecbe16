"""One split of a processed data folder, read and turned into examples: `stage{N}/{split}.jsonl`, bad
lines counted (never fatal), `subset_ratio` on the training split, and the length policy.

The file is hashed in the same read that parses it, and the result (examples, counts and that sha256)
is cached (`pipeline.length_cache`): unchanged data with the same settings is not read again."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.errors import DataError
from vlmft_cli.reporting import Reporter
from vlmft_cli.settings import Settings


@dataclass
class DataSummary:
    split: str
    path: Path
    lines: int
    rejected: int
    examples: int
    qas: int
    length_report: Any
    token_lengths: list[int] = field(default_factory=list)
    sha256: str | None = None  # of the JSONL file, as read
    cached: bool = False  # whether the examples came from the plan cache


def stage_file(data_dir: Path, stage: int, split: str) -> Path:
    """`stage{N}/{split}.jsonl` of a data folder. One that resolves outside the folder (a symlink out of it)
    is refused with a `DataError` before anything reads it: training, evaluation and a resume's sha256
    check of the data all take the path from here."""
    from vlmft_cli.data.schema import refuse_outside_root

    path = data_dir / f"stage{stage}" / f"{split}.jsonl"
    refuse_outside_root(path, data_dir)
    return path


def load_split(settings: Settings, split: str, backend: Any, processor: Any, reporter: Reporter, *, required: bool) -> tuple[Any, DataSummary] | None:
    """Examples of one split with the length policy applied, and what happened on the way."""
    assert settings.data is not None
    path = stage_file(settings.data, settings.stage, split)
    if not path.is_file():
        if required:
            raise DataError(f"{path} not found: is {settings.data} a folder written by `vlmft data extract`?")
        return None
    from vlmft_cli.pipeline import length_cache

    key = length_cache.cache_key(_cache_inputs(settings, split, backend, processor))
    cache = length_cache.cache_file(settings.home, path, key)
    identity = length_cache.file_identity(path)
    with _no_cyclic_gc():  # millions of small objects, none in a cycle: collections would rescan them all
        loaded = _from_cache(cache, path, key, identity, reporter)
        if loaded is None:
            table, summary = _compute(settings, split, path, backend, processor)
    if loaded is None:
        try:
            length_cache.save(cache, table, key=key, identity=identity, summary=summary)
        except OSError as exc:
            reporter.warning(f"cannot write the plan cache {cache} ({exc.strerror or exc}): the next run reads {path} again")
    else:
        table, summary = loaded
    return table, _summary(split, path, table, summary, reporter, cached=loaded is not None)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _cache_inputs(settings: Settings, split: str, backend: Any, processor: Any) -> dict[str, Any]:
    """Everything but the data file that the examples of a split depend on."""
    from vlmft_cli import __version__
    from vlmft_cli.pipeline.length_cache import processor_fingerprint

    return {
        "vlmft": __version__,
        "backend": getattr(backend, "name", type(backend).__name__),
        "processor": processor_fingerprint(processor),
        "stage": settings.stage,
        "split": split,
        "max_frames": settings.max_frames,
        "frame_sampling": str(settings.frame_sampling),
        "fps": settings.fps,
        "max_length": settings.max_length,
        "system_prompt": settings.system_prompt,
        "pack": str(settings.pack),
        "subset": [settings.subset_ratio, settings.seed] if split == "train" and settings.subset_ratio < 1.0 else None,
    }


def _from_cache(cache: Path, path: Path, key: str, identity: tuple[int, ...], reporter: Reporter) -> tuple[Any, dict[str, Any]] | None:
    from vlmft_cli.pipeline import length_cache

    if not cache.is_file():
        return None
    try:
        return length_cache.load(cache, key=key, identity=identity)
    except length_cache.CacheDamaged as exc:
        reporter.warning(f"plan cache {cache} is {exc}: not used, {path} is read again")
        return None
    except KeyError:  # written for other data or settings: computed again and overwritten
        return None


def _compute(settings: Settings, split: str, path: Path, backend: Any, processor: Any) -> tuple[Any, dict[str, Any]]:
    """Read, hash and check every line once, and build the examples."""
    import hashlib

    from vlmft_cli.data.schema import Rejection, iter_samples
    from vlmft_cli.pipeline.examples import build_examples

    assert settings.data is not None
    rejections: list[Rejection] = []
    digest = hashlib.sha256()
    table, report = build_examples(
        iter_samples(path, settings.data, rejections=rejections, digest=digest),
        backend=backend,
        processor=processor,
        max_frames=settings.max_frames,
        frame_sampling=settings.frame_sampling,
        max_length=settings.max_length,
        clip_fps=settings.fps,
        subset_ratio=settings.subset_ratio if split == "train" else 1.0,
        seed=settings.seed,
    )
    summary = {
        "sha256": digest.hexdigest(),
        "lines": report.kept + report.rejected + len(rejections),
        "rejected": len(rejections),
        "first_rejection": str(rejections[0]) if rejections else None,
        "length_report": {
            "kept": report.kept,
            "rejected": report.rejected,
            "turns_dropped": report.turns_dropped,
            "examples_truncated": report.examples_truncated,
            "rejected_ids": report.rejected_ids,
        },
    }
    return table, summary


def _summary(split: str, path: Path, table: Any, summary: dict[str, Any], reporter: Reporter, *, cached: bool) -> DataSummary:
    from vlmft_cli.pipeline.examples import LengthReport

    if summary["rejected"]:
        reporter.warning(f"{summary['rejected']} line(s) of {path} rejected; first: {summary['first_rejection']}")
    length_report = LengthReport(**summary["length_report"])
    if length_report.rejected or length_report.turns_dropped:
        reporter.warning(f"{split}: {length_report.summary()}")
    return DataSummary(
        split=split,
        path=path,
        lines=summary["lines"],
        rejected=summary["rejected"],
        examples=len(table),
        qas=table.qa_start[-1],
        length_report=length_report,
        token_lengths=list(table.lengths),
        sha256=summary["sha256"],
        cached=cached,
    )
