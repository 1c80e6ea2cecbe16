"""The model-backend protocol: what a plugin in the `vlmft.models` entry-point group provides.

A backend knows one family of vision-language models (InternVL3, Qwen2.5-VL, …): how to load it, where
LoRA goes, how frames and a conversation become model inputs with labels, and which configs describe
its tiny offline variant and its real architecture. The core never imports a backend by name; it finds
them through `vlmft_cli.plugins`.

A backend may also implement `SharedPrefixPacking` (optional): several QAs about the same frames in one
sequence, `[prefix][QA 1][QA 2]…`, each QA attending to the prefix and itself only. Stage 1 packs when
the backend has all of its methods and says the attention implementation honours the block mask.

The system turn belongs to the processor: `load` and `load_processor` return one whose encodings carry
the chat template's default system turn (or none), and every encoding method (`encode`, `encode_prompt`,
`conversation_lengths`, `encode_packed`, `packed_prefix_length`) writes the same one, so predicted
lengths stay exact. A backend may offer `with_system_prompt(processor, system_prompt) -> processor`
(optional; `vlmft_cli.chat_pieces.apply_system_prompt` calls it with the `system_prompt` setting for
training, evaluation and the benchmarks): None = the chat template's default, "none" = no system turn,
"official" = the backend's official fine-tuning system turn (each backend documents which), any other
text = that text. Without the method only the default is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # heavy imports stay out of `vlmft --help`
    import torch
    from PIL.Image import Image
    from transformers import PretrainedConfig, PreTrainedModel

Precision = Literal["bf16", "fp16", "fp32"]
Quantization = Literal["none", "4bit", "8bit"]
Role = Literal["user", "assistant"]

#: Label value ignored by the loss (transformers' convention).
IGNORE_INDEX = -100

#: The language-model projections LoRA targets by default (the reference recipe).
DEFAULT_LORA_PROJECTIONS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: precision, quantization, attention implementation, placement."""

    precision: Precision = "bf16"
    quantization: Quantization = "none"
    attn_implementation: str = "sdpa"
    device_map: str | dict[str, Any] | None = None
    trust_remote_code: bool = False


