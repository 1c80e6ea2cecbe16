"""FLOPs of one LoRA training step, counted twice: what the hardware executes and what the step needs.

Forward hooks on every linear/convolution layer and attention module see the shapes of the pass; autograd
says which gradients will run. Per layer, with n its weight count and t the rows through it:

    linear / conv:  2·n·t per pass, forward; backward 2·n·t for the input's gradient + 2·n·t for the weights'
    attention:      4·H·D per attended (query, key) pair, forward; backward twice the forward

*Executed* is what runs: every forward; the input gradient wherever the input requires grad, the weight
gradient wherever the weight does (autograd computes exactly those); forward hooks firing again inside
`backward()` are gradient-checkpointing recomputation (counted apart); attention counts every pair the
kernel computes: the causal triangle with no mask (`is_causal`), the full square with a dense mask (SDPA and
eager compute every score and mask them afterwards), the computed tiles of a FlexAttention `BlockMask`,
the chunks of `cu_seqlens` (Qwen's windowed vision attention).

*Necessary* is what the LoRA objective needs: the forward of everything, except the language-model head
only at the positions whose next token is labelled and nothing for padding; an input gradient only where
the input depends on a trainable parameter (read from the autograd graph: it reaches a LoRA weight), a
weight gradient only for trainable weights; no recomputation, no backward into the frozen vision tower
or the first layer's frozen inputs; attention only over the pairs the mask allows (the batch's packed
layout when given). For a frozen language model under LoRA this is the forward 2·N·T plus 2·N·T of
activation gradients (4·N·T), 6·N_lora·T for the adapters, and 2·N_v·T_v for the vision tower.

Every figure is also split by part of the model: `vision` (everything outside the language model and its
head: tower, projector), `language` (the decoder: dense layers and attention apart) and `head`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from vlmft_cli.bench.results import significant

FORMULA = (
    "per micro-batch, from the pass's shapes: linear/conv 2·n·t per pass (forward; input gradient; weight gradient), attention 4·H·D "
    "per attended pair (backward 2× forward). executed: every forward, the gradients autograd computes (requires_grad), "
    "gradient-checkpointing recomputation (hooks inside backward), attention pairs as the kernel computes them (the causal triangle without a "
    "mask, the full square with a dense mask, computed tiles of a BlockMask); necessary: forward of everything but the head only at "
    "labelled positions and no padding, input gradients only where a trainable (LoRA) weight is upstream, LoRA weight gradients, "
    "no recompute, attention only over allowed pairs: frozen LM = 2·N·T + 2·N·T, LoRA 6·N_lora·T, frozen vision tower 2·N_v·T_v"
)
PARTS = ("vision", "language", "attention", "head")


@dataclass
class FlopCount:
    """FLOPs by pass: forward, backward, recompute (executed only), each split by part of the model."""

    forward: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    backward: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    recompute: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))

    @property
    def total(self) -> float:
        return sum(self.forward.values()) + sum(self.backward.values()) + sum(self.recompute.values())

    def part(self, name: str) -> float:
        return self.forward[name] + self.backward[name] + self.recompute[name]

    def as_dict(self) -> dict[str, Any]:
        def tflop(values: dict[str, float]) -> dict[str, float]:
            return {name: significant(value / 1e12) for name, value in values.items()}

        return {
            "total_tflop": significant(self.total / 1e12),
            "forward_tflop": significant(sum(self.forward.values()) / 1e12),
            "backward_tflop": significant(sum(self.backward.values()) / 1e12),
            "recompute_tflop": significant(sum(self.recompute.values()) / 1e12),
            "by_part_tflop": {name: significant(self.part(name) / 1e12) for name in PARTS},
            "forward_by_part_tflop": tflop(self.forward),
            "backward_by_part_tflop": tflop(self.backward),
            "recompute_by_part_tflop": tflop(self.recompute),
        }


@dataclass
class TrainingFlops:
    executed: FlopCount = field(default_factory=FlopCount)
    necessary: FlopCount = field(default_factory=FlopCount)

    @property
    def ratio(self) -> float:
        return self.executed.total / self.necessary.total if self.necessary.total else math.nan

    def waste(self) -> dict[str, float]:
        """TFLOP executed beyond the necessary, by cause."""
        e, n = self.executed, self.necessary

        def beyond(part: str) -> float:  # forward and backward, recomputation apart
            return significant((e.forward[part] + e.backward[part] - n.forward[part] - n.backward[part]) / 1e12)

        return {
            "recompute": significant(sum(e.recompute.values()) / 1e12),
            "vision_backward": significant((e.backward["vision"] - n.backward["vision"]) / 1e12),
            "head_unlabelled": beyond("head"),
            "masked_attention": beyond("attention"),
            "language_other": beyond("language"),
        }

    def as_dict(self) -> dict[str, Any]:
        return {"executed": self.executed.as_dict(), "necessary": self.necessary.as_dict(), "executed_over_necessary": significant(self.ratio), "waste_tflop": self.waste()}


@dataclass(frozen=True)
class BatchLayout:
    """What the necessary count needs to know of the micro-batch: its (batch, length) shape, the real
    (unpadded) tokens, the positions whose logits the loss needs, and the attention pairs each row needs
    (causal within a sample; for a packed row the prefix causally plus each block over the prefix and itself)."""

    shape: tuple[int, int]
    real_tokens: int
    labelled_positions: int
    attention_pairs: int


def causal_pairs(length: int) -> int:
    return length * (length + 1) // 2


def packed_pairs(prefix: int, blocks: Sequence[int]) -> int:
    """Allowed (query, key) pairs of a shared-prefix packed row: the causal prefix, then each block over
    the whole prefix and itself causally."""
    return causal_pairs(prefix) + sum(block * prefix + causal_pairs(block) for block in blocks)


def batch_layout(batch: dict[str, Any], packed_layouts: Sequence[tuple[int, Sequence[int]]] | None = None) -> BatchLayout:
    """The `BatchLayout` of a collated micro-batch: packed rows from their (prefix, blocks) layouts, plain
    rows from the 2-D attention mask (or their full length)."""
    from vlmft_cli.model_backend import IGNORE_INDEX

    input_ids, labels = batch["input_ids"], batch["labels"]
    shape = (int(input_ids.shape[0]), int(input_ids.shape[1]))
    if packed_layouts is not None:
        lengths = [prefix + sum(blocks) for prefix, blocks in packed_layouts]
        pairs = sum(packed_pairs(prefix, blocks) for prefix, blocks in packed_layouts)
    else:
        mask = batch.get("attention_mask")
        lengths = [int(row.sum()) for row in mask] if mask is not None and mask.dim() == 2 else [shape[1]] * shape[0]
        pairs = sum(causal_pairs(length) for length in lengths)
    labelled = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return BatchLayout(shape, sum(lengths), labelled, pairs)


def _first_tensor(value: Any) -> Any:
    return value[0] if isinstance(value, (tuple, list)) else value


def _is_attention(module: Any) -> bool:
    return hasattr(module, "head_dim") and hasattr(module, "is_causal")


def _attention_width(module: Any) -> int:
    heads = getattr(module, "num_heads", None) or module.config.num_attention_heads
    return int(heads) * int(module.head_dim)


def _mask_pairs(mask: Any, batch: int, tokens: int) -> tuple[float, float] | None:
    """(pairs computed, pairs allowed) for a caller-built mask, or None for no mask."""
    import torch

    if mask is None:
        return None
    if hasattr(mask, "kv_num_blocks"):  # FlexAttention's BlockMask: computed tiles, allowed entries unknown here
        blocks = mask.kv_num_blocks.sum() + (mask.full_kv_num_blocks.sum() if mask.full_kv_num_blocks is not None else 0)
        rows, heads = mask.kv_num_blocks.shape[:2]
        q_block, kv_block = mask.BLOCK_SIZE
        computed = float(blocks) / heads * q_block * kv_block * (batch / rows)
        return min(computed, float(batch * tokens * tokens)), math.nan
    if torch.is_tensor(mask) and mask.dim() == 4:
        allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
        per_row = float(allowed.sum()) / mask.shape[1] * (batch / mask.shape[0])
        return float(batch * tokens * tokens), per_row
    return None


class TrainingFlopCounter:
    """Hooks on a model counting executed and necessary FLOPs (see the module docstring).

    Put the forward pass in `with counter.forward():` and `loss.backward()` in `with counter.backward():`;
    then `finish()`. `layout` (the micro-batch's `BatchLayout`) makes the necessary count exact for the head,
    padding and the attention mask; without it every row counts and the allowed pairs are read from the mask.
    """

    def __init__(self, model: Any, layout: BatchLayout | None = None) -> None:
        import torch

        self.flops = TrainingFlops()
        self.layout = layout
        self._phase: str | None = None
        self._handles: list[Any] = []
        self._memo: dict[Any, bool] = {}
        self._head_ran = False
        self._trainable = {id(p) for p in model.parameters() if p.requires_grad}
        self._head = _output_embeddings(model)
        self._language = {id(m) for m in _decoder(model).modules()} if _decoder(model) is not None else set()
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
                self._handles.append(module.register_forward_hook(self._dense))
            elif _is_attention(module):
                self._handles.append(module.register_forward_hook(self._attention, with_kwargs=True))

    # --- which gradients are necessary: does a tensor depend on a trainable weight? -------------------

    def _depends(self, tensor: Any) -> bool:
        if not getattr(tensor, "requires_grad", False):
            return False
        root = tensor.grad_fn
        if root is None:
            return id(tensor) in self._trainable
        memo, stack = self._memo, [root]
        while stack:
            node = stack[-1]
            if node in memo:
                stack.pop()
                continue
            children = [child for child, _ in node.next_functions if child is not None]
            pending = [child for child in children if child not in memo]
            if pending:
                stack.extend(pending)
                continue
            variable = getattr(node, "variable", None)
            memo[node] = (variable is not None and id(variable) in self._trainable) or any(memo[child] for child in children)
            stack.pop()
        return memo[root]

    # --- hooks ------------------------------------------------------------------------------------------

    def _part(self, module: Any) -> str:
        if module is self._head:
            return "head"
        return "language" if id(module) in self._language else "vision"

    def _dense(self, module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        import torch

        if self._phase is None:
            return
        part = self._part(module)
        if part == "head":
            self._head_ran = True
        if isinstance(module, torch.nn.Linear):
            flops = 2.0 * output.numel() * module.in_features
        else:
            flops = 2.0 * output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        executed, necessary = self.flops.executed, self.flops.necessary
        if self._phase == "backward":
            executed.recompute[part] += flops
            return
        executed.forward[part] += flops
        if output.requires_grad:
            executed.backward[part] += flops * (bool(inputs[0].requires_grad) + bool(module.weight.requires_grad))
        share = self._row_share(part, output)
        necessary.forward[part] += flops * share
        necessary.backward[part] += flops * share * (self._depends(inputs[0]) + (id(module.weight) in self._trainable))

    def _row_share(self, part: str, output: Any) -> float:
        """The share of a layer's rows the objective needs: labelled positions for the head, real tokens
        for a language-model layer over the padded batch."""
        layout = self.layout
        if layout is None or part == "vision":
            return 1.0
        rows = output.numel() // output.shape[-1]
        if part == "head":
            return min(1.0, layout.labelled_positions / rows) if rows else 1.0
        padded = layout.shape[0] * layout.shape[1]
        return layout.real_tokens / padded if rows == padded else 1.0

    def _attention(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if self._phase is None:
            return
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is None:
            return
        language = id(module) in self._language
        batch, tokens = (1, hidden.shape[0]) if hidden.dim() == 2 else (math.prod(hidden.shape[:-2]), hidden.shape[-2])
        cu_seqlens = kwargs.get("cu_seqlens")
        masked = _mask_pairs(kwargs.get("attention_mask"), batch, tokens)
        if cu_seqlens is not None:  # independent chunks of one flattened sequence
            lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
            computed = allowed = float(sum(length * length for length in lengths))
        elif masked is not None:
            computed, allowed = masked
        else:
            computed = allowed = float(batch * (causal_pairs(tokens) if module.is_causal else tokens * tokens))
        if language and self.layout is not None:
            allowed = float(self.layout.attention_pairs)
        elif math.isnan(allowed):
            allowed = computed
        unit = 4.0 * _attention_width(module)
        part = "attention" if language else "vision"
        executed, necessary = self.flops.executed, self.flops.necessary
        if self._phase == "backward":
            executed.recompute[part] += unit * computed
            return
        executed.forward[part] += unit * computed
        out = _first_tensor(output)
        if getattr(out, "requires_grad", False):
            executed.backward[part] += 2 * unit * computed
        necessary.forward[part] += unit * allowed
        if self._depends(out):
            necessary.backward[part] += 2 * unit * allowed

    # --- phases -----------------------------------------------------------------------------------------

    @contextmanager
    def _in_phase(self, phase: str) -> Iterator[TrainingFlopCounter]:
        self._phase = phase
        try:
            yield self
        finally:
            self._phase = None
            self._memo.clear()  # autograd nodes, read by `_depends` within one forward only

    def forward(self) -> AbstractContextManager[TrainingFlopCounter]:
        return self._in_phase("forward")

    def backward(self) -> AbstractContextManager[TrainingFlopCounter]:
        return self._in_phase("backward")

    def finish(self) -> TrainingFlops:
        """Remove the hooks. A head that never ran as a module (a fused linear cross-entropy) is counted
        from the layout: forward and input gradient at the labelled positions, executed and necessary."""
        self.remove()
        if not self._head_ran and self._head is not None and self.layout is not None:
            flops = 2.0 * self.layout.labelled_positions * self._head.weight.numel()
            for count in (self.flops.executed, self.flops.necessary):
                count.forward["head"] += flops
                count.backward["head"] += flops
        return self.flops

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._memo.clear()


def _base(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _output_embeddings(model: Any) -> Any:
    getter = getattr(_base(model), "get_output_embeddings", None)
    return getter() if callable(getter) else None


def _decoder(model: Any) -> Any:
    getter = getattr(_base(model), "get_decoder", None)
    if not callable(getter):
        return None
    try:
        return getter()
    except (AttributeError, ValueError, NotImplementedError):
        return None
