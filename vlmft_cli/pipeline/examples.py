"""Processed samples → training examples: turns to encode, frames to load, and the length policy.

A stage-1 example is one QA; a stage-2 example is a whole conversation. Frames are never truncated:
an example whose frames (with its first QA) exceed `max_length` is rejected and counted; a stage-2
conversation that does not fit keeps its leading QAs and drops whole trailing turns (counted).

Lengths are computed for all samples in one call where the backend offers `conversation_lengths_bulk`
(batched tokenization), else one sample at a time; both give the same numbers. The examples are held as
an `ExampleTable`: compact columns (one frame tuple per video, each distinct turn and task record once,
lengths and line numbers in arrays) that build each `Example` when it is read, so RoboVQA's 723k
stage-1 lines fit in a few hundred MB.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

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
    chosen = chosen_videos({s.video_id for s in samples}, ratio, seed)
    return [s for s in samples if s.video_id in chosen]


def chosen_videos(videos: Iterable[str], ratio: float, seed: int) -> set[str]:
    """The videos a `subset_ratio` of `ratio` keeps: a seeded draw from the sorted distinct ids."""
    ordered = sorted(set(videos))
    return set(random.Random(seed).sample(ordered, max(1, round(len(ordered) * ratio))))


class ExampleTable(Sequence[Example]):
    """Examples as compact columns; indexing builds an `Example` (a slice, a list of them). Equal to a
    list of the same examples."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.frames: list[tuple[str, ...]] = []  # distinct frame tuples
        self.frame_of = array("i")
        self.videos: list[str] = []  # distinct video ids
        self.video_of = array("i")
        self.turn_table: list[Turn] = []  # distinct turns
        self.info_table: list[TurnInfo] = []  # distinct task records
        self.qa_start = array("q", [0])  # example i's QAs are qa_start[i]:qa_start[i + 1]
        self.question_of = array("i")  # per QA, into turn_table
        self.answer_of = array("i")
        self.info_of = array("i")
        self.lengths = array("i")
        self.fps = array("d")  # NaN: None
        self.lines = array("i")  # -1: None
        self._codes: dict[Any, dict[Any, int]] | None = {"frames": {}, "videos": {}, "turns": {}, "infos": {}}

    def _code(self, kind: str, table: list[Any], value: Any) -> int:
        assert self._codes is not None, "the table is sealed"
        codes = self._codes[kind]
        code = codes.get(value)
        if code is None:
            code = codes[value] = len(table)
            table.append(value)
        return code

    def append(self, example_id: str, images: tuple[str, ...], turns: Sequence[Turn], infos: Sequence[TurnInfo], video_id: str, length: int, fps: float | None, line: int | None) -> None:
        self.ids.append(example_id)
        self.frame_of.append(self._code("frames", self.frames, images))
        self.video_of.append(self._code("videos", self.videos, video_id))
        for index, info in enumerate(infos):
            self.question_of.append(self._code("turns", self.turn_table, turns[2 * index]))
            self.answer_of.append(self._code("turns", self.turn_table, turns[2 * index + 1]))
            self.info_of.append(self._code("infos", self.info_table, info))
        self.qa_start.append(self.qa_start[-1] + len(infos))
        self.lengths.append(length)
        self.fps.append(math.nan if fps is None else fps)
        self.lines.append(-1 if line is None else line)

    def turns_of(self, index: int) -> tuple[Turn, ...]:
        turns: list[Turn] = []
        for qa in range(self.qa_start[index], self.qa_start[index + 1]):
            turns += (self.turn_table[self.question_of[qa]], self.turn_table[self.answer_of[qa]])
        return tuple(turns)

    def fps_of(self, index: int) -> float | None:
        fps = self.fps[index]
        return None if math.isnan(fps) else fps

    def select(self, rows: Sequence[int], qas: Sequence[int], lengths: Sequence[int]) -> ExampleTable:
        """A table of the examples at `rows`, each cut to its first `qas[k]` QAs and of `lengths[k]`
        tokens; the distinct-value tables are shared."""
        out = ExampleTable()
        out._codes = None
        out.frames, out.videos, out.turn_table, out.info_table = self.frames, self.videos, self.turn_table, self.info_table
        for row, count, length in zip(rows, qas, lengths, strict=True):
            out.ids.append(self.ids[row])
            out.frame_of.append(self.frame_of[row])
            out.video_of.append(self.video_of[row])
            start = self.qa_start[row]
            out.question_of.extend(self.question_of[start : start + count])
            out.answer_of.extend(self.answer_of[start : start + count])
            out.info_of.extend(self.info_of[start : start + count])
            out.qa_start.append(out.qa_start[-1] + count)
            out.lengths.append(length)
            out.fps.append(self.fps[row])
            out.lines.append(self.lines[row])
        return out

    def resident_bytes(self) -> int:
        """Memory the table holds: its columns, and its lists with every object in them (objects shared
        between tables counted in each)."""
        import sys

        size = sum(column.itemsize * len(column) for column in (self.frame_of, self.video_of, self.qa_start, self.question_of, self.answer_of, self.info_of, self.lengths, self.fps, self.lines))
        size += sum(sys.getsizeof(values) for values in (self.ids, self.frames, self.videos, self.turn_table, self.info_table))
        size += sum(map(sys.getsizeof, self.ids)) + sum(map(sys.getsizeof, self.videos))
        size += sum(sys.getsizeof(frames) + sum(map(sys.getsizeof, frames)) for frames in self.frames)
        size += sum(sys.getsizeof(turn) + sys.getsizeof(turn.text) for turn in self.turn_table)
        return size + sum(map(sys.getsizeof, self.info_table))

    def seal(self) -> ExampleTable:
        """Drop the look-up dictionaries of `append` (no more examples come)."""
        self._codes = None
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def example(self, index: int) -> Example:
        """The example at `index` (0 ≤ index < len), read from the columns as its fields are."""
        return ExampleView(self, index)

    @overload
    def __getitem__(self, index: int) -> Example: ...
    @overload
    def __getitem__(self, index: slice) -> list[Example]: ...
    def __getitem__(self, index: int | slice) -> Example | list[Example]:
        if isinstance(index, slice):
            return [self.example(i) for i in range(*index.indices(len(self)))]
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"example {index} of {size}")
        return self.example(index % size)

    def __iter__(self) -> Iterator[Example]:
        return (self.example(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (ExampleTable, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ExampleTable({len(self)} examples, {len(self.frames)} frame sets)"


class ExampleView(Example):
    """An `Example` whose fields are read from an `ExampleTable` row when asked for: cheap to make, equal
    (and hashing alike) to the `Example` with the same fields, pickled as a reference to its table."""

    __slots__ = ("_table", "_index")

    def __new__(cls, table: ExampleTable | None = None, index: int = 0, **fields: Any) -> Any:
        if fields:  # `dataclasses.replace(view, …)`: a plain Example with the fields given
            return Example(**fields)
        return super().__new__(cls)

    def __init__(self, table: ExampleTable, index: int) -> None:  # noqa: D107 - no dataclass fields to set
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_index", index)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ExampleView, (self._table, self._index))

    @property  # type: ignore[override]
    def id(self) -> str:
        return self._table.ids[self._index]

    @property  # type: ignore[override]
    def images(self) -> tuple[str, ...]:
        return self._table.frames[self._table.frame_of[self._index]]

    @property  # type: ignore[override]
    def turns(self) -> tuple[Turn, ...]:
        return self._table.turns_of(self._index)

    @property  # type: ignore[override]
    def turn_info(self) -> tuple[TurnInfo, ...]:
        table, index = self._table, self._index
        return tuple(table.info_table[table.info_of[qa]] for qa in range(table.qa_start[index], table.qa_start[index + 1]))

    @property  # type: ignore[override]
    def video_id(self) -> str:
        return self._table.videos[self._table.video_of[self._index]]

    @property  # type: ignore[override]
    def length(self) -> int:
        return self._table.lengths[self._index]

    @property  # type: ignore[override]
    def fps(self) -> float | None:
        return self._table.fps_of(self._index)

    @property  # type: ignore[override]
    def line(self) -> int | None:
        line = self._table.lines[self._index]
        return None if line < 0 else line

    @property
    def num_qas(self) -> int:
        return self._table.qa_start[self._index + 1] - self._table.qa_start[self._index]

    def _fields(self) -> tuple[Any, ...]:
        return (self.id, self.images, self.turns, self.turn_info, self.video_id, self.length, self.fps, self.line)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Example):
            return NotImplemented
        other_fields = other._fields() if isinstance(other, ExampleView) else (other.id, other.images, other.turns, other.turn_info, other.video_id, other.length, other.fps, other.line)
        return self._fields() == other_fields

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "Example(" + ", ".join(f"{name}={value!r}" for name, value in zip(("id", "images", "turns", "turn_info", "video_id", "length", "fps", "line"), self._fields(), strict=True)) + ")"


def conversations_lengths(backend: ModelBackend, processor: Any, conversations: Sequence[tuple[int, Sequence[Turn], float | None]]) -> list[list[int]]:
    """`backend.conversation_lengths` of each (frames, turns, fps): in one batched call where the backend
    has `conversation_lengths_bulk`, else one by one."""
    bulk = getattr(backend, "conversation_lengths_bulk", None)
    if callable(bulk):
        try:
            return bulk(processor, conversations)
        except ValueError:  # a piece layout the bulk path cannot template: measure one by one
            pass
    return [backend.conversation_lengths(processor, frames, turns, fps=fps) for frames, turns, fps in conversations]


def build_examples(
    samples: Iterable[Sample],
    *,
    backend: ModelBackend,
    processor: Any,
    max_frames: int,
    frame_sampling: FrameSampling,
    max_length: int,
    clip_fps: float | None = None,
    subset_ratio: float = 1.0,
    seed: int = 0,
) -> tuple[ExampleTable, LengthReport]:
    """Select frames, apply the length policy, and record exact lengths. Samples are read once, as they
    come, into compact columns (never held whole); `subset_ratio` < 1 keeps `subset`'s videos.

    `clip_fps` is the source clips' frame rate (a line's own `fps`, where it has one, wins); the selected
    frames' rate is it divided by their mean stride.
    """
    raw = ExampleTable()
    for sample in samples:
        indices = sample_frame_indices(len(sample.images), max_frames, frame_sampling)
        own_fps = getattr(sample, "fps", None)
        fps = sampled_fps(own_fps if own_fps is not None else clip_fps, indices)
        images = tuple(sample.images[i] for i in indices)
        raw.append(sample.id, images, sample_turns(sample), sample.turns, sample.video_id, 0, fps, sample.line)
    rows: Sequence[int] = range(len(raw))
    if subset_ratio < 1.0 and raw.videos:
        kept = chosen_videos(raw.videos, subset_ratio, seed)
        chosen = [video in kept for video in raw.videos]
        rows = [row for row in rows if chosen[raw.video_of[row]]]
    conversations = [(len(raw.frames[raw.frame_of[row]]), raw.turns_of(row), raw.fps_of(row)) for row in rows]
    all_lengths = conversations_lengths(backend, processor, conversations)
    del conversations
    report = LengthReport()
    kept_rows: list[int] = []
    kept_qas: list[int] = []
    kept_lengths: list[int] = []
    for row, lengths in zip(rows, all_lengths, strict=True):
        fitting = sum(1 for length in lengths if length <= max_length)
        if fitting == 0:
            report.rejected += 1
            report.rejected_ids.append(raw.ids[row])
            continue
        if fitting < len(lengths):
            report.turns_dropped += len(lengths) - fitting
            report.examples_truncated += 1
        report.kept += 1
        kept_rows.append(row)
        kept_qas.append(fitting)
        kept_lengths.append(lengths[fitting - 1])
    return raw.select(kept_rows, kept_qas, kept_lengths), report


def sampled_fps(clip_fps: float | None, indices: Sequence[int]) -> float | None:
    """Frame rate of frames taken at `indices` from a clip recorded at `clip_fps`."""
    if clip_fps is None or len(indices) < 2:
        return clip_fps
    mean_stride = (indices[-1] - indices[0]) / (len(indices) - 1)
    return clip_fps / mean_stride


def task_type_counts(examples: Iterable[Example]) -> Counter[str]:
    return Counter(info.task_type for example in examples for info in example.turn_info)
