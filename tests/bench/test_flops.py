"""Model FLOPs of a LoRA step: frozen layers pay forward and activation gradients, trainable ones also
weight gradients, layers off the gradient path only their forward; recomputation is not counted."""

import pytest
import torch

from vlmft_cli.bench.flops import TrainingFlopCounter

T, D = 6, 8  # tokens, width: a D×D linear layer costs 2·D·D·T per pass


def _stack(*trainable: bool) -> torch.nn.Sequential:
    layers = [torch.nn.Linear(D, D, bias=False) for _ in trainable]
    for layer, train in zip(layers, trainable, strict=True):
        layer.weight.requires_grad_(train)
    return torch.nn.Sequential(*layers)


def _count(model, x):
    counter = TrainingFlopCounter(model)
    with counter:
        out = model(x)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    model(x)  # a forward outside the window (like recomputation) is not counted
    counter.remove()
    return counter.count


def test_frozen_then_trainable_then_frozen():
    unit = 2 * D * D * T
    count = _count(_stack(False, True, False), torch.randn(T, D))
    assert count.dense_forward == 3 * unit
    # layer 1: off the gradient path; layer 2: weight gradient only (its input needs none);
    # layer 3: activation gradient only (frozen weights).
    assert count.dense_backward == 2 * unit
    assert count.total == 5 * unit


def test_frozen_layers_on_the_gradient_path_cost_4nt_and_trainable_ones_6nt():
    unit = 2 * D * D * T
    x = torch.randn(T, D, requires_grad=True)  # as with enable_input_require_grads
    assert _count(_stack(False, False), x).total == 2 * 2 * unit  # 4·N·T
    assert _count(_stack(True, True), x).total == 2 * 3 * unit  # 6·N·T


def test_attention_modules_count_the_square_halved_when_causal():
    class Attention(torch.nn.Module):
        head_dim = 4
        num_heads = 2

        def __init__(self, causal: bool) -> None:
            super().__init__()
            self.is_causal = causal
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, hidden_states):
            return (hidden_states * self.scale, None)

    hidden = torch.randn(3, 10, 8)  # batch 3, 10 tokens
    full = 4 * 3 * 10**2 * (2 * 4)
    for causal, expected in ((True, full / 2), (False, full)):
        count = _count(Attention(causal), hidden)
        assert count.attention_forward == pytest.approx(expected)
        assert count.attention_backward == pytest.approx(2 * expected)  # its output is on the gradient path
