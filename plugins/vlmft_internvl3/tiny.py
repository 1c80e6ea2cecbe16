"""The offline `tiny-internvl3` model: a small random-initialised InternVL3 in Hugging Face format.

It uses transformers' own `InternVLForConditionalGeneration` with a shrunken config (2-layer vision
tower and Qwen2 text model, 112 px frames → 16 image tokens per frame), the offline BPE tokenizer of
`tiny_tokenizer` and InternVL's PIL image processor. It is written once under
`home/models/tiny-internvl3`, built in a temporary sibling folder and renamed into place when complete,
and is then loaded through `from_pretrained` exactly like a real checkpoint. A fixed seed makes builds
byte-identical.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    PreTrainedTokenizerBase,
)

from vlmft_cli.model_loading import no_progress_bars
from vlmft_cli.tiny_models import SPEC_FILE as SPEC_FILE  # re-exported: the spec file's name
from vlmft_cli.tiny_models import ensure_model_folder, write_spec
from vlmft_cli.tiny_models import is_current as is_current_spec
from vlmft_internvl3.configs import IMAGE_MEAN, IMAGE_STD, image_seq_length
from vlmft_internvl3.tiny_tokenizer import build_tiny_tokenizer
from vlmft_internvl3.tokens import END_OF_TEXT, IM_END, IMG_CONTEXT

TINY_NAME = "tiny-internvl3"
#: Written into the model folder (`SPEC_FILE`); a folder with another spec is rebuilt.
SPEC = {"name": TINY_NAME, "builder": "vlmft_internvl3", "version": 1, "seed": 0}

TINY_IMAGE_SIZE = 112
TINY_PATCH_SIZE = 14
TINY_DOWNSAMPLE_RATIO = 0.5


def tiny_config(tokenizer: PreTrainedTokenizerBase) -> InternVLConfig:
    """The tiny InternVL3 config, its vocabulary and special ids taken from `tokenizer`."""
    vocab = tokenizer.get_vocab()
    vision = {
        "model_type": "internvl_vision",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": TINY_IMAGE_SIZE,
        "patch_size": TINY_PATCH_SIZE,
        "attention_bias": True,
        "use_qk_norm": False,
        "layer_norm_eps": 1e-6,
        "use_absolute_position_embeddings": True,
        "use_mean_pooling": True,
    }
    text = {
        "model_type": "qwen2",
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
        "tie_word_embeddings": False,
        "bos_token_id": vocab[END_OF_TEXT],
        "eos_token_id": vocab[IM_END],
        "pad_token_id": vocab[END_OF_TEXT],
        "use_sliding_window": False,
    }
    return InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=vocab[IMG_CONTEXT],
        image_seq_length=image_seq_length(TINY_IMAGE_SIZE, TINY_PATCH_SIZE, TINY_DOWNSAMPLE_RATIO),
        downsample_ratio=TINY_DOWNSAMPLE_RATIO,
        tie_word_embeddings=False,
        architectures=["InternVLForConditionalGeneration"],
    )


def tiny_image_processor() -> GotOcr2ImageProcessorPil:
    """InternVL's PIL image processor at the tiny frame size, one tile per frame."""
    return GotOcr2ImageProcessorPil(
        size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        crop_to_patches=False,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )


def write_tiny_model(directory: Path) -> None:
    """Write the tiny model, tokenizer and image processor into an empty `directory`."""
    tokenizer = build_tiny_tokenizer()
    config = tiny_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(SPEC["seed"]))
        model = InternVLForConditionalGeneration._from_config(config, dtype=torch.float32)
    with no_progress_bars():
        model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    tiny_image_processor().save_pretrained(str(directory))
    write_spec(directory, SPEC)


def is_current(directory: Path) -> bool:
    """Whether `directory` holds a complete tiny model of the current spec."""
    return is_current_spec(directory, SPEC)


def ensure_tiny_model(home: Path) -> Path:
    """The tiny model's folder under `home`, built first if missing or outdated; never left half-written."""
    return ensure_model_folder(home / "models" / TINY_NAME, SPEC, write_tiny_model)
