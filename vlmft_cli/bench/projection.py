"""The full curriculum's time on a profile, projected from one `bench step` measurement and RoboVQA's sizes.

The necessary FLOPs of a step (`flops`) are split into four model constants, measured on the benchmark's
micro-batch: vision FLOPs per frame, language-model dense FLOPs per token, attention FLOPs per attended
pair and head FLOPs per labelled position. The curriculum's counts come from the real data's sizes
(`ROBOVQA`, from the release and the reference run: 199,721 training videos, 722,979 stage-1 QAs, one
epoch per stage, 4 frames in stage 1 and 10 in stage 2) and the model's token lengths:

    q        tokens one QA adds (question, answer, chat markup): from `conversation_lengths` of the benchmark's
             RoboVQA-style conversation, (length after K QAs − length after 1) / (K − 1)
    P(n)     the shared prefix for n frames (system turn, frames with the model's tokens per frame): the
             length after the first QA − q
    k        QAs per video = 722,979 / 199,721 = 3.62
    stage 1, packed (one sequence per video):   tokens = V·(P(4) + k·q), pairs = V·(P(4)(P(4)+1)/2 + k·(q·P(4) + q(q+1)/2)), frames = 4·V
    stage 1, one QA per sample:                 tokens = Q·(P(4) + q),   pairs = Q·L(L+1)/2 with L = P(4) + q,        frames = 4·Q
    stage 2 (one conversation per video):       tokens = V·(P(10) + k·q), pairs = V·L(L+1)/2 with L = P(10) + k·q,    frames = 10·V
    labelled positions (both stages) = Q × the labelled tokens per QA measured in the micro-batch

and a stage's necessary FLOPs = frames·vision + tokens·language + pairs·attention + labelled·head, times
its epochs. The time is those FLOPs over the rate the benchmark achieved, necessary FLOPs per second:
`peak × MFU` with the MFU measured from necessary FLOPs. Both stages are projected at the measured
stage's rate (run the benchmark for each stage to have each stage's own).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vlmft_cli.bench.flops import FlopCount, causal_pairs
from vlmft_cli.bench.results import significant


@dataclass(frozen=True)
class DataSizes:
    videos: int
    stage1_qas: int
    frames: tuple[int, int]  # stage 1, stage 2
    epochs: tuple[int, int]

    @property
    def qas_per_video(self) -> float:
        return self.stage1_qas / self.videos


#: RoboVQA's training split and the reference recipe (../shared/ROBOVQA.md): stage-2 lines are the videos.
ROBOVQA = DataSizes(videos=199_721, stage1_qas=722_979, frames=(4, 10), epochs=(1, 1))


@dataclass(frozen=True)
class ModelRates:
    """Necessary FLOPs per unit, measured on one micro-batch."""

    vision_per_frame: float
    language_per_token: float
    attention_per_pair: float
    head_per_label: float

    @classmethod
    def measure(cls, necessary: FlopCount, *, frames: int, tokens: int, pairs: int, labelled: int) -> ModelRates:
        return cls(
            vision_per_frame=necessary.part("vision") / frames if frames else 0.0,
            language_per_token=necessary.part("language") / tokens,
            attention_per_pair=necessary.part("attention") / pairs,
            head_per_label=necessary.part("head") / labelled if labelled else 0.0,
        )


@dataclass(frozen=True)
class TextLengths:
    """The model's token lengths: q per QA, the prefix for each stage's frames, labelled tokens per QA."""

    per_qa: float
    prefix: tuple[int, int]  # P(stage-1 frames), P(stage-2 frames)
    labelled_per_qa: float
    tokens_per_frame: int

    @classmethod
    def from_lengths(cls, after_qas: dict[int, list[int]], frames: tuple[int, int], labelled_per_qa: float, tokens_per_frame: int) -> TextLengths:
        """`after_qas[n]`: `conversation_lengths` with n frames, one entry per QA (at least two QAs)."""
        first = after_qas[frames[0]]
        per_qa = (first[-1] - first[0]) / (len(first) - 1)
        prefix = tuple(round(after_qas[n][0] - per_qa) for n in frames)
        return cls(per_qa, (prefix[0], prefix[1]), labelled_per_qa, tokens_per_frame)


@dataclass(frozen=True)
class StageCounts:
    tokens: float
    pairs: float
    frames: float
    labelled: float

    def flops(self, rates: ModelRates) -> float:
        return self.frames * rates.vision_per_frame + self.tokens * rates.language_per_token + self.pairs * rates.attention_per_pair + self.labelled * rates.head_per_label


def stage_counts(stage: int, lengths: TextLengths, sizes: DataSizes, *, packed: bool) -> StageCounts:
    """One epoch of `stage` (see the module docstring for the formulas)."""
    videos, qas, k, q = sizes.videos, sizes.stage1_qas, sizes.qas_per_video, lengths.per_qa
    labelled = qas * lengths.labelled_per_qa
    if stage == 1:
        prefix, frames = lengths.prefix[0], sizes.frames[0]
        if packed:
            pairs = causal_pairs(prefix) + k * (q * prefix + q * (q + 1) / 2)
            return StageCounts(videos * (prefix + k * q), videos * pairs, videos * frames, labelled)
        length = prefix + q
        return StageCounts(qas * length, qas * length * (length + 1) / 2, qas * frames, labelled)
    length = lengths.prefix[1] + k * q
    return StageCounts(videos * length, videos * length * (length + 1) / 2, videos * sizes.frames[1], labelled)


@dataclass(frozen=True)
class Projection:
    rate_flops_per_s: float  # necessary FLOPs per second achieved by the benchmark
    stage_flops: tuple[float, float]
    counts: tuple[StageCounts, StageCounts]
    rates: ModelRates
    lengths: TextLengths
    stage1_packed: bool
    sizes: DataSizes = ROBOVQA  # the data sizes projected for

    @property
    def stage_hours(self) -> tuple[float, float]:
        return (self.stage_flops[0] / self.rate_flops_per_s / 3600, self.stage_flops[1] / self.rate_flops_per_s / 3600)

    @property
    def curriculum_hours(self) -> float:
        return sum(self.stage_hours)

    def as_dict(self) -> dict[str, Any]:
        return {
            "necessary_tflops_achieved": significant(self.rate_flops_per_s / 1e12),
            "stage1_packed": self.stage1_packed,
            "stage_pflop": [significant(value / 1e15) for value in self.stage_flops],
            "stage_hours": [significant(value) for value in self.stage_hours],
            "curriculum_hours": significant(self.curriculum_hours),
            "counts": [{name: significant(value) for name, value in asdict(count).items()} for count in self.counts],
            "rates_gflop": {name: significant(value / 1e9) for name, value in asdict(self.rates).items()},
            "lengths": {**asdict(self.lengths), "per_qa": significant(self.lengths.per_qa), "labelled_per_qa": significant(self.lengths.labelled_per_qa)},
            "data": {**asdict(self.sizes), "qas_per_video": significant(self.sizes.qas_per_video)},
        }


def project(rates: ModelRates, lengths: TextLengths, rate_flops_per_s: float, *, stage1_packed: bool, sizes: DataSizes = ROBOVQA) -> Projection:
    counts = (stage_counts(1, lengths, sizes, packed=stage1_packed), stage_counts(2, lengths, sizes, packed=False))
    flops = (counts[0].flops(rates) * sizes.epochs[0], counts[1].flops(rates) * sizes.epochs[1])
    return Projection(rate_flops_per_s, flops, counts, rates, lengths, stage1_packed, sizes)
