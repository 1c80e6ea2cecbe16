"""`InternVL3Backend`: the built-in `vlmft.models` plugin for InternVL3 (InternViT + Qwen2.5).

It claims tiny names, names containing "internvl" and local folders whose config says
`model_type: internvl`; loads native `-hf` checkpoints through transformers (no remote code); builds the
`tiny-internvl3` model offline; and encodes frames plus multi-turn QA as InternVL3's chat template does.
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
from vlmft_internvl3.tokens import END_OF_TEXT, IM_END, IM_START, IMG_CONTEXT, IMG_END, IMG_START

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image
    from transformers import PretrainedConfig

    from vlmft_internvl3.processor import InternVL3Processor

TINY_NAMES = ("tiny-internvl3",)
VARIANTS = ("InternVL3-1B", "InternVL3-2B", "InternVL3-8B")
MODEL_TYPE = "internvl"


class InternVL3Backend:
    """InternVL3 models (native transformers `InternVLForConditionalGeneration`)."""

    name = "internvl3"
    description = (
        "InternVL3 (InternViT-300M + Qwen2.5) via transformers' native InternVL classes; tiny-internvl3 offline"
    )

    # --- names -------------------------------------------------------------------------------------

    def tiny_names(self) -> list[str]:
        return list(TINY_NAMES)

    def handles(self, name_or_path: str) -> bool:
        if name_or_path in TINY_NAMES:
            return True
        path = Path(name_or_path).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            return local_model_type(path) == MODEL_TYPE
        return MODEL_TYPE in name_or_path.lower()

    def resolve(self, name_or_path: str, home: Path) -> str:
        if name_or_path in TINY_NAMES:
            from vlmft_internvl3.tiny import ensure_tiny_model

            return str(ensure_tiny_model(Path(home)))
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            return str(path.resolve())
        return remote_model_source(name_or_path)  # a hub id: cached or reachable, else one clear error

    # --- loading -----------------------------------------------------------------------------------

    def load(self, name_or_path: str, options: LoadOptions, home: Path) -> LoadedModel:
        source = self.resolve(name_or_path, home)  # first: a model that cannot be had fails before heavy imports
        from vlmft_internvl3.loading import load_model
        from vlmft_internvl3.processor import InternVL3Processor

        processor = InternVL3Processor.from_pretrained(source)
        model = load_model(source, options)
        return LoadedModel(model=model, processor=processor, source=source)

    def load_processor(self, name_or_path: str, home: Path) -> InternVL3Processor:
        source = self.resolve(name_or_path, home)  # first: a model that cannot be had fails before heavy imports
        from vlmft_internvl3.processor import InternVL3Processor

        return InternVL3Processor.from_pretrained(source)

    # --- model structure ---------------------------------------------------------------------------

    def lora_target_pattern(self, projections: Sequence[str] = DEFAULT_LORA_PROJECTIONS) -> str:
        """Full-match regex for PEFT: the projections under `language_model`, never the vision tower or
        the projector (whose linear layers are `linear_1`/`linear_2` and vision `q_proj`… live elsewhere)."""
        return language_model_lora_pattern(projections)

    def tokens_per_frame(self, processor: InternVL3Processor) -> int:
        from vlmft_internvl3.encoding import tokens_per_frame

        return tokens_per_frame(processor)

    def special_tokens(self) -> dict[str, str]:
        return {
            "image_start": IMG_START,
            "image_end": IMG_END,
            "image_context": IMG_CONTEXT,
            "turn_start": IM_START,
            "turn_end": IM_END,
            "pad": END_OF_TEXT,
        }

    def supports_block_mask(self, attn_implementation: str) -> bool:
        """Whether a caller-built 4-D block mask (shared-prefix packing) works with this attention;
        `vlmft_internvl3.block_mask` builds them."""
        from vlmft_internvl3.block_mask import supports_block_mask

        return supports_block_mask(attn_implementation)

    # --- encoding ----------------------------------------------------------------------------------

    def conversation_lengths(self, processor: InternVL3Processor, num_frames: int, turns: Sequence[Turn], fps: float | None = None) -> list[int]:
        """Exact lengths; `fps` is unused (InternVL3 numbers frames, it does not time them)."""
        from vlmft_internvl3.encoding import conversation_lengths

        return conversation_lengths(processor, num_frames, turns)

    def encode(
        self, processor: InternVL3Processor, frames: Sequence[Image], turns: Sequence[Turn], fps: float | None = None
    ) -> EncodedSample:
        """Training sample; `fps` is unused (InternVL3 writes frame numbers, not timestamps)."""
        from vlmft_internvl3.encoding import encode_conversation

        return encode_conversation(processor, frames, turns, generation_prompt=False)

    def encode_prompt(
        self, processor: InternVL3Processor, frames: Sequence[Image], turns: Sequence[Turn], fps: float | None = None
    ) -> EncodedSample:
        from vlmft_internvl3.encoding import encode_conversation

        return encode_conversation(processor, frames, turns, generation_prompt=True)

    def collate(self, samples: Sequence[EncodedSample], pad_token_id: int) -> dict[str, torch.Tensor]:
        from vlmft_internvl3.encoding import collate

        return collate(samples, pad_token_id)

    def with_system_prompt(self, processor: InternVL3Processor, system_prompt: str | None) -> InternVL3Processor:
        """The processor whose encodings carry the system turn the `system_prompt` setting names. `official`
        is InternVL's own fine-tuning system message (`vlmft_internvl3.encoding.OFFICIAL_SYSTEM_PROMPT`,
        the `internvl2_5` template's); unset is the chat template's default, which for `-hf` checkpoints is
        no system turn."""
        from vlmft_internvl3.encoding import with_system_prompt

        return with_system_prompt(processor, system_prompt)

    # --- shared-prefix packing (`vlmft_cli.model_backend.SharedPrefixPacking`) ------------------------

    def packed_prefix_length(self, processor: InternVL3Processor, num_frames: int, fps: float | None = None) -> int:
        """`fps` is unused (InternVL3 numbers frames, it does not time them)."""
        from vlmft_internvl3.packing import packed_prefix_length

        return packed_prefix_length(processor, num_frames)

    def encode_packed(
        self, processor: InternVL3Processor, frames: Sequence[Image], turns: Sequence[Turn], fps: float | None = None
    ) -> EncodedSample:
        """Frames once, then each QA of `turns` as a block that sees the frames and itself only."""
        from vlmft_internvl3.packing import encode_packed

        return encode_packed(processor, frames, turns)

    def collate_packed(
        self, samples: Sequence[EncodedSample], pad_token_id: int, attn_implementation: str, dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        from vlmft_internvl3.packing import collate_packed

        return collate_packed(samples, pad_token_id, attn_implementation, dtype)

    def collate_padding_free(
        self, samples: Sequence[EncodedSample], pad_token_id: int, attn_implementation: str, dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        """Whole conversations back to back in one unpadded row (`vlmft_cli.pipeline.padding_free`)."""
        from vlmft_internvl3.packing import collate_padding_free

        return collate_padding_free(samples, pad_token_id, attn_implementation, dtype)

    # --- architectures -----------------------------------------------------------------------------

    def architecture_variants(self) -> list[str]:
        return list(VARIANTS)

    def architecture_config(self, variant: str) -> PretrainedConfig:
        from vlmft_internvl3.configs import architecture_config

        return architecture_config(variant)

    # --- many lengths at once (`vlmft_cli.model_backend.BulkConversationLengths`) ----------------------

    def conversation_lengths_bulk(
        self, processor: InternVL3Processor, conversations: Sequence[tuple[int, Sequence[Turn], float | None]]
    ) -> list[list[int]]:
        """`conversation_lengths` of each (frames, turns, fps), tokenized in batches."""
        from vlmft_cli.chat_lengths import bulk_qa_ends
        from vlmft_internvl3.encoding import conversation_pieces

        return bulk_qa_ends(
            processor.tokenizer,
            lambda frames, turns, fps: conversation_pieces(processor, frames, turns, generation_prompt=False),
            conversations,
        )
