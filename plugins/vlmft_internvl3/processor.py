"""The InternVL3 processor vlmft uses: a tokenizer, a PIL image processor and the image token count.

transformers' `InternVLProcessor` insists on a video processor, which needs torchvision (absent here and
not allowed), and then cannot `save_pretrained`. This small composition replaces it: the tokenizer
loads with `AutoTokenizer`, the image processor is the PIL backend of InternVL's (`GotOcr2ImageProcessorPil`)
with `crop_to_patches=False` so one frame is one tile, and each part saves and loads separately in the
standard Hugging Face files. The number of `<IMG_CONTEXT>` tokens per tile comes from the model config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, GotOcr2ImageProcessorPil, PreTrainedTokenizerBase

from vlmft_internvl3.configs import image_seq_length
from vlmft_internvl3.tokens import ALL_SPECIAL_TOKENS, END_OF_TEXT, IM_END, IM_START, IMG_CONTEXT, IMG_END, IMG_START


@dataclass
class InternVL3Processor:
    """Everything needed to turn frames and a conversation into InternVL3 inputs.

    `system_prompt`, when set, is written as a chatml system turn before the conversation (the `-hf`
    chat template has no default one).
    """

    tokenizer: PreTrainedTokenizerBase
    image_processor: GotOcr2ImageProcessorPil
    image_seq_length: int
    system_prompt: str | None = None

    special_ids: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        vocab = self.tokenizer.get_vocab()
        missing = [token for token in ALL_SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise ValueError(f"the tokenizer lacks InternVL3's special tokens: {', '.join(missing)}")
        self.special_ids = {token: int(vocab[token]) for token in ALL_SPECIAL_TOKENS}
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = END_OF_TEXT

    def token_id(self, token: str) -> int:
        """The id of one of InternVL3's special tokens."""
        return self.special_ids[token]

    @property
    def image_context_id(self) -> int:
        return self.token_id(IMG_CONTEXT)

    @property
    def image_start_id(self) -> int:
        return self.token_id(IMG_START)

    @property
    def image_end_id(self) -> int:
        return self.token_id(IMG_END)

    @property
    def im_start_id(self) -> int:
        return self.token_id(IM_START)

    @property
    def im_end_id(self) -> int:
        return self.token_id(IM_END)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of one preprocessed frame."""
        size = self.image_processor.size
        return int(size["height"]), int(size["width"])

    def decode(self, token_ids: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(token_ids, **kwargs)

    def batch_decode(self, sequences: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(sequences, **kwargs)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write tokenizer and image processor files (the model config carries the image token count)."""
        self.tokenizer.save_pretrained(str(directory))
        self.image_processor.save_pretrained(str(directory))

    @classmethod
    def from_pretrained(cls, name_or_path: str, **hub_kwargs: Any) -> InternVL3Processor:
        """Compose the processor of a local folder or hub checkpoint in the native `-hf` layout."""
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
        image_processor = GotOcr2ImageProcessorPil.from_pretrained(name_or_path, crop_to_patches=False, **hub_kwargs)
        config = AutoConfig.from_pretrained(name_or_path, **hub_kwargs)
        vision = config.vision_config
        model_size = (int(vision.image_size[0]), int(vision.image_size[1]))
        processor_size = (int(image_processor.size["height"]), int(image_processor.size["width"]))
        if processor_size != model_size:
            raise ValueError(
                f"{name_or_path}: the image processor resizes to {processor_size} but the vision tower expects {model_size}"
            )
        tokens = image_seq_length(model_size[0], int(vision.patch_size[0]), float(config.downsample_ratio))
        return cls(tokenizer=tokenizer, image_processor=image_processor, image_seq_length=tokens)
