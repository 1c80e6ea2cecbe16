"""The stage-1 packed batch plan: which QAs share a sequence, step and micro-batch, as a pure function of
(seed, epoch, the data) so a resumed run replays it without reading a frame.

One epoch: shuffle the videos, stream their QAs (data order within a video), and cut the stream into
`ceil(QAs / global_batch_size)` optimizer steps at video boundaries: the k-th cut is the video boundary
nearest to k × `global_batch_size` QAs (`step_cuts`), so a step holds whole videos, about
`global_batch_size` QAs (± half a video; exactly that many on average) and a video's frames are encoded
once. Only a video with more QAs than the global batch is cut inside, at the multiples of it. The step
count, and so the schedule counted in QAs, is the same as cutting every `global_batch_size` QAs.
Inside a step, the QAs of one video
form one packed sequence, `[frames][QA 1][QA 2]…`, split into several where `max_length` requires (never
cutting a QA or the frames). The step's sequences are then dealt into a fixed number of micro-batches
with near-equal QA counts, largest first, splitting the biggest sequence while there are fewer sequences
than micro-batches. Every full step has the same number of micro-batches (the Trainer's accumulation);
the last has `min(that, QAs - (steps - 1) × global_batch_size)`, so the count per epoch depends on the data
size alone (a cut never leaves a step fewer QAs than its micro-batches).

Because the Trainer divides the summed answer-token loss of a step by the step's label tokens
(`num_items_in_batch`), a step's objective equals the unpacked one over the same QAs, however they
are grouped into sequences and micro-batches.

`packing_obstacle` says why a model backend and attention backend cannot pack (training's `pack_mode`
turns that into the run's mode; `vlmft bench packing` refuses to run).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vlmft_cli.pipeline.examples import Example

#: A packed sequence: indices of the QA examples it holds, all about the same frames, in order.
PackedSequence = tuple[int, ...]
#: A micro-batch: the packed sequences of one forward/backward on one device.
MicroBatch = list[PackedSequence]
#: The optional backend methods packing needs (`vlmft_cli.model_backend.SharedPrefixPacking`).
PACKING_METHODS = ("supports_block_mask", "packed_prefix_length", "encode_packed", "collate_packed")


def packing_obstacle(stage: int, backend: Any, attention: Any) -> str | None:
    """Why shared-prefix packing cannot run with this stage, model backend and attention backend, or None."""
    if stage != 1:
        return "shared-prefix packing is for stage 1 (a stage-2 sample is already one whole conversation)"
    backend_name = getattr(backend, "name", type(backend).__name__)
    if not getattr(attention, "supports_block_mask", False):
        return f"attention backend {attention.name} ({attention.attn_implementation}) does not honour a caller-built block attention mask"
    declares = getattr(backend, "supports_block_mask", None)
    if callable(declares) and not declares(attention.attn_implementation):
        return f"model backend {backend_name} cannot apply a block attention mask with attn_implementation {attention.attn_implementation!r}"
    missing = [method for method in PACKING_METHODS if not callable(getattr(backend, method, None))]
    if missing:
        return f"model backend {backend_name} does not implement shared-prefix packing (it lacks {', '.join(missing)})"
    return None


@dataclass(frozen=True)
class PackingData:
    """What the plan needs to know of the data: the QAs of each video and every length, no content.

    `groups` hold example indices that share their frames (one video), in data order; a QA's block
    costs its unpacked length minus its group's prefix.
    """

    groups: tuple[tuple[int, ...], ...]
    prefix_lengths: tuple[int, ...]  # per group
    block_lengths: tuple[int, ...]  # per example
    group_of: tuple[int, ...]  # per example
    max_length: int

    @classmethod
    def for_backend(cls, examples: Sequence[Example], backend: Any, processor: Any, max_length: int) -> PackingData:
        """`from_examples` with the backend's `packed_prefix_length(processor, frames, fps)` as the prefix."""
        return cls.from_examples(examples, lambda frames, fps=None: backend.packed_prefix_length(processor, frames, fps), max_length)

    @classmethod
    def from_examples(cls, examples: Sequence[Example], prefix_length: Callable[..., int], max_length: int) -> PackingData:
        """Group examples by video and frames; `prefix_length(num_frames, fps)` gives the shared prefix's
        tokens for frames at that rate (Qwen3-VL writes timestamps into it), `prefix_length(num_frames)`
        when the examples carry no rate."""
        index_of: dict[tuple[str, tuple[str, ...]], int] = {}
        groups: list[list[int]] = []
        for index, example in enumerate(examples):
            key = (example.video_id, example.images)
            if key not in index_of:
                index_of[key] = len(groups)
                groups.append([])
            groups[index_of[key]].append(index)
        prefixes: dict[tuple[int, float | None], int] = {}
        prefix_lengths = []
        for group in groups:
            frames, fps = len(examples[group[0]].images), examples[group[0]].fps
            if (frames, fps) not in prefixes:
                prefixes[frames, fps] = prefix_length(frames) if fps is None else prefix_length(frames, fps)
            prefix_lengths.append(prefixes[frames, fps])
        group_of = [0] * len(examples)
        block_lengths = [0] * len(examples)
        for number, group in enumerate(groups):
            for index in group:
                group_of[index] = number
                block_lengths[index] = examples[index].length - prefix_lengths[number]
                if block_lengths[index] <= 0:
                    raise ValueError(f"{examples[index].id}: {examples[index].length} tokens, no more than its shared prefix")
        return cls(tuple(tuple(g) for g in groups), tuple(prefix_lengths), tuple(block_lengths), tuple(group_of), max_length)

    @property
    def num_qas(self) -> int:
        return len(self.block_lengths)

    @property
    def mean_qas_per_video(self) -> float:
        return self.num_qas / len(self.groups) if self.groups else 0.0

    def prefix_of(self, qa: int) -> int:
        return self.prefix_lengths[self.group_of[qa]]

    def unpacked_length(self, qa: int) -> int:
        return self.prefix_of(qa) + self.block_lengths[qa]

    def sequence_length(self, sequence: Sequence[int]) -> int:
        return self.prefix_of(sequence[0]) + sum(self.block_lengths[qa] for qa in sequence)

    def fit(self, qas: Sequence[int]) -> list[PackedSequence]:
        """One video's QAs as few sequences as `max_length` allows, in order (a single QA always fits:
        the length policy rejected any that did not)."""
        sequences: list[PackedSequence] = []
        current: list[int] = []
        length = self.prefix_of(qas[0]) if qas else 0
        for qa in qas:
            if current and length + self.block_lengths[qa] > self.max_length:
                sequences.append(tuple(current))
                current, length = [], self.prefix_of(qa)
            current.append(qa)
            length += self.block_lengths[qa]
        if current:
            sequences.append(tuple(current))
        return sequences


