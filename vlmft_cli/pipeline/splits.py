"""One split of a processed data folder, read and turned into examples: `stage{N}/{split}.jsonl`, bad
lines counted (never fatal), `subset_ratio` on the training split, and the length policy."""

from __future__ import annotations

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
    from vlmft_cli.data.schema import Rejection, iter_samples
    from vlmft_cli.pipeline.examples import build_examples, subset

    assert settings.data is not None
    path = stage_file(settings.data, settings.stage, split)
    if not path.is_file():
        if required:
            raise DataError(f"{path} not found: is {settings.data} a folder written by `vlmft data extract`?")
        return None
    rejections: list[Rejection] = []
    samples = list(iter_samples(path, settings.data, rejections=rejections))
    if rejections:
        reporter.warning(f"{len(rejections)} line(s) of {path} rejected; first: {rejections[0]}")
    if split == "train":
        samples = subset(samples, settings.subset_ratio, settings.seed)
    examples, length_report = build_examples(
        samples,
        backend=backend,
        processor=processor,
        max_frames=settings.max_frames,
        frame_sampling=settings.frame_sampling,
        max_length=settings.max_length,
        clip_fps=settings.fps,
    )
    if length_report.rejected or length_report.turns_dropped:
        reporter.warning(f"{split}: {length_report.summary()}")
    summary = DataSummary(
        split=split,
        path=path,
        lines=len(samples) + len(rejections),
        rejected=len(rejections),
        examples=len(examples),
        qas=sum(e.num_qas for e in examples),
        length_report=length_report,
        token_lengths=[e.length for e in examples],
    )
    return examples, summary
