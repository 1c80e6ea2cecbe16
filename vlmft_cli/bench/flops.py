"""Model FLOPs of one LoRA training step, counted from the shapes its forward pass sees.

The usual 6·N·T assumes every weight gets a gradient; with a frozen base and LoRA it overstates the work.
Counted per layer instead, with the tokens that layer really processes:

    linear and convolution layers:  2·n·t × (1 forward + 1 if its input gets a gradient + 1 if its weights train)
    attention (QKᵀ and PV):         4·B·T²·(heads·head_dim) × (½ when causal) × (1 forward + 2 if on the gradient path)

where n is the layer's weight count and t the tokens (rows) through it. For the frozen language model this
is the standard forward 2·N·T plus backward 2·N·T for activation gradients only (frozen weights get none):
4·N·T; LoRA's adapters cost 6·N_lora·T; the frozen vision tower costs its forward 2·N_v·T_v alone, since
nothing upstream of it needs a gradient. Whether a gradient flows is read from autograd (`requires_grad`
of the layer's input, weight and output), so gradient checkpointing's `enable_input_require_grads` is
honoured. Recomputation under gradient checkpointing is hardware work, not model FLOPs: only the forward
pass is counted (hooks fire again during backward, outside the counting window). Attention modules are
recognised by their `head_dim` and `is_causal` attributes; a flattened (T, C) input is one sequence, which
overcounts windowed vision attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from vlmft_cli.bench.results import significant

FORMULA = (
    "per micro-batch, from one forward pass's shapes: Σ linear/conv layers 2·n·t·(1 + [input gets a gradient] + [weights train]) "
    "+ Σ attention 4·B·T²·heads·head_dim·(½ if causal)·(1 + 2·[on the gradient path]); frozen LM = 2·N·T forward + 2·N·T backward, "
    "LoRA 6·N_lora·T, frozen vision tower 2·N_v·T_v; gradient-checkpointing recomputation not counted"
)


@dataclass
class FlopCount:
    dense_forward: float = 0.0
    dense_backward: float = 0.0
    attention_forward: float = 0.0
    attention_backward: float = 0.0

    @property
    def forward(self) -> float:
        return self.dense_forward + self.attention_forward

    @property
    def backward(self) -> float:
        return self.dense_backward + self.attention_backward

    @property
    def total(self) -> float:
        return self.forward + self.backward

    def as_dict(self) -> dict[str, float]:
        names = ("dense_forward", "dense_backward", "attention_forward", "attention_backward", "forward", "backward", "total")
        return {f"{name}_tflop": significant(getattr(self, name) / 1e12) for name in names}


def _needs_grad(tensor: Any) -> bool:
    return bool(getattr(tensor, "requires_grad", False))


def _first_tensor(value: Any) -> Any:
    return value[0] if isinstance(value, (tuple, list)) else value


def _is_attention(module: Any) -> bool:
    return hasattr(module, "head_dim") and hasattr(module, "is_causal")


def _attention_width(module: Any) -> int:
    heads = getattr(module, "num_heads", None) or module.config.num_attention_heads
    return int(heads) * int(module.head_dim)


class TrainingFlopCounter:
    """Hooks on a model; FLOPs are counted only inside `with counter:` (put the forward pass there)."""

    def __init__(self, model: Any) -> None:
        import torch

        self.count = FlopCount()
        self._active = False
        self._handles = []
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
                self._handles.append(module.register_forward_hook(self._dense))
            elif _is_attention(module):
                self._handles.append(module.register_forward_hook(self._attention, with_kwargs=True))

    def _dense(self, module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        import torch

        if not self._active:
            return
        if isinstance(module, torch.nn.Linear):
            flops = 2.0 * output.numel() * module.in_features
        else:
            flops = 2.0 * output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        self.count.dense_forward += flops
        if _needs_grad(output):
            self.count.dense_backward += flops * (_needs_grad(inputs[0]) + _needs_grad(module.weight))

    def _attention(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not self._active:
            return
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is None:
            return
        batch, tokens = (1, hidden.shape[0]) if hidden.dim() == 2 else (math.prod(hidden.shape[:-2]), hidden.shape[-2])
        flops = 4.0 * batch * tokens**2 * _attention_width(module) * (0.5 if module.is_causal else 1.0)
        self.count.attention_forward += flops
        if _needs_grad(_first_tensor(output)):
            self.count.attention_backward += 2 * flops

    def __enter__(self) -> TrainingFlopCounter:
        self._active = True
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._active = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
