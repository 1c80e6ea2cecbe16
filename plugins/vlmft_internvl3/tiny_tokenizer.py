"""An offline InternVL3-style tokenizer for the tiny model: byte-level BPE trained in milliseconds.

It mirrors Qwen2's tokenizer pipeline on vlmft's built-in robot-task and QA corpus (the shared trainer in
`vlmft_cli.tiny_models`), so token counts behave roughly like the real one, and registers the chatml and
InternVL special tokens. Training is deterministic.
"""

from __future__ import annotations

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from vlmft_cli.tiny_models import ROBOT_QA_CORPUS, VOCAB_SIZE_LIMIT, train_byte_level_bpe
from vlmft_internvl3.tokens import ALL_SPECIAL_TOKENS, CHAT_TEMPLATE, END_OF_TEXT, IM_END, NAMED_IMAGE_TOKENS


def train_bpe(corpus: tuple[str, ...] = ROBOT_QA_CORPUS, vocab_size: int = VOCAB_SIZE_LIMIT) -> Tokenizer:
    """A Qwen2-style byte-level BPE `tokenizers.Tokenizer` trained on `corpus`, InternVL3's special tokens added."""
    return train_byte_level_bpe(corpus, ALL_SPECIAL_TOKENS, vocab_size)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny model's tokenizer: trained BPE with chatml/InternVL special tokens and chat template."""
    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(),
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        extra_special_tokens=dict(NAMED_IMAGE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )
