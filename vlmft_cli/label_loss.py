"""The training loss with the language-model head run only where labels are.

transformers' own `labels=` loss computes (batch × length × vocabulary) logits and upcasts them to fp32,
although only the answer tokens carry labels. Here the model is called with `logits_to_keep` set to the
positions whose next token is labelled (any row of the batch), and the summed fp32 cross-entropy of
those logits is divided by `num_items_in_batch` (the Trainer's label-token count over the optimizer
step) or, without it, by this batch's label tokens: the value transformers' loss gives, at a fraction
of the memory. On CUDA with `liger_kernel` installed, the head and the cross-entropy are fused (Liger's
fused linear cross-entropy), so not even the kept logits are materialised.

Training (`CurriculumTrainer.compute_loss`) and the benchmarks use it; evaluation shares
`label_positions`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import ModelOutput

from vlmft_cli.model_backend import IGNORE_INDEX


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sorted positions p whose next label `labels[:, p + 1]` is not IGNORE_INDEX in any row of the
    (batch, length) `labels`, as a 1-D LongTensor on their device."""
    return torch.nonzero((labels[:, 1:] != IGNORE_INDEX).any(dim=0)).flatten()


def _unwrapped(model: Any) -> Any:
    return getattr(model, "module", model)  # DDP and friends hold the model as `.module`


@functools.cache
def _liger_loss() -> Any:
    """Liger's fused linear cross-entropy (summed), or None where `liger_kernel` does not import."""
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
    except Exception:  # not installed, or installed without a working triton
        return None
    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")


def _uses_liger(model: Any) -> bool:
    head = _unwrapped(model).get_output_embeddings()
    return head is not None and head.weight.is_cuda and _liger_loss() is not None


@contextmanager
def head_inputs(model: Any) -> Iterator[list[torch.Tensor]]:
    """Within the block, the language-model head receives no positions (its logits are empty) and the
    hidden states it was handed are appended to the yielded list instead."""
    captured: list[torch.Tensor] = []

    def take(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        captured.append(args[0])
        return (args[0][:, :0], *args[1:])

    handle = _unwrapped(model).get_output_embeddings().register_forward_pre_hook(take)
    try:
        yield captured
    finally:
        handle.remove()


@dataclass
class LabelLossOutput(ModelOutput):
    """What `forward_with_loss` returns: `.loss`, and `.logits` at `.positions` (None when fused)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    positions: torch.Tensor | None = None


def forward_with_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> LabelLossOutput:
    """Pop `labels` from `inputs`, run the model with the head only at labelled positions, and return the
    loss with the kept logits (batch, positions, vocabulary)."""
    labels = inputs.pop("labels")
    positions = label_positions(labels)
    targets = labels[:, positions + 1]
    divisor = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    if torch.is_tensor(divisor):
        divisor = divisor.to(labels.device)
    logits = None
    if _uses_liger(model):
        with head_inputs(model) as hidden:
            model(**inputs, logits_to_keep=positions)
        head = _unwrapped(model).get_output_embeddings()
        states = hidden[0]
        total = _liger_loss()(head.weight, states.reshape(-1, states.shape[-1]), targets.reshape(-1).to(states.device), head.bias)
    else:
        logits = model(**inputs, logits_to_keep=positions).logits
        total = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten().to(logits.device), ignore_index=IGNORE_INDEX, reduction="sum"
        )
    return LabelLossOutput(loss=total / divisor, logits=logits, positions=positions)


def causal_lm_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
    """The causal-LM loss of `inputs` (their `labels` popped): summed over label tokens, divided by
    `num_items_in_batch`, or by this batch's label tokens when it is None; equal to the model's own
    `labels=` loss, with logits only at the labelled positions."""
    return forward_with_loss(model, inputs, num_items_in_batch).loss
