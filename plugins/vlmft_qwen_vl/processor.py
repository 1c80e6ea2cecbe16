"""The Qwen VL processor vlmft uses: a tokenizer, a PIL image processor and the frame geometry.

transformers' `Qwen2_5_VLProcessor` / `Qwen3VLProcessor` need a video processor, which needs torchvision
(absent here and not allowed). This composition replaces them: the tokenizer loads with `AutoTokenizer`,
the image processor is the PIL backend of Qwen's (`Qwen2VLImageProcessorPil`, also Qwen3-VL's) and the
video layout is built from it in `vlmft_qwen_vl.video`. Every frame is resized to one fixed square
(`frame_size`) so a frame's token count is known without decoding it; the image processor pins it when
its min and max pixels are equal (the tiny models), otherwise the family's default applies. The default
system turn is whatever the checkpoint's chat template (else the family's) writes for a conversation
without one. The checkpoint's model config travels along (`model_config`, None for a folder without one,
such as a saved adapter's): packing computes the model's 3-D rope positions from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase, Qwen2VLImageProcessorPil

from vlmft_qwen_vl.family import DEFAULT_FPS, QwenFamily
from vlmft_qwen_vl.tokens import END_OF_TEXT, IM_END, IM_START, REQUIRED_TOKENS, VIDEO_PAD, VISION_END, VISION_START

PROBE = "\x00vlmft-probe\x00"


@dataclass
class QwenVLProcessor:
    """Everything needed to turn frames and a conversation into Qwen2.5-VL / Qwen3-VL inputs.

    `system_prompt`, when set, is written as a chatml system turn before the conversation; `fps` is the
    frame rate assumed for the frames given to `encode` when none is passed; `model_config` is the
    checkpoint's `config.json` (shared-prefix packing needs it for the rope positions).
    """

    tokenizer: PreTrainedTokenizerBase
    image_processor: Qwen2VLImageProcessorPil
    family: QwenFamily
    frame_size: int
    system_prompt: str | None = None
    fps: float = DEFAULT_FPS
    model_config: PretrainedConfig | None = None

    special_ids: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        vocab = self.tokenizer.get_vocab()
        missing = [token for token in REQUIRED_TOKENS if token not in vocab]
        if missing:
            raise ValueError(f"the tokenizer lacks {self.family.display}'s special tokens: {', '.join(missing)}")
        self.special_ids = {token: int(vocab[token]) for token in REQUIRED_TOKENS}
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = END_OF_TEXT
        factor = self.patch_size * self.merge_size
        if self.frame_size < factor or self.frame_size % factor:
            raise ValueError(f"frame size {self.frame_size} is not a positive multiple of patch × merge = {factor}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, not {self.fps}")

    # --- ids ---------------------------------------------------------------------------------------

    def token_id(self, token: str) -> int:
        """The id of one of the special tokens the encoder uses."""
        return self.special_ids[token]

    @property
    def im_start_id(self) -> int:
        return self.token_id(IM_START)

    @property
    def im_end_id(self) -> int:
        return self.token_id(IM_END)

    @property
    def vision_start_id(self) -> int:
        return self.token_id(VISION_START)

    @property
    def vision_end_id(self) -> int:
        return self.token_id(VISION_END)

    @property
    def video_pad_id(self) -> int:
        return self.token_id(VIDEO_PAD)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    # --- geometry ----------------------------------------------------------------------------------

    @property
    def patch_size(self) -> int:
        return int(self.image_processor.patch_size)

    @property
    def merge_size(self) -> int:
        return int(self.image_processor.merge_size)

    @property
    def temporal_patch_size(self) -> int:
        return int(self.image_processor.temporal_patch_size)

    @property
    def grid_side(self) -> int:
        """Patches along one side of a frame."""
        return self.frame_size // self.patch_size

    @property
    def tokens_per_chunk(self) -> int:
        """`<|video_pad|>` tokens of one temporal chunk (`temporal_patch_size` frames): merged patches."""
        return (self.grid_side // self.merge_size) ** 2

    def num_chunks(self, num_frames: int) -> int:
        """Temporal chunks of a video of `num_frames` (an incomplete last chunk repeats the last frame)."""
        return math.ceil(num_frames / self.temporal_patch_size)

    # --- text --------------------------------------------------------------------------------------

    def decode(self, token_ids: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(token_ids, **kwargs)

    def batch_decode(self, sequences: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(sequences, **kwargs)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write tokenizer and image processor files (they carry the frame size and system turn)."""
        self.tokenizer.save_pretrained(str(directory))
        self.image_processor.save_pretrained(str(directory))

    @classmethod
    def from_pretrained(cls, name_or_path: str, family: QwenFamily, **hub_kwargs: Any) -> QwenVLProcessor:
        """Compose the processor of a local folder or hub checkpoint of `family`."""
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(name_or_path, **hub_kwargs)
        if int(image_processor.patch_size) != family.patch_size:
            raise ValueError(
                f"{name_or_path}: the image processor's patch size is {image_processor.patch_size}, "
                f"but {family.display} uses {family.patch_size}"
            )
        frame_size = pinned_frame_size(image_processor) or family.default_frame_size
        return cls(
            tokenizer=tokenizer,
            image_processor=image_processor,
            family=family,
            frame_size=frame_size,
            system_prompt=default_system_prompt(tokenizer, family),
            model_config=model_config(name_or_path, family, **hub_kwargs),
        )


def model_config(name_or_path: str, family: QwenFamily, **hub_kwargs: Any) -> PretrainedConfig | None:
    """The model config of a checkpoint of `family` (a hub id, or a local folder with a `config.json`),
    or None for a local folder without one or with another model type."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        return None
    config = AutoConfig.from_pretrained(name_or_path, **hub_kwargs)
    return config if config.model_type == family.model_type else None


def pinned_frame_size(image_processor: Qwen2VLImageProcessorPil) -> int | None:
    """The square frame side an image processor fixes by equal min and max pixels, else None."""
    size = image_processor.size
    shortest, longest = size.get("shortest_edge"), size.get("longest_edge")
    if shortest is None or shortest != longest:
        return None
    side = math.isqrt(int(shortest))
    return side if side * side == int(shortest) else None


def default_system_prompt(tokenizer: PreTrainedTokenizerBase, family: QwenFamily) -> str | None:
    """The system turn the chat template writes before a conversation that has none: the tokenizer's
    template, or the family's when the tokenizer carries none (some checkpoints keep it processor-side)."""
    template = getattr(tokenizer, "chat_template", None) or family.chat_template
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROBE}], chat_template=template, tokenize=False
    )
    head = f"{IM_START}system\n"
    if not rendered.startswith(head):
        return None
    end = rendered.find(f"{IM_END}\n", len(head))
    if end < 0 or PROBE in rendered[:end]:
        return None
    return rendered[len(head) : end]