def packed_accumulation(global_batch_size: int, micro_batch_size: int, mean_qas_per_video: float, world_size: int = 1) -> int:
    """Micro-batches per optimizer step and device, so that one holds about `micro_batch_size` packed
    sequences: `max(1, round(G / (W × micro_batch_size × mean QAs per video)))`, at most G / W."""
    if mean_qas_per_video <= 0:
        return 1
    wanted = round(global_batch_size / (world_size * micro_batch_size * mean_qas_per_video))
    return max(1, min(global_batch_size // world_size, wanted))


def micro_batches_in_step(qas: int, per_step: int, world_size: int = 1) -> int:
    """Micro-batches of a step holding `qas` QAs: `per_step` (all devices) when there are enough, and a
    multiple of the device count where possible so every device gets as many."""
    count = min(per_step, qas)
    if world_size > 1 and count >= world_size:
        count -= count % world_size
    return count


def micro_batches_per_epoch(num_qas: int, global_batch_size: int, per_step: int, world_size: int = 1) -> int:
    if num_qas == 0:
        return 0
    steps = math.ceil(num_qas / global_batch_size)
    last = num_qas - (steps - 1) * global_batch_size
    return (steps - 1) * micro_batches_in_step(global_batch_size, per_step, world_size) + micro_batches_in_step(last, per_step, world_size)


def video_order(num_groups: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of videos for an epoch, a pure function of (seed, epoch)."""
    order = list(range(num_groups))
    random.Random(seed + 1_000_003 * epoch).shuffle(order)
    return order


def step_sequences(data: PackingData, qas: Sequence[int]) -> list[PackedSequence]:
    """A step's QAs (a stream slice, videos contiguous) as packed sequences."""
    sequences: list[PackedSequence] = []
    start = 0
    for end in range(1, len(qas) + 1):
        if end == len(qas) or data.group_of[qas[end]] != data.group_of[qas[start]]:
            sequences += data.fit(qas[start:end])
            start = end
    return sequences


def deal(data: PackingData, sequences: list[PackedSequence], count: int) -> list[MicroBatch]:
    """`count` micro-batches with near-equal QA counts: split the biggest sequence while there are too few,
    then place sequences largest first into the micro-batch with the fewest QAs (then tokens)."""
    sequences = list(sequences)
    while len(sequences) < count:
        biggest = max(range(len(sequences)), key=lambda i: (len(sequences[i]), -i))
        whole = sequences[biggest]
        half = (len(whole) + 1) // 2
        sequences[biggest : biggest + 1] = [whole[:half], whole[half:]]
    ranked = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), -data.sequence_length(sequences[i]), i))
    batches: list[MicroBatch] = [[] for _ in range(count)]
    loads = [(0, 0)] * count  # (QAs, tokens) per micro-batch
    for i in ranked:
        target = min(range(count), key=lambda b: (loads[b], b))
        batches[target].append(sequences[i])
        loads[target] = (loads[target][0] + len(sequences[i]), loads[target][1] + data.sequence_length(sequences[i]))
    return batches


