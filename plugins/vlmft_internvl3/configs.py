"""InternVL3's real architectures as transformers `InternVLConfig`s, built offline (no download).

Numbers come from the project's MODELS.md (the native `-hf` checkpoints). Where MODELS.md marks a value
unknown for InternVL3-2B (Qwen2.5-1.5B text): rope theta, max positions, RMS eps and qkv bias are taken
from the 8B (they are shared across the Qwen2.5 family); its FFN width is Qwen2.5-1.5B's published 8960,
not the 8B's 18944, which would inflate the 2B to ~2.9B parameters. Word embeddings are untied in all
three (InternVL fine-tunes the LM head separately): that gives the published sizes 0.94B / 2.09B /
7.94B, where tied ones would give 0.80B / 1.86B. Verify against a real checkpoint when one is at hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config

IMAGE_TOKEN_ID = 151667
BOS_TOKEN_ID = 151643
EOS_TOKEN_ID = 151645
VOCAB_SIZE = 151674
IMAGE_SIZE = 448
PATCH_SIZE = 14
DOWNSAMPLE_RATIO = 0.5
#: ImageNet normalisation, as in the `-hf` checkpoints' image processor.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TextSpec:
    """The Qwen2 language model of one InternVL3 size."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool
    rope_theta: float = 1e6
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6


TEXT_SPECS: dict[str, TextSpec] = {
    "InternVL3-1B": TextSpec(896, 4864, 24, 14, 2, 64, tie_word_embeddings=False),
    "InternVL3-2B": TextSpec(1536, 8960, 28, 12, 2, 128, tie_word_embeddings=False),
    "InternVL3-8B": TextSpec(3584, 18944, 28, 28, 4, 128, tie_word_embeddings=False),
}


def vision_config() -> InternVLVisionConfig:
    """InternViT-300M-448px-V2_5, shared by InternVL3-1B, -2B and -8B."""
    return InternVLVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        attention_bias=True,
        use_qk_norm=False,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        norm_type="layer_norm",
        use_absolute_position_embeddings=True,
        use_mean_pooling=True,
    )


def text_config(spec: TextSpec) -> Qwen2Config:
    """A Qwen2 config for `spec` with InternVL3's vocabulary and chatml end-of-turn token."""
    return Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        hidden_act="silu",
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=spec.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        use_sliding_window=False,
    )


def image_seq_length(image_size: int, patch_size: int, downsample_ratio: float) -> int:
    """`<IMG_CONTEXT>` tokens per tile: patches per side, pixel-shuffled by `downsample_ratio`, squared."""
    per_side = image_size // patch_size
    return int(per_side * downsample_ratio) ** 2


def architecture_config(variant: str) -> InternVLConfig:
    """The full config of an InternVL3 variant ("InternVL3-1B", "InternVL3-2B", "InternVL3-8B")."""
    if variant not in TEXT_SPECS:
        raise KeyError(f"unknown InternVL3 variant {variant!r} (known: {', '.join(TEXT_SPECS)})")
    spec = TEXT_SPECS[variant]
    return InternVLConfig(
        vision_config=vision_config(),
        text_config=text_config(spec),
        image_token_id=IMAGE_TOKEN_ID,
        image_seq_length=image_seq_length(IMAGE_SIZE, PATCH_SIZE, DOWNSAMPLE_RATIO),
        downsample_ratio=DOWNSAMPLE_RATIO,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=spec.tie_word_embeddings,
        architectures=["InternVLForConditionalGeneration"],
    )
