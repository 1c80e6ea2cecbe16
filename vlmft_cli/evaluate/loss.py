"""Teacher-forced evaluation: answer-token loss and perplexity, overall, per task type and per turn.

Only the logits at answer positions are computed (`logits_to_keep`), so evaluating a 151k-token
vocabulary does not materialise a full (batch × length × vocab) tensor.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vlmft_cli.model_backend import EncodedSample
from vlmft_cli.pipeline.dataset import ExampleDataset
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


@dataclass
class EvalResult:
    overall: LossTotals = field(default_factory=LossTotals)
    per_task: dict[str, LossTotals] = field(default_factory=lambda: defaultdict(LossTotals))
    per_turn: dict[int, LossTotals] = field(default_factory=lambda: defaultdict(LossTotals))
    samples: int = 0

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


def answer_positions(samples: Sequence[EncodedSample]) -> torch.Tensor:
    """Sorted sequence positions whose logits predict an answer token in any sample of the batch."""
    positions: set[int] = set()
    for sample in samples:
        for start, end in sample.answer_spans:
            positions.update(range(start - 1, end - 1))
    return torch.tensor(sorted(positions), dtype=torch.long)


@torch.no_grad()
def evaluate_loss(
    model: Any,
    dataset: ExampleDataset,
    collate: Callable[[Sequence[EncodedSample]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    device: torch.device | str,
    reporter: Reporter | None = None,
    limit: int | None = None,
) -> EvalResult:
    reporter = reporter or NullReporter()
    was_training = model.training
    model.eval()
    result = EvalResult()
    count = len(dataset) if limit is None else min(limit, len(dataset))
    try:
        with reporter.progress("eval", total=count, unit="samples") as task:
            for start in range(0, count, batch_size):
                indices = list(range(start, min(start + batch_size, count)))
                samples = [dataset[i] for i in indices]
                batch = {k: v.to(device) for k, v in collate(samples).items()}
                labels = batch.pop("labels")
                keep = answer_positions(samples).to(device)
                outputs = model(**batch, logits_to_keep=keep)
                logits = outputs.logits.float()  # (B, len(keep), V)
                targets = labels[:, keep + 1]
                token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
                where = {int(p): j for j, p in enumerate(keep.tolist())}
                for row, index in enumerate(indices):
                    example = dataset.examples[index]
                    for turn, (span_start, span_end) in enumerate(samples[row].answer_spans):
                        columns = [where[p] for p in range(span_start - 1, span_end - 1)]
                        loss_sum = float(token_loss[row, columns].sum())
                        tokens = len(columns)
                        result.overall.add(loss_sum, tokens)
                        result.per_task[example.turn_info[turn].task_type].add(loss_sum, tokens)
                        result.per_turn[turn].add(loss_sum, tokens)
                result.samples += len(indices)
                task.advance(len(indices))
    finally:
        model.train(was_training)
    return result