@dataclass
class LoadedModel:
    """A model with the processor its backend needs to build inputs for it."""

    model: PreTrainedModel
    processor: Any
    source: str  # the resolved local path or hub name it was loaded from


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation; frames belong to the first user turn."""

    role: Role
    text: str


@dataclass(frozen=True)
class PackedLayout:
    """How a packed sequence is laid out: a shared prefix (frames) then one block per QA, back to back."""

    prefix_length: int
    block_lengths: tuple[int, ...]

    @property
    def length(self) -> int:
        return self.prefix_length + sum(self.block_lengths)


@dataclass
class EncodedSample:
    """Model inputs for one sample, unpadded.

    `labels` equals `input_ids` on assistant answers (and their end-of-turn token) and IGNORE_INDEX elsewhere.
    `answer_spans` holds one (start, end) token range per assistant turn, in order, for per-turn losses.
    `extra` carries backend-specific tensors (e.g. `image_grid_thw`, `mm_token_type_ids`); per-token
    tensors in it are 1-D with the same length as `input_ids` and are padded by `collate`; others are
    concatenated over the batch. `pixel_values` reach the model as its `pixel_values` (images); a backend
    whose model takes frames under another name (Qwen's `pixel_values_videos`) leaves it with 0 rows and
    carries them in `extra`.
    `packed` is set by `SharedPrefixPacking.encode_packed` only: then `answer_spans` has one span per QA block.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor
    num_image_tokens: int
    answer_spans: list[tuple[int, int]] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    packed: PackedLayout | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@runtime_checkable
class ModelBackend(Protocol):
    """A family of vision-language models, registered under `vlmft.models`."""

    name: str
    description: str

    def handles(self, name_or_path: str) -> bool:
        """Whether this backend claims a model name, hub id or local folder (by config `model_type`)."""
        ...

    def resolve(self, name_or_path: str, home: Path) -> str:
        """Turn a name into something `from_pretrained` can load; builds tiny offline models under `home`."""
        ...

    def load(self, name_or_path: str, options: LoadOptions, home: Path) -> LoadedModel:
        """Load model and processor with the given precision, quantization and attention."""
        ...

    def load_processor(self, name_or_path: str, home: Path) -> Any:
        """Only the processor (for token counting and data checks without the weights)."""
        ...

    def lora_target_pattern(self, projections: Sequence[str] = DEFAULT_LORA_PROJECTIONS) -> str:
        """A regex over module names selecting these projections in the language model only."""
        ...

    def tokens_per_frame(self, processor: Any) -> int:
        """Visual tokens one frame costs in the sequence (image start/end tokens included)."""
        ...

    def special_tokens(self) -> dict[str, str]:
        """Its multimodal special tokens by role, e.g. {"image_start": "<img>", …}."""
        ...

    def conversation_lengths(self, processor: Any, num_frames: int, turns: Sequence[Turn], fps: float | None = None) -> list[int]:
        """Exact sequence length of the encoded conversation cut after each assistant turn, without
        decoding any image: element k is the length of the first k+1 QA pairs. Used for length limits,
        length grouping and the `--dry-run` budget. `fps` as in `encode` (it can change the length: Qwen3-VL
        writes each frame pair's timestamp into the prompt); pass the same value to both."""
        ...

    def encode(self, processor: Any, frames: Sequence[Image], turns: Sequence[Turn], fps: float | None = None) -> EncodedSample:
        """Frames and a conversation → input ids, labels on assistant turns only, pixel values. No truncation.

        `fps` is the frame rate of `frames` as given (frames per second between consecutive given frames:
        the clip's rate divided by the mean sampling stride); None means the backend's documented default.
        Backends that write no time information ignore it."""
        ...

    def encode_prompt(self, processor: Any, frames: Sequence[Image], turns: Sequence[Turn], fps: float | None = None) -> EncodedSample:
        """Like `encode`, but the conversation ends with a user turn and the prompt ends where the answer
        would start (generation prompt appended); labels are all IGNORE_INDEX."""
        ...

    def collate(self, samples: Sequence[EncodedSample], pad_token_id: int) -> dict[str, torch.Tensor]:
        """Pad (right) and stack samples into the keyword arguments of the model's forward."""
        ...

    def tiny_names(self) -> list[str]:
        """The offline tiny model names this backend builds, e.g. ["tiny-internvl3"]."""
        ...

    def architecture_config(self, variant: str) -> PretrainedConfig:
        """The real architecture's config (e.g. "InternVL3-8B") for random-init benchmarks; no download."""
        ...

    def architecture_variants(self) -> list[str]:
        """The variants `architecture_config` knows."""
        ...


@runtime_checkable
class SharedPrefixPacking(Protocol):
    """Optional backend methods for stage-1 shared-prefix packing (see the module docstring).

    The contract the trainer relies on: a packed sequence of QAs q1…qn is exactly the prefix followed by
    each QA's unpacked encoding minus that prefix, so its length is `prefix + Σ (len(qk) − prefix)`, each
    QA's labels are those of its unpacked sample, and with the batch mask and position ids from
    `collate_packed` every QA is computed as if it stood alone.
    """

    def supports_block_mask(self, attn_implementation: str) -> bool:
        """Whether a caller-built 4-D block attention mask is honoured under this `attn_implementation`."""
        ...

    def packed_prefix_length(self, processor: Any, num_frames: int, fps: float | None = None) -> int:
        """Tokens of the prefix every QA about `num_frames` frames shares (system turn, frames), without
        decoding any image; `fps` as in `encode`."""
        ...

    def encode_packed(self, processor: Any, frames: Sequence[Image], turns: Sequence[Turn], fps: float | None = None) -> EncodedSample:
        """Frames once, then each (user, assistant) pair of `turns` as its own block; `packed` set, labels
        on the answers as in `encode`, pixel values once."""
        ...

    def collate_packed(self, samples: Sequence[EncodedSample], pad_token_id: int, attn_implementation: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Pad packed samples into a batch with a (B, 1, T, T) block attention mask for `attn_implementation`
        (in `dtype` where the mask is additive; for flex_attention instead the (B, 2, T) ids under
        `vlmft_cli.attention_masks.MASK_IDS_KEY`) and (B, T) position ids that restart after the prefix in
        every block; padding positions attend to themselves only."""
        ...


@runtime_checkable
class BulkConversationLengths(Protocol):
    """An optional backend method: `conversation_lengths` of many conversations in one call (batched
    tokenization). Without it the plan calls `conversation_lengths` once per conversation."""

    def conversation_lengths_bulk(self, processor: Any, conversations: Sequence[tuple[int, Sequence[Turn], float | None]]) -> list[list[int]]:
        """For each (num_frames, turns, fps): exactly what `conversation_lengths(processor, num_frames,
        turns, fps)` returns."""
        ...


def pad_token_id(tokenizer: Any, fallback: int | None = None) -> int:
    """The id batches are padded with: the tokenizer's pad token, else `fallback`, else its eos token.

    Training and benchmarks fall back on eos; evaluation passes its first stop id (the end-of-turn
    token). Padding is masked out of attention and labels, so the choice only has to be a valid id."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    chosen = fallback if fallback is not None else tokenizer.eos_token_id
    if chosen is None:
        raise ValueError("the tokenizer has neither a pad token nor an eos token, and no fallback id was given")
    return int(chosen)


# --- resolving a name that is neither tiny nor a local folder -----------------------------------------

#: Seconds the reachability probe of the hub may take before the hub counts as unreachable.
HUB_PROBE_TIMEOUT_S = 5.0

_HUB_ID = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?")


def remote_model_source(name: str) -> str:
    """`name`, a Hugging Face hub id, once it is certain that `from_pretrained` can get it: a copy is in the
    local cache, or the hub answers. Otherwise one `PluginError` naming the id, why, and what to do, in
    seconds rather than after minutes of retries (`HF_HUB_OFFLINE` set, or the hub unreachable within
    `HUB_PROBE_TIMEOUT_S`). A cached copy with the hub unreachable is used offline.

    Backends call it at the end of `resolve`, for names that are not tiny models nor existing folders."""
    from vlmft_cli.errors import PluginError

    if name.startswith(("/", "./", "../", "~", "\\")) or "\\" in name:
        raise PluginError(f"model folder {name} does not exist (nor is it a hub id)")
    if not _HUB_ID.fullmatch(name) or "--" in name or ".." in name or len(name) > 96:
        raise PluginError(f"model {name!r} is neither a folder here nor a Hugging Face hub id (org/name)")
    import huggingface_hub
    from huggingface_hub import constants

    cached = isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str)
    offline = bool(getattr(constants, "HF_HUB_OFFLINE", False))
    if offline:
        problem = None if cached else "HF_HUB_OFFLINE is set"
    else:
        problem = hub_unreachable()
        if problem and cached:
            _go_offline(f"the Hugging Face hub cannot be reached ({problem}): using the cached copy of {name}")
            problem = None
    if problem:
        raise PluginError(
            f"model {name} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and cannot be downloaded: {problem}",
            hint=f"download it where there is a network (`hf download {name} --local-dir DIR`) and pass --model DIR, "
            "or point HF_HOME at a cache that holds it",
        )
    return name


_probed: dict[str, str | None] = {}


def hub_unreachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the hub (`HF_ENDPOINT`) does not answer a HEAD request within `timeout_s`, or None when it
    answers (any HTTP status). Through huggingface_hub's own session, so proxies and endpoints apply;
    asked once per process."""
    import threading

    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    if endpoint in _probed:
        return _probed[endpoint]
    outcome: dict[str, str | None] = {}

    def probe() -> None:
        from huggingface_hub.utils import get_session

        try:
            get_session().head(endpoint, timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer means unreachable
            outcome["problem"] = f"{endpoint}: {' '.join(str(exc).split())[:200] or type(exc).__name__}"
        else:
            outcome["problem"] = None

    thread = threading.Thread(target=probe, name="vlmft-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    problem = outcome.get("problem", f"{endpoint} did not answer within {timeout_s:g} s")
    _probed[endpoint] = problem
    return problem


def _go_offline(message: str) -> None:
    """Make huggingface_hub (and transformers, which asks it) use the cache only, for this process and its
    children, so loading a cached model does not wait on retries."""
    import os
    import warnings

    from huggingface_hub import constants

    from vlmft_cli.errors import VlmftWarning

    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    warnings.warn(message, VlmftWarning, stacklevel=3)
