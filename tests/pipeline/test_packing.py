"""The packed objective equals the unpacked one: on the tiny model in float32, a step of QAs packed per
video gives the same loss and the same LoRA gradients as the same QAs one per sample, under the
Trainer's normalisation (summed answer-token loss over the step's label tokens). And a packed sequence is
encoded at its clip's frame rate, as an unpacked sample is."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from vlmft_cli.backends import backend_for
from vlmft_cli.data.schema import iter_samples
from vlmft_cli.model_backend import IGNORE_INDEX, LoadOptions
from vlmft_cli.pipeline.dataset import Collator, ExampleDataset
from vlmft_cli.pipeline.examples import build_examples
from vlmft_cli.pipeline.packed_dataset import STAT_KEYS, PackedCollator, PackedDataset
from vlmft_cli.pipeline.packing import PackingData

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def setup(processed_data, vlmft_home):
    backend = backend_for("tiny-internvl3")
    processor = backend.load_processor("tiny-internvl3", vlmft_home)
    samples = list(iter_samples(processed_data / "stage1" / "train.jsonl", processed_data))
    examples, _ = build_examples(samples, backend=backend, processor=processor, max_frames=4, frame_sampling="uniform-last", max_length=2048)
    data = PackingData.from_examples(examples, lambda frames: backend.packed_prefix_length(processor, frames), 2048)
    # Two videos with different QA counts: the packed rows differ in length, so padding is exercised too.
    by_size = sorted(data.groups, key=len)
    sequences = [by_size[-1], next(group for group in by_size if 1 < len(group) < len(by_size[-1]))]
    packed = PackedDataset(examples, processed_data, backend, processor, data)
    unpacked = ExampleDataset(examples, processed_data, backend, processor)
    return backend, processor, packed, unpacked, sequences


def lora_model(backend, home, implementation):
    base = backend.load("tiny-internvl3", LoadOptions(precision="fp32", attn_implementation=implementation), home).model
    # Random A and B (not the zero B of a fresh adapter), so every LoRA gradient is non-zero.
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=backend.lora_target_pattern(), init_lora_weights=False)
    torch.manual_seed(0)
    model = get_peft_model(base, config)
    model.train()
    return model


def step(model, micro_batches):
    """Loss and LoRA gradients of one optimizer step over `micro_batches`, normalised as the Trainer does."""
    label_tokens = sum(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in micro_batches)
    model.zero_grad()
    total = 0.0
    for batch in micro_batches:
        inputs = {key: value for key, value in batch.items() if key not in STAT_KEYS}
        loss = model(**inputs, num_items_in_batch=torch.tensor(label_tokens)).loss
        loss.backward()
        total += float(loss.detach())
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return total, grads, label_tokens


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_step_equals_unpacked_step(setup, vlmft_home, implementation):
    backend, processor, packed, unpacked, sequences = setup
    pad = processor.pad_token_id
    model = lora_model(backend, vlmft_home, implementation)
    packed_batch = PackedCollator(backend, pad, implementation, torch.float32)([packed[s] for s in sequences])
    qas = [qa for sequence in sequences for qa in sequence]
    collate = Collator(backend, pad)
    unpacked_batches = [collate([unpacked[i] for i in qas[start : start + 2]]) for start in range(0, len(qas), 2)]

    packed_loss, packed_grads, packed_tokens = step(model, [packed_batch])
    loss, grads, tokens = step(model, unpacked_batches)

    assert packed_tokens == tokens and int(packed_batch["num_qas"]) == len(qas)
    assert packed_batch["input_ids"].numel() < sum(batch["input_ids"].numel() for batch in unpacked_batches)
    assert abs(packed_loss - loss) / loss < TOLERANCE
    flat = torch.cat([g.flatten() for g in grads.values()])
    packed_flat = torch.cat([packed_grads[name].flatten() for name in grads])
    assert all(g.norm() > 0 for g in grads.values())
    assert relative(packed_flat, flat) < TOLERANCE
    assert max(relative(packed_grads[name], g) for name, g in grads.items()) < TOLERANCE

    # The control: the same packed rows under a plain causal mask (later QAs see earlier ones) move the
    # gradients far beyond the tolerance, so the comparison above can fail.
    lengths = torch.tensor([len(packed[s]) for s in sequences])
    leaky = {key: value for key, value in packed_batch.items() if key != "position_ids"}
    leaky["attention_mask"] = (torch.arange(packed_batch["input_ids"].shape[1])[None] < lengths[:, None]).long()
    _, leaky_grads, _ = step(model, [leaky])
    leaky_flat = torch.cat([leaky_grads[name].flatten() for name in grads])
    assert relative(leaky_flat, flat) > 100 * max(relative(packed_flat, flat), 1e-7)


def test_a_packed_sequence_is_encoded_at_its_clips_frame_rate(tmp_path):
    """Like `ExampleDataset`, the packed dataset hands the backend the frame rate of the sampled frames."""
    from PIL import Image

    from vlmft_cli.model_backend import EncodedSample, PackedLayout, Turn
    from vlmft_cli.pipeline.examples import Example

    Image.new("RGB", (8, 8)).save(tmp_path / "frame.jpg")
    turns = (Turn("user", "q"), Turn("assistant", "a"))
    examples = [Example(id=f"v-{qa}", images=("frame.jpg",), turns=turns, turn_info=(), video_id="v", length=10 + qa, fps=1.5) for qa in range(2)]
    data = PackingData.from_examples(examples, lambda frames, fps=None: 8, 64)

    class Recording:
        def encode_packed(self, processor, frames, turns, fps=None):
            self.call = (len(frames), len(turns), fps)
            ids = torch.zeros(8 + 2 + 3, dtype=torch.long)
            return EncodedSample(input_ids=ids, labels=ids, pixel_values=torch.zeros(1, 3, 8, 8), num_image_tokens=8, packed=PackedLayout(8, (2, 3)))

    backend = Recording()
    assert len(PackedDataset(examples, tmp_path, backend, None, data)[(0, 1)]) == 13
    assert backend.call == (1, 4, 1.5)
