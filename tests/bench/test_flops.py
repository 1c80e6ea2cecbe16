"""Executed and necessary FLOPs of a LoRA step, on hand-worked stacks of linear layers and attention:
frozen layers pay forward and activation gradients, trainable ones also weight gradients; a gradient
into layers that nothing trainable feeds is executed but not necessary; recomputation under gradient
checkpointing is executed only; the head is necessary only at labelled positions; attention pairs are
the mask's."""

import pytest
import torch

from vlmft_cli.bench.flops import BatchLayout, TrainingFlopCounter, batch_layout, packed_pairs

T, D = 6, 8  # tokens, width: a D×D linear layer costs 2·D·D·T per pass
UNIT = 2 * D * D * T


def _stack(*trainable: bool) -> torch.nn.Sequential:
    layers = [torch.nn.Linear(D, D, bias=False) for _ in trainable]
    for layer, train in zip(layers, trainable, strict=True):
        layer.weight.requires_grad_(train)
    return torch.nn.Sequential(*layers)


def _count(model, x, layout=None, run=None):
    counter = TrainingFlopCounter(model, layout)
    with counter.forward():
        out = (run or model)(x)
    with counter.backward():
        (out[0] if isinstance(out, tuple) else out).sum().backward()
    model(x)  # a forward outside both windows is not counted
    return counter.finish()


def _total(count, pass_name):
    return sum(getattr(count, pass_name).values())


def test_frozen_then_trainable_then_frozen():
    flops = _count(_stack(False, True, False), torch.randn(T, D))
    for count in (flops.executed, flops.necessary):  # nothing requires grad that need not: both agree
        assert _total(count, "forward") == 3 * UNIT
        # layer 1: off the gradient path; layer 2: weight gradient only; layer 3: activation gradient only
        assert _total(count, "backward") == 2 * UNIT
    assert flops.ratio == 1.0


def test_an_input_made_to_require_grad_executes_gradients_nothing_needs():
    # As `enable_input_require_grads` does to a frozen tower's input: every layer computes an input
    # gradient (7 units in all), but only layer 2's weights train and only layer 3's input depends on them.
    flops = _count(_stack(False, True, False), torch.randn(T, D, requires_grad=True))
    assert _total(flops.executed, "backward") == 4 * UNIT  # 1 + (1 + 1) + 1
    assert _total(flops.necessary, "backward") == 2 * UNIT
    assert flops.ratio == pytest.approx(7 / 5)
    assert flops.waste()["vision_backward"] == pytest.approx(2 * UNIT / 1e12, rel=1e-3)  # a bare stack has no decoder


def test_frozen_layers_on_the_gradient_path_cost_4nt_and_trainable_ones_6nt():
    # Layer 1 trains (forward + weight gradient: its input x needs none), so every later layer's input
    # depends on it: trainable layer 2 costs 6·N·T (3 units), frozen layer 3 costs 4·N·T (2 units).
    flops = _count(_stack(True, True, False), torch.randn(T, D))
    for count in (flops.executed, flops.necessary):
        assert _total(count, "forward") == 3 * UNIT
        assert _total(count, "backward") == (1 + 2 + 1) * UNIT
        assert count.total == (2 + 3 + 2) * UNIT


def test_forward_passes_inside_backward_are_recompute_executed_not_necessary():
    model = _stack(True, False, False)
    x = torch.randn(T, D)
    plain = _count(model, x)
    counter = TrainingFlopCounter(model)
    with counter.forward():
        out = model(x)
    with counter.backward():  # what gradient checkpointing does: the region's forward again, inside backward()
        model(x)
        out.sum().backward()
    recomputed = counter.finish()
    assert _total(recomputed.executed, "recompute") == 3 * UNIT
    assert recomputed.necessary.total == plain.necessary.total == plain.executed.total
    assert recomputed.executed.total == plain.executed.total + 3 * UNIT
    assert recomputed.waste()["recompute"] == pytest.approx(3 * UNIT / 1e12, rel=1e-3)


class _WithHead(torch.nn.Module):
    """A trainable layer, then a frozen head recognised by `get_output_embeddings`."""

    def __init__(self, vocab: int):
        super().__init__()
        self.body = torch.nn.Linear(D, D, bias=False)
        self.head = torch.nn.Linear(D, vocab, bias=False)
        self.head.weight.requires_grad_(False)

    def get_output_embeddings(self):
        return self.head

    def forward(self, x):
        return self.head(self.body(x))


def test_the_head_is_necessary_at_labelled_positions_only():
    vocab, labelled = 40, 2
    layout = BatchLayout(shape=(1, T), real_tokens=T, labelled_positions=labelled, attention_pairs=0)
    flops = _count(_WithHead(vocab), torch.randn(T, D), layout)
    head = 2 * D * vocab  # per row and pass
    assert flops.executed.forward["head"] == T * head and flops.executed.backward["head"] == T * head
    assert flops.necessary.forward["head"] == labelled * head and flops.necessary.backward["head"] == labelled * head
    assert flops.waste()["head_unlabelled"] == pytest.approx(2 * (T - labelled) * head / 1e12, rel=1e-3)


class _Attention(torch.nn.Module):
    head_dim = 4
    num_heads = 2

    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.is_causal = causal
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, hidden_states, attention_mask=None):
        return (hidden_states * self.scale, None)


def test_attention_pairs_without_a_mask():
    hidden = torch.randn(3, 10, 8)  # batch 3, 10 tokens
    width = 4 * 2 * 4  # 4 · heads · head_dim per pair
    for causal, pairs in ((True, 3 * 55), (False, 3 * 100)):  # 10·11/2 causal pairs per row, or all 100
        flops = _count(_Attention(causal), hidden)
        for count in (flops.executed, flops.necessary):
            assert count.forward["vision"] == pytest.approx(width * pairs)  # no decoder: counted as vision
            assert count.backward["vision"] == pytest.approx(2 * width * pairs)


def test_a_dense_mask_executes_the_whole_square_and_needs_its_allowed_pairs():
    from vlmft_internvl3.block_mask import batch_block_mask

    mask, _ = batch_block_mask([(3, (2, 1))], 6, "sdpa")  # training's own mask for one packed row
    module = _Attention(True)
    counter = TrainingFlopCounter(module)
    with counter.forward():
        out = module(torch.randn(1, 6, 8), attention_mask=mask)[0]
    with counter.backward():
        out.sum().backward()
    flops = counter.finish()
    width = 4 * 2 * 4
    # allowed by hand: prefix 3·4/2 = 6; the 2-token block sees the prefix and itself: 2·3 + 3 = 9; the
    # 1-token block 3 + 1 = 4; 19 of the 36 entries the dense kernel computes
    assert packed_pairs(3, (2, 1)) == 19 == int(mask.sum())
    assert flops.executed.forward["vision"] == width * 36
    assert flops.necessary.forward["vision"] == width * 19


def test_batch_layout_of_packed_and_padded_batches():
    labels = torch.tensor([[-100, -100, 5, 6, -100, 7], [-100, 1, 2, -100, -100, -100]])
    padded = batch_layout({"input_ids": torch.zeros(2, 6), "labels": labels, "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2])})
    # labelled next tokens: row 0 positions 1, 2, 4; row 1 positions 0, 1 → 5; pairs 21 + 10
    assert padded == BatchLayout(shape=(2, 6), real_tokens=10, labelled_positions=5, attention_pairs=31)
    packed = batch_layout({"input_ids": torch.zeros(1, 6), "labels": labels[:1]}, [(3, (2, 1))])
    assert packed == BatchLayout(shape=(1, 6), real_tokens=6, labelled_positions=3, attention_pairs=19)
