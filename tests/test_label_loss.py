"""The training loss with the head only at labelled positions equals transformers' own `labels=` loss, in
value and LoRA gradients, for the batches training makes; and the head sees only those positions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vlmft_cli.label_loss import causal_lm_loss, label_positions
from vlmft_cli.model_backend import IGNORE_INDEX, Turn
from vlmft_cli.settings import resolve_settings
from vlmft_cli.training.trainer import CurriculumTrainer

QAS = [("what is on the table?", "a red cup"), ("Q: satisfied?", "yes"), ("immediate next step?", "pick up the sanitizer")]


def _turns(qas):
    return [turn for question, answer in qas for turn in (Turn("user", question), Turn("assistant", answer))]


def _frames(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture(scope="module")
def lora(vlmft_home):
    """The tiny InternVL3 with LoRA (fp32, sdpa, no dropout, LoRA B made non-zero), its backend and processor."""
    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.lora_model import build_model

    cli = {"model": "tiny-internvl3", "home": vlmft_home, "gradient_checkpointing": "off", "precision": "fp32", "lora_r": 4, "lora_dropout": 0.0}
    settings = resolve_settings(stage=1, profile="cpu", cli=cli, environ={}).settings
    backend = backend_for(settings.model, settings.backend)
    model, loaded = build_model(settings, backend, select_attention("sdpa"), device="cpu")
    generator = torch.Generator().manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.05, generator=generator)
    model.train()
    return model, backend, loaded.processor


def _batch(kind: str, backend, processor) -> dict[str, torch.Tensor]:
    frames = _frames(2)
    if kind == "unpacked":  # stage 1, one QA per sample, padded
        samples = [backend.encode(processor, frames, _turns([qa])) for qa in (QAS[2], QAS[1])]
        return backend.collate(samples, processor.pad_token_id)
    if kind == "packed":  # stage 1, a video's QAs in one row with the block mask
        samples = [backend.encode_packed(processor, frames, _turns(QAS)), backend.encode_packed(processor, frames, _turns(QAS[1:2]))]
        return backend.collate_packed(samples, processor.pad_token_id, "sdpa", torch.float32)
    samples = [backend.encode(processor, frames, _turns(QAS)), backend.encode(processor, frames, _turns(QAS[:2]))]  # stage 2
    return backend.collate(samples, processor.pad_token_id)


def _loss_and_gradients(model, loss_of) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_of()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


@pytest.mark.parametrize(("kind", "num_items"), [("unpacked", None), ("packed", 50), ("stage2", None), ("stage2", 50)])
def test_loss_and_lora_gradients_equal_transformers_labels_loss(lora, kind, num_items):
    model, backend, processor = lora
    batch = _batch(kind, backend, processor)
    assert (batch["labels"] == IGNORE_INDEX).any(dim=1).all()  # prompts, and padding in some row
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    reference, reference_grads = _loss_and_gradients(model, lambda: model(**batch, **extra).loss)
    seen: list[int] = []
    handle = model.get_output_embeddings().register_forward_hook(lambda module, args, output: seen.append(args[0].shape[1]))
    try:
        loss, grads = _loss_and_gradients(model, lambda: causal_lm_loss(model, dict(batch), None if num_items is None else torch.tensor(num_items)))
    finally:
        handle.remove()
    rows = batch["labels"].tolist()
    labelled = {p for row in rows for p in range(len(row) - 1) if row[p + 1] != IGNORE_INDEX}
    assert 0 < len(labelled) < batch["labels"].shape[1] // 2  # most positions carry no label
    assert seen == [len(labelled)]  # the head ran at the labelled positions only
    assert abs(float(loss - reference)) <= 1e-6 * abs(float(reference))
    assert grads.keys() == reference_grads.keys() and len(grads) > 0
    assert all(reference_grads[name].norm() > 0 for name in reference_grads)
    worst = max(_relative(grads[name], reference_grads[name]) for name in grads)
    assert worst <= 1e-6


def _trainer_stand_in() -> SimpleNamespace:
    """What `CurriculumTrainer.compute_loss` reads of the Trainer, for one process."""
    return SimpleNamespace(
        step_skipped=[], tokens_seen=0, samples_seen=0, step_samples=0, _placeholder_loss=CurriculumTrainer._placeholder_loss,
        args=SimpleNamespace(average_tokens_across_devices=True, n_gpu=1), accelerator=SimpleNamespace(num_processes=1),
    )  # fmt: skip


def test_training_runs_the_head_at_labelled_positions_only(lora):
    model, backend, processor = lora
    batch = _batch("packed", backend, processor)
    rows = batch["labels"].tolist()
    labelled = {p for row in rows for p in range(len(row) - 1) if row[p + 1] != IGNORE_INDEX}
    assert label_positions(batch["labels"]).tolist() == sorted(labelled)

    seen: list[int] = []
    handle = model.get_output_embeddings().register_forward_hook(lambda module, args, output: seen.append(args[0].shape[1]))
    try:
        loss, outputs = CurriculumTrainer.compute_loss(_trainer_stand_in(), model, dict(batch), return_outputs=True, num_items_in_batch=torch.tensor(30))
    finally:
        handle.remove()
    assert seen == [len(labelled)]
    assert outputs.logits.shape[:2] == (len(rows), len(labelled))
    with torch.no_grad():
        expected = model(**batch, num_items_in_batch=torch.tensor(30)).loss
    assert abs(float(loss - expected)) <= 1e-6 * abs(float(expected))


def test_the_placeholder_never_runs_the_head_and_reaches_every_lora_parameter(lora):
    model, _, processor = lora
    inputs = {"input_ids": torch.tensor([[processor.pad_token_id]]), "attention_mask": torch.tensor([[1]])}
    seen: list[int] = []
    handle = model.get_output_embeddings().register_forward_hook(lambda module, args, output: seen.append(args[0].shape[1]))
    try:
        model.zero_grad(set_to_none=True)
        loss = CurriculumTrainer._placeholder_loss(model, inputs, return_outputs=False)
        loss.backward()
    finally:
        handle.remove()
    assert seen == [0] and float(loss) == 0.0
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and not p.grad.any() for p in trained)


def test_the_fused_path_hands_the_head_weight_the_labelled_hidden_states(lora, monkeypatch):
    """Liger's kernel needs a GPU; on the CPU its place is taken by the same computation unfused
    (head matmul then summed cross-entropy), so what is checked is what the fused path feeds it."""
    from vlmft_cli import label_loss

    def unfused(weight, hidden, target, bias=None):
        return torch.nn.functional.cross_entropy(torch.nn.functional.linear(hidden, weight, bias).float(), target, ignore_index=IGNORE_INDEX, reduction="sum")

    model, backend, processor = lora
    batch = _batch("packed", backend, processor)
    reference, reference_grads = _loss_and_gradients(model, lambda: model(**batch, num_items_in_batch=torch.tensor(50)).loss)
    monkeypatch.setattr(label_loss, "_uses_liger", lambda model: True)
    monkeypatch.setattr(label_loss, "_liger_loss", lambda: unfused)
    loss, grads = _loss_and_gradients(model, lambda: causal_lm_loss(model, dict(batch), torch.tensor(50)))
    assert abs(float(loss - reference)) <= 1e-6 * abs(float(reference))
    assert max(_relative(grads[name], reference_grads[name]) for name in grads) <= 1e-6
