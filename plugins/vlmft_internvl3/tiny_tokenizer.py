"""An offline InternVL3-style tokenizer for the tiny model: byte-level BPE trained in milliseconds.

It mirrors Qwen2's tokenizer pipeline (NFC, Qwen's pre-tokenizer regex, byte-level BPE) on a small
built-in English corpus of robot-task and QA text, so token counts behave roughly like the real one,
and registers the chatml and InternVL special tokens. Training is deterministic.
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerFast

from vlmft_internvl3.tokens import ALL_SPECIAL_TOKENS, CHAT_TEMPLATE, END_OF_TEXT, IM_END, NAMED_IMAGE_TOKENS

#: Qwen2's pre-tokenizer split pattern (transformers' `Qwen2Tokenizer`).
QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

#: Upper bound on the learned vocabulary (the small corpus yields fewer merges than this).
VOCAB_SIZE_LIMIT = 1024

CORPUS: tuple[str, ...] = (
    "user assistant system Frame1: Frame2: Frame3: Frame4: Frame5: Frame6: Frame7: Frame8: Frame9: Frame10:",
    "place the packet on the table Q: possible right now? A: yes",
    "put the glass into the trash Q: satisfied? A: no",
    "current goal is: Please remove the chips from the basket Q: immediate next step?",
    "current goal is: clean up the kitchen counter last 20 steps: 1- pick up the cup 2- done Q: next 5 steps?",
    "1- Move to the left 2- done 3- open the drawer 4- close the drawer 5- hang the cap on the coat rack",
    "Q: what is likely to happen next? A: put book on the table",
    "Q: what just happened? A: pick up the sanitizer",
    "the robot arm grasps the red apple and places it in the bowl",
    "the gripper opens, moves above the blue block and picks it up",
    "push the green can to the right of the sponge",
    "open the top drawer of the white cabinet and put the marker inside",
    "move the banana near the orange and the coke can",
    "wipe the table with the towel, then throw the napkin in the bin",
    "turn on the faucet, wash the mug and put it on the rack",
    "stack the yellow cup on top of the pink cup",
    "pick the bottle of water from the fridge and close the door",
    "knock the chip bag over, then place the rxbar in the bottom drawer",
    "a human hand is holding a pen over a notebook on the desk",
    "is the drawer open? is the light on? is the cup empty? yes no",
    "what should the robot do first? what object is in the gripper?",
    "Frame 16 is the last frame of the video; questions apply to the final frame.",
    "The quick brown fox jumps over the lazy dog. A robot should not hurt a human being.",
    "Please describe the scene: there is a chair, a sofa, a lamp, a plant and a shelf with books.",
    "left right up down forward backward above below behind in front of next to between",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 20 100",
    "apple banana orange lemon sponge towel bowl plate fork spoon knife cup mug glass bottle can box",
    "kitchen table counter sink shelf drawer cabinet fridge microwave oven trash bin basket door window",
    "pick place put push pull open close move grasp release lift drop rotate slide wipe pour hold carry",
)


def train_bpe(corpus: tuple[str, ...] = CORPUS, vocab_size: int = VOCAB_SIZE_LIMIT) -> Tokenizer:
    """A Qwen2-style byte-level BPE `tokenizers.Tokenizer` trained on `corpus`, special tokens added."""
    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in ALL_SPECIAL_TOKENS])
    return tokenizer


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
