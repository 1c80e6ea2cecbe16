"""Processed samples → training examples: turns to encode, frames to load, and the length policy.

A stage-1 example is one QA; a stage-2 example is a whole conversation. Frames are never truncated:
an example whose frames (with its first QA) exceed `max_length` is rejected and counted; a stage-2
conversation that does not fit keeps its leading QAs and drops whole trailing turns (counted).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmft_cli.data.schema import Sample, TurnInfo
from vlmft_cli.model_backend import ModelBackend, Turn
from vlmft_cli.pipeline.frames import FrameSampling, sample_frame_indices


@dataclass(frozen=True)
class Example:
    """One training or evaluation example, ready to encode (images are loaded lazily)."""

    id: str
    images: tuple[str, ...]  # the selected frames, relative to the data root, in frame order
    turns: tuple[Turn, ...]  # user/assistant pairs; frames belong to the first user turn
    turn_info: tuple[TurnInfo, ...]  # one per QA pair kept
    video_id: str
    length: int  # exact encoded length in tokens
    fps: float | None = None  # frame rate of the selected frames (None: the backend's default)
    line: int | None = None  # its line in the JSONL file (1-based), for what is reported about it

    @property
    def num_qas(self) -> int:
        return len(self.turn_info)


@dataclass
class LengthReport:
    """What the length policy did, for the log and `--dry-run`."""

    kept: int = 0
    rejected: int = 0
    turns_dropped: int = 0
    examples_truncated: int = 0
    rejected_ids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.kept} examples kept, {self.rejected} rejected because frames and the first QA exceed max_length, "
            f"{self.turns_dropped} trailing QA turns dropped from {self.examples_truncated} conversations"
        )


def sample_turns(sample: Sample) -> list[Turn]:
    turns: list[Turn] = []
    for question, answer in zip(sample.questions, sample.answers, strict=True):
        turns += [Turn("user", question.strip()), Turn("assistant", answer)]
    return turns


def subset(samples: Sequence[Sample], ratio: float, seed: int) -> list[Sample]:
    """A deterministic share of the samples, grouped by video so a video is in or out as a whole."""
    if ratio >= 1.0:
        return list(samples)
    videos = sorted({s.video_id for s in samples})
    chosen = set(random.Random(seed).sample(videos, max(1, round(len(videos) * ratio))))
    return [s for s in samples if s.video_id in chosen]


def build_examples(
    samples: Iterable[Sample],
    *,
    backend: ModelBackend,
    processor: Any,
    max_frames: int,
    frame_sampling: FrameSampling,
    max_length: int,
    clip_fps: float | None = None,
) -> tuple[list[Example], LengthReport]:
    """Select frames, apply the length policy, and record exact lengths.

    `clip_fps` is the source clips' frame rate; the selected frames' rate is it divided by their mean stride.
    """
    report = LengthReport()
    examples: list[Example] = []
    for sample in samples:
        indices = sample_frame_indices(len(sample.images), max_frames, frame_sampling)
        turns = sample_turns(sample)
        fps = sampled_fps(clip_fps, indices)
        lengths = backend.conversation_lengths(processor, len(indices), turns, fps=fps)
        fitting = sum(1 for length in lengths if length <= max_length)
        if fitting == 0:
            report.rejected += 1
            report.rejected_ids.append(sample.id)
            continue
        if fitting < len(lengths):
            report.turns_dropped += len(lengths) - fitting
            report.examples_truncated += 1
        report.kept += 1
        examples.append(
            Example(
                id=sample.id,
                images=tuple(sample.images[i] for i in indices),
                turns=tuple(turns[: 2 * fitting]),
                turn_info=sample.turns[:fitting],
                video_id=sample.video_id,
                length=lengths[fitting - 1],
                fps=fps,
                line=sample.line,
            )
        )
    return examples, report


def sampled_fps(clip_fps: float | None, indices: Sequence[int]) -> float | None:
    """Frame rate of frames taken at `indices` from a clip recorded at `clip_fps`."""
    if clip_fps is None or len(indices) < 2:
        return clip_fps
    mean_stride = (indices[-1] - indices[0]) / (len(indices) - 1)
    return clip_fps / mean_stride


def task_type_counts(examples: Iterable[Example]) -> Counter[str]:
    return Counter(info.task_type for example in examples for info in example.turn_info)
