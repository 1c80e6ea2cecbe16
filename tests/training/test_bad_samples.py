"""Frames that fail at decode time: skipped with their JSONL line, never fatal to a training item.

Unit level (no model): every way a frame can fail to decode is a `FrameError` naming it, a dataset built
with `skip_bad` returns it as `Skipped` with the example's line, and the collators drop skipped items,
list them in the batch and turn a micro-batch with nothing left into the one-token placeholder.
"""

import struct
import zlib
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from vlmft_cli import chat_pieces
from vlmft_cli.errors import DataError
from vlmft_cli.model_backend import EncodedSample
from vlmft_cli.pipeline.dataset import (
    EMPTY_KEY,
    SKIPPED_KEY,
    BadSample,
    Collator,
    ExampleDataset,
    FrameError,
    Skipped,
    load_frames,
)
from vlmft_cli.pipeline.examples import Example
from vlmft_cli.pipeline.packed_dataset import PackedCollator, PackedDataset
from vlmft_cli.pipeline.packing import PackingData


def png_claiming(width, height):
    """A PNG whose header claims `width` × `height` pixels (a decompression bomb), with a tiny body."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_bytes(size=32):
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


BROKEN = {
    "empty": lambda: b"",
    "not an image": lambda: b"this is a text file, not a frame\n" * 4,
    "truncated": lambda: jpeg_bytes(64)[:200],
    "decompression bomb": lambda: png_claiming(100_000, 100_000),  # over 2 × MAX_IMAGE_PIXELS: DecompressionBombError
    "decompression bomb warning": lambda: png_claiming(10_000, 10_000),  # over MAX_IMAGE_PIXELS: PIL only warns
}


@pytest.fixture
def frames(tmp_path):
    (tmp_path / "good.jpg").write_bytes(jpeg_bytes())
    for name, make in BROKEN.items():
        (tmp_path / f"{name}.jpg").write_bytes(make())
    return tmp_path


def example(images, line, example_id=None, video="v"):
    return Example(id=example_id or f"ex-{line}", images=tuple(images), turns=(), turn_info=(), video_id=video, length=3, line=line)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_every_decode_failure_is_a_frame_error_naming_the_file(frames, name):
    assert [image.size for image in load_frames(frames, ["good.jpg"])] == [(32, 32)]
    with pytest.raises(FrameError, match=f"cannot read frame .*{name}.jpg") as caught:
        load_frames(frames, ["good.jpg", f"{name}.jpg"])
    assert isinstance(caught.value, DataError)  # `vlmft eval` keeps printing it as one line
    if name.startswith("decompression bomb"):  # refused from the header alone, before any decoding
        assert ("DecompressionBombWarning" if name.endswith("warning") else "DecompressionBombError") in str(caught.value)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_dataset_that_skips_returns_the_line_instead(frames, name):
    examples = [example(["good.jpg", f"{name}.jpg"], line=7, example_id="video-3")]
    skipped = ExampleDataset(examples, frames, backend=None, processor=None, skip_bad=True, source="stage1/train.jsonl")[0]
    assert isinstance(skipped, Skipped) and len(skipped.samples) == 1
    bad = skipped.samples[0]
    assert (bad.id, bad.line, bad.source) == ("video-3", 7, "stage1/train.jsonl") and f"{name}.jpg" in bad.reason
    assert bad.where == "stage1/train.jsonl:7"
    with pytest.raises(FrameError):  # without skip_bad (`vlmft eval`, the benchmarks) it still raises
        ExampleDataset(examples, frames, backend=None, processor=None)[0]


def test_a_packed_sequence_with_a_bad_frame_skips_all_its_qas(frames):
    examples = [example(["good.jpg", "truncated.jpg"], line=line, video="v") for line in (4, 5, 6)]
    packing = PackingData.from_examples(examples, lambda frames: 1, max_length=100)
    skipped = PackedDataset(examples, frames, backend=None, processor=None, data=packing, skip_bad=True, source="s.jsonl")[(0, 2)]
    assert isinstance(skipped, Skipped) and [(b.line, b.source) for b in skipped.samples] == [(4, "s.jsonl"), (6, "s.jsonl")]


def encoded(tokens):
    ids = torch.arange(1, tokens + 1)
    return EncodedSample(input_ids=ids, labels=ids.clone(), pixel_values=torch.zeros(0, 3, 2, 2), num_image_tokens=0, answer_spans=[(1, tokens)])


def test_collators_drop_skipped_items_and_list_them():
    backend = SimpleNamespace(collate=chat_pieces.collate)
    bad = [BadSample("a", 3, "cannot read frame x"), BadSample("b", 9, "cannot read frame y")]
    batch = Collator(backend, pad_token_id=0)([encoded(4), Skipped((bad[0],)), encoded(2), Skipped((bad[1],))])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [1, 2, 0, 0]] and batch[SKIPPED_KEY] == bad
    assert EMPTY_KEY not in batch
    clean = Collator(backend, pad_token_id=0)([encoded(2)])
    assert SKIPPED_KEY not in clean and EMPTY_KEY not in clean  # nothing changes for good batches


def test_a_micro_batch_with_nothing_left_is_the_placeholder():
    bad = [BadSample("a", 3, "r"), BadSample("b", 4, "r")]
    batch = Collator(SimpleNamespace(collate=chat_pieces.collate), pad_token_id=5)([Skipped((bad[0],)), Skipped((bad[1],))])
    assert batch["input_ids"].tolist() == [[5]] and batch["attention_mask"].tolist() == [[1]]
    assert batch["labels"].tolist() == [[-100]]  # no label: the step's label-token count is unchanged
    assert bool(batch[EMPTY_KEY]) and batch[SKIPPED_KEY] == bad
    packed = PackedCollator(SimpleNamespace(), pad_token_id=5, attn_implementation="sdpa", dtype=torch.float32)([Skipped(tuple(bad))])
    assert packed["input_ids"].tolist() == [[5]] and int(packed["num_qas"]) == 0 and int(packed["num_tokens"]) == 0
    assert packed[SKIPPED_KEY] == bad
