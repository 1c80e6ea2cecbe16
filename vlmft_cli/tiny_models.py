"""Building blocks for the offline tiny models that model backends write under `home/models/NAME`.

Two jobs every backend's tiny model shares:

- a small Qwen2-style byte-level BPE tokenizer (NFC, Qwen's pre-tokenizer regex, byte-level BPE) trained
  in milliseconds on a built-in corpus of robot-task and QA text, with the backend's special tokens
  appended in a given order; training is deterministic;
- an atomic folder build: the model is written into a temporary sibling folder and renamed into place
  only when complete, with a spec file so a folder written by another spec is rebuilt.

`tokenizers` is imported only when a tokenizer is trained, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmft_cli.fsutil import replace_folder

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: Qwen2's pre-tokenizer split pattern (transformers' `Qwen2Tokenizer`).
QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

#: Upper bound on the learned vocabulary (the small corpus yields fewer merges than this).
VOCAB_SIZE_LIMIT = 1024

#: English robot-task and QA text, so tiny tokenizers split RoboVQA text roughly like real ones.
ROBOT_QA_CORPUS: tuple[str, ...] = (
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

#: Written into a tiny model's folder; a folder whose spec differs is rebuilt.
SPEC_FILE = "vlmft_tiny.json"


def train_byte_level_bpe(
    corpus: Iterable[str], special_tokens: Iterable[str], vocab_size: int = VOCAB_SIZE_LIMIT
) -> Tokenizer:
    """A Qwen2-style byte-level BPE `tokenizers.Tokenizer` trained on `corpus`, then `special_tokens`
    added (special, not normalized) in the given order, so their ids follow the learned vocabulary."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

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
    tokenizer.train_from_iterator(list(corpus), trainer)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special_tokens])
    return tokenizer


def is_current(directory: Path, spec: Mapping[str, Any]) -> bool:
    """Whether `directory` holds a complete tiny model written with `spec`."""
    try:
        return json.loads((directory / SPEC_FILE).read_text()) == dict(spec)
    except (OSError, ValueError):
        return False


def write_spec(directory: Path, spec: Mapping[str, Any]) -> None:
    """Mark `directory` as a complete build of `spec` (the last file a builder writes)."""
    (directory / SPEC_FILE).write_text(json.dumps(dict(spec), indent=2, sort_keys=True) + "\n")


def ensure_model_folder(target: Path, spec: Mapping[str, Any], write: Callable[[Path], None]) -> Path:
    """`target`, built first with `write(empty_folder)` when missing or of another spec.

    `write` must end with `write_spec`. The build happens in a temporary sibling folder renamed into
    place when complete, so `target` is never half-written; when another process finishes the same
    build first, its folder is kept. A failed build leaves nothing behind.
    """
    if is_current(target, spec):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.building-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        write(staging)
        if not is_current(staging, spec):
            raise RuntimeError(f"the builder of {target.name} did not mark its folder complete")
        if is_current(target, spec):  # another process finished first
            return target
        try:
            replace_folder(staging, target)  # an old folder of another spec is replaced whole
        except OSError:  # another process renamed its build in meanwhile
            if not is_current(target, spec):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
