"""Qwen2.5-VL's and Qwen3-VL's real architectures as transformers configs, built offline (no download).

Numbers come from the project's MODELS.md. Two transformers defaults differ from the released 7B and are
set explicitly: Qwen2.5-VL's vision hidden size (1280, not 3584) and `tokens_per_second` (2, not 4). In
transformers 5.x the rope fields (theta, mrope sections, interleaving) live under `rope_parameters`.
Parameter counts on the meta device: Qwen2.5-VL-7B-Instruct 8.29B, Qwen3-VL-8B-Instruct 8.77B.
"""

from __future__ import annotations

from transformers import PretrainedConfig, Qwen2_5_VLConfig, Qwen3VLConfig

from vlmft_qwen_vl.tokens import END_OF_TEXT, IM_END, IMAGE_PAD, SPECIAL_TOKEN_IDS, VIDEO_PAD, VISION_END, VISION_START

TOKEN_IDS = {
    "image_token_id": SPECIAL_TOKEN_IDS[IMAGE_PAD],
    "video_token_id": SPECIAL_TOKEN_IDS[VIDEO_PAD],
    "vision_start_token_id": SPECIAL_TOKEN_IDS[VISION_START],
    "vision_end_token_id": SPECIAL_TOKEN_IDS[VISION_END],
}
BOS_TOKEN_ID = SPECIAL_TOKEN_IDS[END_OF_TEXT]
EOS_TOKEN_ID = SPECIAL_TOKEN_IDS[IM_END]


def qwen2_5_vl_7b() -> Qwen2_5_VLConfig:
    """Qwen/Qwen2.5-VL-7B-Instruct."""
    text = {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        "use_sliding_window": False,
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
    }
    vision = {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "spatial_merge_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "hidden_act": "silu",
        "tokens_per_second": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=False,
        architectures=["Qwen2_5_VLForConditionalGeneration"],
        **TOKEN_IDS,
    )


def qwen3_vl_8b() -> Qwen3VLConfig:
    """Qwen/Qwen3-VL-8B-Instruct."""
    text = {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
        "attention_bias": False,
    }
    vision = {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_heads": 16,
        "patch_size": 16,
        "temporal_patch_size": 2,
        "spatial_merge_size": 2,
        "num_position_embeddings": 2304,
        "out_hidden_size": 4096,
        "deepstack_visual_indexes": [8, 16, 24],
        "hidden_act": "gelu_pytorch_tanh",
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=False,
        architectures=["Qwen3VLForConditionalGeneration"],
        **TOKEN_IDS,
    )


BUILDERS = {"Qwen2.5-VL-7B-Instruct": qwen2_5_vl_7b, "Qwen3-VL-8B-Instruct": qwen3_vl_8b}


def architecture_config(variant: str, known: tuple[str, ...]) -> PretrainedConfig:
    """The full config of `variant`, one of `known` (the calling backend's variants)."""
    if variant not in known:
        raise KeyError(f"unknown variant {variant!r} (known: {', '.join(known)})")
    return BUILDERS[variant]()
