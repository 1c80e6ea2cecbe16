"""bench packing with a Qwen VL base model: the mid-size sizes land under Qwen's own config names, the
merger and the mrope sections follow the new widths, and the frames are pinned at the benchmark's size,
so the benchmark model loads and runs a packed batch."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlmft_cli.backends import backend_for
from vlmft_cli.bench.packing import MID_SIZE, ensure_bench_model, scaled_config
from vlmft_cli.model_backend import LoadOptions, Turn

#: Text 128 wide with head dim 64 (mrope sections must add up to 32), one layer each, 224-px frames.
SMALL_SIZE = {
    "text_config": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64},
    "vision_config": {"num_hidden_layers": 1, "image_size": [224, 224]},
}
#: The tiny models' mrope sections scaled by hand to MID_SIZE's head dim 64 (half: 32).
MID_SECTIONS = {"tiny-qwen2.5-vl": [8, 12, 12], "tiny-qwen3-vl": [16, 8, 8]}


@pytest.mark.parametrize("model", ["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def test_mid_size_config_of_a_qwen_model(vlmft_home, model):
    source = backend_for(model).resolve(model, vlmft_home)
    config = json.loads((vlmft_home / "models" / model / "config.json").read_text())
    scaled = scaled_config(config, MID_SIZE)
    vision, text = scaled["vision_config"], scaled["text_config"]
    assert (vision["depth"], vision["num_heads"], vision["hidden_size"]) == (4, 2, 128)
    assert vision["out_hidden_size"] == text["hidden_size"] == 256
    assert text["rope_parameters"]["mrope_section"] == MID_SECTIONS[model]
    assert config["vision_config"]["depth"] == 2 and str(source).endswith(model)  # the base document is left alone


def test_the_qwen_bench_model_pins_its_frames_and_runs_a_packed_batch(vlmft_home, tmp_path):
    backend = backend_for("tiny-qwen2.5-vl")
    folder = ensure_bench_model(Path(backend.resolve("tiny-qwen2.5-vl", vlmft_home)), tmp_path / "bench", SMALL_SIZE)
    loaded = backend.load(str(folder), LoadOptions(precision="fp32"), vlmft_home)
    processor = loaded.processor
    assert processor.frame_size == 224 and backend.tokens_per_frame(processor) == (224 // 14 // 2) ** 2 // 2
    frames = [Image.new("RGB", (64, 64), (40 * k, 90, 200 - 40 * k)) for k in range(2)]
    turns = [Turn("user", "what is on the table?"), Turn("assistant", "a cup"), Turn("user", "Q: satisfied?"), Turn("assistant", "no")]
    batch = backend.collate_packed([backend.encode_packed(processor, frames, turns)], processor.pad_token_id, "sdpa", torch.float32)
    with torch.no_grad():
        logits = loaded.model(**{key: value for key, value in batch.items() if key != "labels"}).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()
