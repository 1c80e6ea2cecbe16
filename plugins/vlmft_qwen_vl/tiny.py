"""The offline tiny Qwen VL models, `tiny-qwen2.5-vl` and `tiny-qwen3-vl`, in Hugging Face format.

transformers' own `Qwen2_5_VLForConditionalGeneration` / `Qwen3VLForConditionalGeneration` with shrunken
configs (2-layer vision tower 32 wide, 2-layer text model 64 wide with head dim 16, so the mrope sections
add up to 8), random weights from a fixed seed, the offline tokenizer of `tiny_tokenizer` and Qwen's PIL
image processor pinned to one frame size:

    tiny-qwen2.5-vl: 112 px frames, patch 14 → 8×8 patches, 4×4 = 16 video tokens per 2-frame chunk
    tiny-qwen3-vl:   128 px frames, patch 16 → 8×8 patches, 4×4 = 16 video tokens per 2-frame chunk

Each is written once under `home/models/NAME` (built in a temporary sibling folder, renamed into place
when complete; `vlmft_cli.tiny_models`) and then loaded through `from_pretrained` like a real checkpoint.
Builds are byte-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    PretrainedConfig,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from vlmft_cli.model_loading import no_progress_bars
from vlmft_cli.tiny_models import ensure_model_folder, write_spec
from vlmft_qwen_vl.family import QWEN2_5_VL, QWEN3_VL, QwenFamily
from vlmft_qwen_vl.tiny_tokenizer import build_tiny_tokenizer
from vlmft_qwen_vl.tokens import END_OF_TEXT, IM_END, IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START

SEED = 0
#: Square frame side of each tiny model (a multiple of patch × merge).
TINY_FRAME_SIZE = {QWEN2_5_VL.name: 112, QWEN3_VL.name: 128}

TEXT_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
}
VISION_SHAPE: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": TEXT_SHAPE["hidden_size"],
}


def spec(family: QwenFamily) -> dict[str, Any]:
    """What a tiny model folder was built from; a folder with another spec is rebuilt."""
    return {"name": family.tiny_name, "builder": "vlmft_qwen_vl", "version": 1, "seed": SEED}


def token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The multimodal token ids a Qwen VL config names, from `tokenizer`."""
    vocab = tokenizer.get_vocab()
    return {
        "image_token_id": vocab[IMAGE_PAD],
        "video_token_id": vocab[VIDEO_PAD],
        "vision_start_token_id": vocab[VISION_START],
        "vision_end_token_id": vocab[VISION_END],
    }


def tiny_qwen2_5_vl_config(tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLConfig:
    """Tiny Qwen2.5-VL: head dim 16 → mrope sections [2, 3, 3] (the 7B's 16:24:24 scaled to 8)."""
    vocab = tokenizer.get_vocab()
    text = {
        **TEXT_SHAPE,
        "vocab_size": len(tokenizer),
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        "use_sliding_window": False,
        "bos_token_id": vocab[END_OF_TEXT],
        "eos_token_id": vocab[IM_END],
        "pad_token_id": vocab[END_OF_TEXT],
    }
    vision = {
        **VISION_SHAPE,
        "patch_size": QWEN2_5_VL.patch_size,
        "hidden_act": "silu",
        "tokens_per_second": 2,
        "window_size": 56,  # two merged units: a 112 px frame spans 2×2 windows
        "fullatt_block_indexes": [1],
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=False,
        architectures=[QWEN2_5_VL.model_class],
        **token_ids(tokenizer),
    )


def tiny_qwen3_vl_config(tokenizer: PreTrainedTokenizerBase) -> Qwen3VLConfig:
    """Tiny Qwen3-VL: head dim 16 → interleaved mrope sections [4, 2, 2] (the 8B's 24:20:20 scaled to 8)."""
    text = {
        **TEXT_SHAPE,
        "vocab_size": len(tokenizer),
        "head_dim": 16,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        "attention_bias": False,
    }
    side = TINY_FRAME_SIZE[QWEN3_VL.name] // QWEN3_VL.patch_size
    vision = {
        **VISION_SHAPE,
        "patch_size": QWEN3_VL.patch_size,
        "hidden_act": "gelu_pytorch_tanh",
        "num_position_embeddings": side * side,
        "deepstack_visual_indexes": [0],
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=False,
        architectures=[QWEN3_VL.model_class],
        **token_ids(tokenizer),
    )


CONFIG_BUILDERS = {QWEN2_5_VL.name: tiny_qwen2_5_vl_config, QWEN3_VL.name: tiny_qwen3_vl_config}
MODEL_CLASSES = {QWEN2_5_VL.name: Qwen2_5_VLForConditionalGeneration, QWEN3_VL.name: Qwen3VLForConditionalGeneration}


def tiny_config(family: QwenFamily, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The tiny config of `family`, its vocabulary and special ids taken from `tokenizer`."""
    return CONFIG_BUILDERS[family.name](tokenizer)


def tiny_image_processor(family: QwenFamily) -> Qwen2VLImageProcessorPil:
    """Qwen's PIL image processor, min = max pixels pinning the tiny frame size."""
    pixels = TINY_FRAME_SIZE[family.name] ** 2
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels},
        patch_size=family.patch_size,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=list(family.image_mean),
        image_std=list(family.image_std),
    )


def write_tiny_model(family: QwenFamily, directory: Path) -> None:
    """Write the tiny model of `family`, its tokenizer and image processor into an empty `directory`."""
    tokenizer = build_tiny_tokenizer(family)
    config = tiny_config(family, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = MODEL_CLASSES[family.name]._from_config(config, dtype=torch.float32)
    with no_progress_bars():
        model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    tiny_image_processor(family).save_pretrained(str(directory))
    write_spec(directory, spec(family))


def ensure_tiny_model(family: QwenFamily, home: Path) -> Path:
    """The tiny model folder of `family` under `home`, built first if missing or outdated."""
    return ensure_model_folder(
        home / "models" / family.tiny_name, spec(family), lambda folder: write_tiny_model(family, folder)
    )
