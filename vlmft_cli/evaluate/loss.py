"""Teacher-forced evaluation: answer-token loss and perplexity, overall, per task type and per turn.

Only the logits at answer positions are computed (`logits_to_keep`), so evaluating a 151k-token
vocabulary does not materialise a full (batch × length × vocab) tensor.

The input pipeline is training's: items are encoded in a torch DataLoader (`workers` processes decode
the frames), and in stage 1 with `pack = shared-prefix` (`EvalData.pack`) every video's QAs are one
packed sequence `[frames][QA 1][QA 2]…` with the backend's block mask, so the frames go through the
model once per video. Each QA still attends to the frames and itself only, so its loss is the one it
has alone. Batches are grouped by length (little padding); losses are kept per QA and summed in data
order, so the totals do not depend on how QAs were batched or packed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmft_cli.attention_masks import with_block_mask
from vlmft_cli.label_loss import label_positions
from vlmft_cli.model_backend import EncodedSample
from vlmft_cli.pipeline.dataset import QuietWorkerInit
from vlmft_cli.pipeline.examples import Example
from vlmft_cli.reporting import NullReporter, Reporter


@dataclass
class LossTotals:
    loss_sum: float = 0.0
    tokens: int = 0

    def add(self, loss_sum: float, tokens: int) -> None:
        self.loss_sum += loss_sum
        self.tokens += tokens

    @property
    def loss(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else float("nan")

    def as_dict(self) -> dict[str, float]:
        loss = self.loss
        return {"loss": loss, "perplexity": math.exp(loss) if self.tokens else float("nan"), "tokens": self.tokens}


@dataclass(frozen=True)
class QALoss:
    """The summed answer-token loss of one QA: `example` indexes the evaluated examples, `turn` is 0-based."""

    example: int
    turn: int
    task_type: str
    loss_sum: float
    tokens: int


@dataclass
class EvalResult:
    overall: LossTotals = field(default_factory=LossTotals)
    per_task: dict[str, LossTotals] = field(default_factory=lambda: defaultdict(LossTotals))
    per_turn: dict[int, LossTotals] = field(default_factory=lambda: defaultdict(LossTotals))
    samples: int = 0
    qa_losses: list[QALoss] = field(default_factory=list)  # in (example, turn) order
    skipped: list[Any] = field(default_factory=list)  # pipeline.dataset.BadSample: frames that did not decode

    @classmethod
    def from_losses(cls, losses: Sequence[QALoss]) -> EvalResult:
        """Totals of per-QA losses, summed in (example, turn) order whatever order they came in."""
        result = cls(qa_losses=sorted(losses, key=lambda qa: (qa.example, qa.turn)))
        for qa in result.qa_losses:
            result.overall.add(qa.loss_sum, qa.tokens)
            result.per_task[qa.task_type].add(qa.loss_sum, qa.tokens)
            result.per_turn[qa.turn].add(qa.loss_sum, qa.tokens)
        result.samples = len({qa.example for qa in result.qa_losses})
        return result

    def subset(self, examples: Sequence[int]) -> EvalResult:
        """The result over these examples only (e.g. the checkpoint subset, taken from a full evaluation)."""
        chosen = set(examples)
        return EvalResult.from_losses([qa for qa in self.qa_losses if qa.example in chosen])

    @property
    def qas(self) -> int:
        return len(self.qa_losses)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.overall.as_dict(),
            "samples": self.samples,
            "per_task": {task: totals.as_dict() for task, totals in sorted(self.per_task.items())},
            "per_turn": {str(turn): totals.as_dict() for turn, totals in sorted(self.per_turn.items())},
        }

    def flat_metrics(self, prefix: str = "eval") -> dict[str, float]:
        metrics = {f"{prefix}_loss": self.overall.loss, f"{prefix}_perplexity": math.exp(self.overall.loss) if self.overall.tokens else float("nan")}
        for task, totals in sorted(self.per_task.items()):
            metrics[f"{prefix}_loss_{task}"] = totals.loss
        return metrics


@dataclass(frozen=True)
class PackSpec:
    """Shared-prefix packing for evaluation: the attention implementation and dtype of the block mask,
    and the longest packed sequence."""

    attn_implementation: str
    dtype: torch.dtype
    max_length: int


def pack_spec(settings: Any, backend: Any, attention: Any, reporter: Reporter | None = None) -> PackSpec | None:
    """How an evaluation with these settings packs: as training does in stage 1 with `pack =
    shared-prefix`, when the model and attention backends can (else one QA per sample, said aloud)."""
    from vlmft_cli.pipeline.packing import packing_obstacle
    from vlmft_cli.runtime import dtype_for
    from vlmft_cli.settings import PackMode

    if settings.stage != 1 or settings.pack != PackMode.SHARED_PREFIX.value:
        return None
    obstacle = packing_obstacle(settings.stage, backend, attention) if attention is not None else "no attention backend given"
    if obstacle:
        (reporter or NullReporter()).info(f"evaluating one QA per sample: {obstacle}")
        return None
    return PackSpec(attention.attn_implementation, dtype_for(settings.precision), settings.max_length)


@dataclass
class EvalData:
    """What teacher-forced evaluation reads: the examples, how to encode them, and whether to pack."""

    examples: list[Example]
    root: Path
    backend: Any
    processor: Any
    pad_token_id: int
    pack: PackSpec | None = None
    skip_bad: bool = False  # skip (and list in `EvalResult.skipped`) examples whose frames do not decode
    source: str | None = None  # their JSONL file, for what is reported

    def __len__(self) -> int:
        return len(self.examples)


class _Keyed(torch.utils.data.Dataset):
    """Items with their key (an example index, or a packed sequence's tuple of them)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> tuple[Any, EncodedSample]:
        return key, self.dataset[key]


class _Collate:
    """(keys, each row's answer spans, the padded batch); picklable, for worker processes."""

    def __init__(self, backend: Any, pad_token_id: int, pack: PackSpec | None) -> None:
        self.backend = backend
        self.pad_token_id = pad_token_id
        self.pack = pack

    def __call__(self, items: Sequence[tuple[Any, Any]]) -> tuple[list[Any], list[list[tuple[int, int]]], dict[str, torch.Tensor] | None, list[Any]]:
        """Items a skipping dataset returned as `Skipped` are left out and their samples returned last;
        the batch is None when none is left."""
        from vlmft_cli.pipeline.dataset import Skipped

        skipped = [bad for _, item in items if isinstance(item, Skipped) for bad in item.samples]
        items = [(key, item) for key, item in items if not isinstance(item, Skipped)]
        keys = [key for key, _ in items]
        samples = [sample for _, sample in items]
        if not samples:
            return [], [], None, skipped
        if self.pack is None:
            batch = self.backend.collate(samples, self.pad_token_id)
        else:
            batch = self.backend.collate_packed(samples, self.pad_token_id, self.pack.attn_implementation, self.pack.dtype)
        return keys, [list(sample.answer_spans) for sample in samples], batch, skipped


@dataclass(frozen=True)
class EvalBatches:
    """The dataset to fetch from and its batches of keys; `examples_of(key)` maps a key to example indices."""

    dataset: Any
    batches: list[list[Any]]
    local_to_global: list[int]
    packed: bool

    def examples_of(self, key: Any) -> list[int]:
        return [self.local_to_global[i] for i in (key if self.packed else (key,))]


def plan_batches(data: EvalData, indices: Sequence[int], batch_size: int) -> EvalBatches:
    """Batches over `indices` of `data.examples`: packed sequences per video when `data.pack` is set, else
    one example per row; either way sorted by length so a batch pads little."""
    from vlmft_cli.pipeline.dataset import ExampleDataset
    from vlmft_cli.pipeline.packed_dataset import PackedDataset
    from vlmft_cli.pipeline.packing import PackingData

    examples = [data.examples[i] for i in indices]
    if data.pack is None:
        order = sorted(range(len(examples)), key=lambda i: (examples[i].length, i))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        return EvalBatches(ExampleDataset(examples, data.root, data.backend, data.processor, skip_bad=data.skip_bad, source=data.source), batches, list(indices), packed=False)
    packing = PackingData.for_backend(examples, data.backend, data.processor, data.pack.max_length)
    sequences = [sequence for group in packing.groups for sequence in packing.fit(group)]
    sequences.sort(key=lambda sequence: (packing.sequence_length(sequence), sequence))
    batches = [sequences[start : start + batch_size] for start in range(0, len(sequences), batch_size)]
    return EvalBatches(PackedDataset(examples, data.root, data.backend, data.processor, packing, skip_bad=data.skip_bad, source=data.source), batches, list(indices), packed=True)


@contextmanager
def batches_of(loader: torch.utils.data.DataLoader) -> Iterator[Iterator[Any]]:
    """The loader's batches; its worker processes are shut down when the block ends, also by an error
    (left to the garbage collector, workers held by a traceback could outlive the evaluation)."""
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()


@torch.no_grad()
def evaluate_loss(
    model: Any,
    data: EvalData,
    *,
    batch_size: int,
    device: torch.device | str,
    workers: int = 0,
    indices: Sequence[int] | None = None,
    reporter: Reporter | None = None,
) -> EvalResult:
    """Per-QA teacher-forced loss over `data.examples` (or the examples at `indices`), `batch_size` rows
    (packed sequences when packing) per forward, items encoded by `workers` DataLoader processes."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    reporter = reporter or NullReporter()
    chosen = list(range(len(data.examples))) if indices is None else sorted(set(indices))
    plan = plan_batches(data, chosen, batch_size)
    loader = torch.utils.data.DataLoader(
        _Keyed(plan.dataset),
        batch_sampler=plan.batches,
        collate_fn=_Collate(data.backend, data.pad_token_id, data.pack),
        num_workers=workers,
        worker_init_fn=QuietWorkerInit(),  # a signal to the process group is the main process's to handle
        pin_memory=str(device).startswith("cuda"),
    )
    was_training = model.training
    model.eval()
    losses: list[QALoss] = []
    skipped: list[Any] = []
    try:
        with reporter.progress("eval", total=len(chosen), unit="samples") as task, batches_of(loader) as batches:
            for keys, spans, batch, bad in batches:
                skipped += bad
                if batch is None:
                    task.advance(len(bad))
                    continue
                batch = with_block_mask({key: value.to(device) for key, value in batch.items()})
                labels = batch.pop("labels")
                keep = label_positions(labels)  # the answer spans are exactly the labelled tokens
                logits = model(**batch, logits_to_keep=keep).logits.float()  # (B, len(keep), V)
                targets = labels[:, keep + 1]
                token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
                column = {int(position): j for j, position in enumerate(keep.tolist())}
                done = 0
                for row, key in enumerate(keys):
                    row_spans = iter(spans[row])
                    for index in plan.examples_of(key):
                        example = data.examples[index]
                        for turn in range(example.num_qas):
                            start, end = next(row_spans)
                            columns = [column[p] for p in range(start - 1, end - 1)]
                            losses.append(QALoss(index, turn, example.turn_info[turn].task_type, float(token_loss[row, columns].sum()), len(columns)))
                        done += 1
                task.advance(done + len(bad))
    finally:
        model.train(was_training)
    result = EvalResult.from_losses(losses)
    result.skipped = skipped
    return result