def step_cuts(group_of: Sequence[int], stream: Sequence[int], global_batch_size: int, need_full: int, need_last: int) -> list[int]:
    """Where the epoch's QA `stream` is cut into steps: for k = 1 … steps − 1 the position nearest to
    k × `global_batch_size` among the video boundaries (and, inside a video with more QAs than the global
    batch, every position), leaving every step at least `need_full` QAs and the last `need_last`. Ties go
    to the earlier position. Should no boundary fit those bounds, the nearest position within them is cut."""
    import bisect

    total = len(stream)
    steps = math.ceil(total / global_batch_size) if total else 0
    candidates: list[int] = []
    start = 0
    for end in range(1, total + 1):
        if end == total or group_of[stream[end]] != group_of[stream[start]]:
            if end - start > global_batch_size:
                candidates.extend(range(max(start, 1), end))
            elif start:
                candidates.append(start)
            start = end
    cuts: list[int] = []
    previous = 0
    for k in range(1, steps):
        target = k * global_batch_size
        low, high = previous + need_full, total - need_last - (steps - 1 - k) * need_full
        first, last = bisect.bisect_left(candidates, low), bisect.bisect_right(candidates, high)
        here = bisect.bisect_left(candidates, target, first, last)
        near = [candidates[i] for i in (here - 1, here) if first <= i < last]
        cut = min(near, key=lambda c: (abs(c - target), c)) if near else min(max(target, low), high)
        cuts.append(cut)
        previous = cut
    return cuts


def plan_epoch(data: PackingData, *, seed: int, epoch: int, global_batch_size: int, per_step: int, world_size: int = 1) -> list[list[MicroBatch]]:
    """The epoch's optimizer steps, each a list of micro-batches (`per_step` for every device together),
    cut at video boundaries (`step_cuts`)."""
    stream = [qa for group in video_order(len(data.groups), seed, epoch) for qa in data.groups[group]]
    if not stream:
        return []
    count = math.ceil(len(stream) / global_batch_size)
    full = micro_batches_in_step(global_batch_size, per_step, world_size)
    last = micro_batches_in_step(len(stream) - (count - 1) * global_batch_size, per_step, world_size)
    bounds = [0, *step_cuts(data.group_of, stream, global_batch_size, full, last), len(stream)]
    steps = []
    for number, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        qas = stream[start:end]
        steps.append(deal(data, step_sequences(data, qas), last if number == count - 1 else full))
    return steps


@dataclass(frozen=True)
class PackingSummary:
    """Tokens of one epoch packed and unpacked, and what the micro-batches look like (for `--dry-run`)."""

    tokens_packed: int
    tokens_unpacked: int
    sequences: int
    micro_batches: int
    padding_share: float

    @property
    def ratio(self) -> float:
        return self.tokens_packed / self.tokens_unpacked if self.tokens_unpacked else 0.0


def summarize(data: PackingData, steps: Sequence[Sequence[MicroBatch]]) -> PackingSummary:
    packed = padded = sequences = micro = 0
    for step in steps:
        for batch in step:
            lengths = [data.sequence_length(sequence) for sequence in batch]
            packed += sum(lengths)
            padded += max(lengths) * len(lengths)
            sequences += len(batch)
            micro += 1
    unpacked = sum(data.unpacked_length(qa) for qa in range(data.num_qas))
    return PackingSummary(packed, unpacked, sequences, micro, 1.0 - packed / padded if padded else 0.0)
