"""`Qwen25VLBackend` and `Qwen3VLBackend`: the built-in `vlmft.models` plugins for Qwen's VL models.

Each claims its tiny name, names containing its family marker ("qwen2.5-vl" / "qwen2_5_vl", "qwen3-vl" /
"qwen3_vl") and local folders whose config names its `model_type`; loads native checkpoints through
transformers (no remote code); builds its tiny model offline; and encodes frames as one video plus
multi-turn QA as the family's chat template and processor do. Frames have a rate: `encode`'s `fps` (frames
per second of the frames given) or, by default, `family.DEFAULT_FPS`.

Both implement shared-prefix packing (`vlmft_qwen_vl.packing`) with sdpa and eager attention: every QA
block gets the 3-D (mrope) position ids it has in its unpacked sample, from the model's own rope index.

Heavy libraries (torch, transformers) are imported only when a method needs them, so discovering the
plugin stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vlmft_cli.model_backend import (
    DEFAULT_LORA_PROJECTIONS,
    EncodedSample,
    LoadedModel,
    LoadOptions,
    Turn,
    remote_model_source,
)
from vlmft_cli.model_names import language_model_lora_pattern, local_model_type
from vlmft_qwen_vl.family import QWEN2_5_VL, QWEN3_VL, QwenFamily
from vlmft_qwen_vl.tokens import END_OF_TEXT, IM_END, IM_START, IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image
    from transformers import PretrainedConfig

    from vlmft_qwen_vl.processor import QwenVLProcessor


class QwenVLBackend:
    """What both Qwen VL backends share; a subclass names its `family`."""

    family: QwenFamily
    name: str
    description: str
    #: The system turn of Qwen's official fine-tuning code (QwenLM's `qwen-vl-finetune`), what
    #: `system_prompt: official` means; None = none.
    official_system_prompt: str | None

    # --- names -------------------------------------------------------------------------------------

    def tiny_names(self) -> list[str]:
        return [self.family.tiny_name]

    def handles(self, name_or_path: str) -> bool:
        if name_or_path == self.family.tiny_name:
            return True
        path = Path(name_or_path).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            return local_model_type(path) == self.family.model_type
        lowered = name_or_path.lower()
        return any(marker in lowered for marker in self.family.name_markers)

    def resolve(self, name_or_path: str, home: Path) -> str:
        if name_or_path == self.family.tiny_name:
            from vlmft_qwen_vl.tiny import ensure_tiny_model

            return str(ensure_tiny_model(self.family, Path(home)))
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            return str(path.resolve())
        return remote_model_source(name_or_path)  # a hub id: cached or reachable, else one clear error

    # --- loading -----------------------------------------------------------------------------------

    def load(self, name_or_path: str, options: LoadOptions, home: Path) -> LoadedModel:
        source = self.resolve(name_or_path, home)  # first: a model that cannot be had fails before heavy imports
        from vlmft_qwen_vl.loading import load_model
        from vlmft_qwen_vl.processor import QwenVLProcessor

        processor = QwenVLProcessor.from_pretrained(source, self.family)
        model = load_model(source, options, self.family)
        return LoadedModel(model=model, processor=processor, source=source)

    def load_processor(self, name_or_path: str, home: Path) -> QwenVLProcessor:
        source = self.resolve(name_or_path, home)  # first: a model that cannot be had fails before heavy imports
        from vlmft_qwen_vl.processor import QwenVLProcessor

        return QwenVLProcessor.from_pretrained(source, self.family)

    # --- model structure ---------------------------------------------------------------------------

    def lora_target_pattern(self, projections: Sequence[str] = DEFAULT_LORA_PROJECTIONS) -> str:
        """Full-match regex for PEFT: the projections under `model.language_model`, never the vision
        tower (`model.visual`, whose Qwen2.5-VL blocks also have gate/up/down projections) or its merger."""
        return language_model_lora_pattern(projections)

    def tokens_per_frame(self, processor: QwenVLProcessor) -> int:
        from vlmft_qwen_vl.encoding import tokens_per_frame

        return tokens_per_frame(processor)

    def special_tokens(self) -> dict[str, str]:
        return {
            "vision_start": VISION_START,
            "vision_end": VISION_END,
            "video_context": VIDEO_PAD,
            "image_context": IMAGE_PAD,
            "turn_start": IM_START,
            "turn_end": IM_END,
            "pad": END_OF_TEXT,
        }

    def supports_block_mask(self, attn_implementation: str) -> bool:
        """Whether a caller-built 4-D block mask (shared-prefix packing) works with this attention: sdpa
        and eager; `vlmft_qwen_vl.packing` builds them."""
        from vlmft_qwen_vl.packing import supports_block_mask

        return supports_block_mask(attn_implementation)

    # --- encoding ----------------------------------------------------------------------------------

    def conversation_lengths(
        self, processor: QwenVLProcessor, num_frames: int, turns: Sequence[Turn], fps: float | None = None
    ) -> list[int]:
        from vlmft_qwen_vl.encoding import conversation_lengths

        return conversation_lengths(processor, num_frames, turns, fps)

    def encode(
        self, processor: QwenVLProcessor, frames: Sequence[Image], turns: Sequence[Turn], fps: float | None = None
    ) -> EncodedSample:
        from vlmft_qwen_vl.encoding import encode_conversation

        return encode_conversation(processor, frames, turns, fps=fps, generation_prompt=False)

    def encode_prompt(
        self, processor: QwenVLProcessor, frames: Sequence[Image], turns: Sequence[Turn], fps: float | None = None
    ) -> EncodedSample:
        from vlmft_qwen_vl.encoding import encode_conversation

        return encode_conversation(processor, frames, turns, fps=fps, generation_prompt=True)

    def collate(self, samples: Sequence[EncodedSample], pad_token_id: int) -> dict[str, torch.Tensor]:
        from vlmft_cli.chat_pieces import collate

        return collate(samples, pad_token_id)

    def with_system_prompt(self, processor: QwenVLProcessor, system_prompt: str | None) -> QwenVLProcessor:
        """The processor whose encodings carry the system turn the `system_prompt` setting names: unset = the
        chat template's default (Qwen2.5-VL: "You are a helpful assistant.", Qwen3-VL: none), "none" = no
        system turn, "official" = `official_system_prompt`, any other text = that text."""
        from vlmft_qwen_vl.encoding import with_system_prompt

        return with_system_prompt(processor, system_prompt, official=self.official_system_prompt)

    # --- shared-prefix packing (`vlmft_cli.model_backend.SharedPrefixPacking`) ------------------------

    def packed_prefix_length(self, processor: QwenVLProcessor, num_frames: int, fps: float | None = None) -> int:
        """Tokens of the system turn and the video; `fps` as in `encode` (Qwen3-VL's timestamps are text)."""
        from vlmft_qwen_vl.packing import packed_prefix_length

        return packed_prefix_length(processor, num_frames, fps)

    def encode_packed(
        self, processor: QwenVLProcessor, frames: Sequence[Image], turns: Sequence[Turn], fps: float | None = None
    ) -> EncodedSample:
        """The video once, then each QA of `turns` as a block with the rope positions it has alone."""
        from vlmft_qwen_vl.packing import encode_packed

        return encode_packed(processor, frames, turns, fps)

    def collate_packed(
        self, samples: Sequence[EncodedSample], pad_token_id: int, attn_implementation: str, dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        """Block mask (B, 1, T, T) and 3-D `position_ids` (3, B, T)."""
        from vlmft_qwen_vl.packing import collate_packed

        return collate_packed(samples, pad_token_id, attn_implementation, dtype)

    # --- architectures -----------------------------------------------------------------------------

    def architecture_variants(self) -> list[str]:
        return list(self.family.variants)

    def architecture_config(self, variant: str) -> PretrainedConfig:
        from vlmft_qwen_vl.configs import architecture_config

        return architecture_config(variant, self.family.variants)

    # --- many lengths at once (`vlmft_cli.model_backend.BulkConversationLengths`) ----------------------

    def conversation_lengths_bulk(
        self, processor: QwenVLProcessor, conversations: Sequence[tuple[int, Sequence[Turn], float | None]]
    ) -> list[list[int]]:
        """`conversation_lengths` of each (frames, turns, fps), tokenized in batches."""
        from vlmft_cli.chat_lengths import bulk_qa_ends
        from vlmft_qwen_vl.encoding import conversation_pieces, resolve_fps

        return bulk_qa_ends(
            processor.tokenizer,
            lambda frames, turns, fps: conversation_pieces(
                processor, frames, turns, fps=resolve_fps(processor, fps), generation_prompt=False
            ),
            conversations,
        )


class Qwen25VLBackend(QwenVLBackend):
    """Qwen2.5-VL models (native transformers `Qwen2_5_VLForConditionalGeneration`)."""

    family = QWEN2_5_VL
    name = QWEN2_5_VL.name
    # `qwen-vl-finetune`'s Qwen2.5-VL preprocessing writes this system message before every sample (and its
    # current processor path renders the chat template, whose default it is).
    official_system_prompt = "You are a helpful assistant."
    description = "Qwen2.5-VL (frames as a video, temporal rope spacing) via transformers' native classes; tiny-qwen2.5-vl offline"


class Qwen3VLBackend(QwenVLBackend):
    """Qwen3-VL models (native transformers `Qwen3VLForConditionalGeneration`)."""

    family = QWEN3_VL
    name = QWEN3_VL.name
    # `qwen-vl-finetune` renders Qwen3-VL samples with the processor's chat template and no system
    # message: the template writes none.
    official_system_prompt = None
    description = "Qwen3-VL (frames as a video with <t seconds> timestamps) via transformers' native classes; tiny-qwen3-vl offline"
