"""An offline Qwen-style tokenizer for the tiny Qwen VL models: byte-level BPE trained in milliseconds.

vlmft's shared trainer (`vlmft_cli.tiny_models`) on its robot-task corpus plus Qwen3-VL's timestamp
text, then Qwen's special tokens in their real id order (`<|endoftext|>` … `<|video_pad|>`), the named
multimodal tokens transformers' Qwen processors read, and the family's chat template. Deterministic.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from vlmft_cli.tiny_models import ROBOT_QA_CORPUS, train_byte_level_bpe
from vlmft_qwen_vl.family import QwenFamily
from vlmft_qwen_vl.tokens import END_OF_TEXT, IM_END, NAMED_TOKENS, SPECIAL_TOKEN_IDS

#: Timestamp markers as Qwen3-VL writes them, so they cost a few tokens as with the real vocabulary.
TIMESTAMP_CORPUS: tuple[str, ...] = (
    "<0.2 seconds> <0.8 seconds> <1.2 seconds> <1.8 seconds> <2.2 seconds> <2.8 seconds> <3.5 seconds>",
    "<4.0 seconds> <5.5 seconds> <6.2 seconds> <7.8 seconds> <9.0 seconds> <10.5 seconds> <12.2 seconds>",
    "You are a helpful assistant.",
)


def build_tiny_tokenizer(family: QwenFamily) -> PreTrainedTokenizerFast:
    """The tiny model's tokenizer for `family`: trained BPE, Qwen special tokens, the family's chat template."""
    return PreTrainedTokenizerFast(
        tokenizer_object=train_byte_level_bpe(ROBOT_QA_CORPUS + TIMESTAMP_CORPUS, SPECIAL_TOKEN_IDS),
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        extra_special_tokens=dict(NAMED_TOKENS),
        chat_template=family.chat_template,
        model_max_length=32768,
    )
