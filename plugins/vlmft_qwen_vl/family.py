"""What tells Qwen2.5-VL and Qwen3-VL apart, as plain data (no heavy imports).

Both families encode frames the same way (a video of temporal chunks of two frames, merged 2×2 patches
per visual token); they differ in patch size, normalisation, whether the prompt carries per-chunk
timestamps (Qwen3-VL) or the temporal spacing goes into the rope positions (`second_per_grid_ts`,
Qwen2.5-VL), and in their names, tiny model and real architectures.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmft_qwen_vl.tokens import QWEN2_5_VL_CHAT_TEMPLATE, QWEN3_VL_CHAT_TEMPLATE

#: transformers' OPENAI_CLIP mean/std (Qwen2.5-VL's normalisation).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Frames per second assumed for the frames given to `encode` when no rate is passed. RoboVQA records
#: store no frame rate; 2 fps is the rate Qwen's own processors sample videos at, so the timing the model
#: sees (Qwen3-VL's "<t seconds>" markers, Qwen2.5-VL's temporal rope spacing) is the one it was trained on.
DEFAULT_FPS = 2.0


@dataclass(frozen=True)
class QwenFamily:
    """One Qwen VL family: names, vision geometry and prompt conventions."""

    name: str  # the backend's plugin name
    display: str
    model_type: str  # config.json `model_type` of its checkpoints
    model_class: str  # transformers class
    tiny_name: str
    name_markers: tuple[str, ...]  # lower-case substrings of hub ids and names it claims
    variants: tuple[str, ...]  # real architectures `architecture_config` builds
    hub_ids: tuple[str, ...]  # real checkpoints, for messages and docs
    patch_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    #: Side of the square every frame is resized to (a multiple of patch × merge), unless the image
    #: processor pins one (min = max pixels); RoboVQA frames are extracted at 288 px.
    default_frame_size: int
    #: Qwen3-VL writes "<t seconds>" before each temporal chunk; Qwen2.5-VL spaces chunks in its rope.
    timestamps: bool
    chat_template: str

    @property
    def unquantized_modules(self) -> tuple[str, ...]:
        """Modules kept out of bitsandbytes quantization: the vision tower (with its merger) and the LM head."""
        return ("model.visual", "lm_head")


QWEN2_5_VL = QwenFamily(
    name="qwen2_5_vl",
    display="Qwen2.5-VL",
    model_type="qwen2_5_vl",
    model_class="Qwen2_5_VLForConditionalGeneration",
    tiny_name="tiny-qwen2.5-vl",
    name_markers=("qwen2.5-vl", "qwen2_5_vl"),
    variants=("Qwen2.5-VL-7B-Instruct",),
    hub_ids=("Qwen/Qwen2.5-VL-7B-Instruct",),
    patch_size=14,
    image_mean=CLIP_MEAN,
    image_std=CLIP_STD,
    default_frame_size=280,
    timestamps=False,
    chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
)

QWEN3_VL = QwenFamily(
    name="qwen3_vl",
    display="Qwen3-VL",
    model_type="qwen3_vl",
    model_class="Qwen3VLForConditionalGeneration",
    tiny_name="tiny-qwen3-vl",
    name_markers=("qwen3-vl", "qwen3_vl"),
    variants=("Qwen3-VL-8B-Instruct",),
    hub_ids=("Qwen/Qwen3-VL-8B-Instruct",),
    patch_size=16,
    image_mean=(0.5, 0.5, 0.5),
    image_std=(0.5, 0.5, 0.5),
    default_frame_size=288,
    timestamps=True,
    chat_template=QWEN3_VL_CHAT_TEMPLATE,
)
