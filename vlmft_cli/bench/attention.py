"""`vlmft bench attention`: every registered attention backend's kernel, timed as training calls it.

Each backend available here (found through `vlmft_cli.plugins`, never by name) is called the way a
transformers model calls it: the function `ALL_ATTENTION_FUNCTIONS` holds for its `attn_implementation`
(transformers' eager function for `eager`), on query/key/value of the language model's head layout
(grouped-query: fewer key/value heads), with each mask training hands that implementation:

- `causal`: an unpadded batch, the mask transformers' `create_causal_mask` builds (None for sdpa, which
  then runs `is_causal`; a 4-D additive mask for eager; a `BlockMask` for flex);
- `shared-prefix`: one stage-1 packed row `[prefix][QA 1]…[QA 4]` (RoboVQA's ~3.6 QAs per video, blocks
  of `QA_BLOCK` tokens, the frames' prefix the rest), its mask made by a model backend's own
  `collate_packed` and `attention_masks.with_block_mask`, exactly as training builds it;
- `padded`: a right-padded batch of two rows (the second a quarter shorter), through `create_causal_mask`.

Per case: forward latency (and forward + backward with `backward`) after warm-up, as median, min, max and
interquartile range; the peak memory of one call beyond its inputs; and TFLOP/s of the attended pairs the
mask allows. Backends that cannot run here are listed with their reason, and a case that fails (out of
memory, an unsupported dtype) is recorded with its error instead of stopping the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from vlmft_cli import plugins
from vlmft_cli.bench.architecture import HeadLayout
from vlmft_cli.bench.device import device_info, resolve_device, synchronizer
from vlmft_cli.bench.flops import causal_pairs, packed_pairs
from vlmft_cli.bench.memory import PeakMemory
from vlmft_cli.bench.results import BenchDocument, Entry, significant
from vlmft_cli.bench.timing import Stats, repeat_timed
from vlmft_cli.errors import ConfigError
from vlmft_cli.reporting import NullReporter, Reporter

DEFAULT_SEQ_LENS = (1024, 2048, 4096, 8192)
MASKS = ("causal", "shared-prefix", "padded")
#: Tokens of one stage-1 QA block (question, answer, chat markup) and QAs per packed row, RoboVQA-like.
QA_BLOCK = 36
QAS_PER_ROW = 4
#: FlashAttention's benchmark convention: backward = 2.5 × forward (five matmuls, scores recomputed).
BACKWARD_FLOP_FACTOR = 2.5
FLOPS_NOTE = (
    "attention FLOPs: forward 4·H·D per (query, key) pair the mask allows (QKᵀ and PV): causal T(T+1)/2 per row, "
    "shared-prefix P(P+1)/2 + Σ blocks (b·P + b(b+1)/2), padded Σ rows L(L+1)/2; "
    f"forward+backward = forward × {1 + BACKWARD_FLOP_FACTOR} (FlashAttention's convention); TFLOP/s from median times"
)
MEMORY_NOTE = (
    "peak_memory_mib: growth of CUDA max-allocated memory over the inputs during one call; on the CPU the growth of "
    "the resident set's high-water mark after returning freed heap to the system (approximate: allocator caches remain)"
)


@dataclass(frozen=True)
class AttentionOptions:
    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS
    batch: int = 1
    dtype: str | None = None  # None: bf16 on CUDA, fp32 on the CPU
    backward: bool = False
    masks: tuple[str, ...] = MASKS
    repeats: int = 10
    warmup: int = 3
    device: str = "auto"
    seed: int = 0


@dataclass(frozen=True)
class Kernel:
    """An available backend's attention function."""

    name: str
    attn_implementation: str
    function: Callable[..., Any]


def attention_function(attn_implementation: str) -> Callable[..., Any] | None:
    """What a transformers model calls for `attn_implementation`, or None if transformers has nothing."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.llama.modeling_llama import eager_attention_forward

    if attn_implementation == "eager":
        return eager_attention_forward
    if attn_implementation not in ALL_ATTENTION_FUNCTIONS:
        return None
    return ALL_ATTENTION_FUNCTIONS.get_interface(attn_implementation, eager_attention_forward)


def discover_kernels() -> tuple[list[Kernel], list[dict[str, str]]]:
    """(the kernels of every available attention backend, the unavailable ones with their reasons)."""
    kernels: list[Kernel] = []
    unavailable: list[dict[str, str]] = []
    for info in plugins.discover("attention"):
        if info.broken:
            unavailable.append({"name": info.name, "reason": f"plugin failed to load: {info.error}"})
            continue
        backend = info.obj
        status = backend.availability()
        if not status.available:
            unavailable.append({"name": info.name, "reason": status.reason})
            continue
        backend.setup()
        function = attention_function(backend.attn_implementation)
        if function is None:
            unavailable.append({"name": info.name, "reason": f"transformers has no attention function {backend.attn_implementation!r}"})
            continue
        kernels.append(Kernel(info.name, backend.attn_implementation, function))
    return kernels, unavailable


def parse_seq_lens(text: str) -> tuple[int, ...]:
    """"512,1024" → (512, 1024); positive integers only."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--seq-lens takes comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError("--seq-lens needs at least one positive length")
    return values


def default_dtype(device: str) -> str:
    return "bf16" if device == "cuda" else "fp32"


def parse_masks(text: str) -> tuple[str, ...]:
    """"causal,padded" → ("causal", "padded"); names from MASKS only."""
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [value for value in values if value not in MASKS]
    if not values or unknown:
        raise ConfigError(f"--masks takes a comma-separated list of {', '.join(MASKS)}, not {text!r}")
    return values


def pair_flops(layout: HeadLayout, pairs: int) -> float:
    """Forward FLOPs of attention over `pairs` allowed (query, key) pairs (see FLOPS_NOTE)."""
    return 4.0 * layout.heads * layout.head_dim * pairs


def causal_flops(batch: int, layout: HeadLayout, seq_len: int) -> float:
    """Forward FLOPs of causal attention over `batch` unpadded rows (see FLOPS_NOTE)."""
    return pair_flops(layout, batch * causal_pairs(seq_len))


def row_layout(seq_len: int) -> tuple[int, tuple[int, ...]]:
    """(prefix, blocks) of a shared-prefix row of `seq_len` tokens: `QAS_PER_ROW` blocks of `QA_BLOCK`
    tokens (fewer tokens each in short rows), the prefix the rest."""
    block = max(1, min(QA_BLOCK, seq_len // (4 * QAS_PER_ROW)))
    return seq_len - QAS_PER_ROW * block, (block,) * QAS_PER_ROW


def padded_lengths(seq_len: int, batch: int) -> list[int]:
    """Row lengths of the padded case: the first row full, the second a quarter shorter, and so on."""
    return [max(1, seq_len - row * (seq_len // 4)) for row in range(max(2, batch))]


def _packing_backends(prefer: Any) -> list[Any]:
    """Model backends that can pack, `prefer` (the layout's backend, or None) first."""
    from vlmft_cli.pipeline.packing import PACKING_METHODS

    found = [backend for backend in plugins.loaded("models") if all(callable(getattr(backend, name, None)) for name in PACKING_METHODS)]
    return sorted(found, key=lambda backend: backend is not prefer)


def shared_prefix_mask(kernel: Kernel, seq_len: int, device: str, dtype: Any, prefer: Any = None) -> tuple[Any, str]:
    """(the mask training hands `kernel` for one packed row of `seq_len` tokens, the model backend that
    collated it): the backend's `collate_packed` on a row with the packed layout, then `with_block_mask`."""
    import torch

    from vlmft_cli.attention_masks import MASK_IDS_KEY, with_block_mask
    from vlmft_cli.model_backend import IGNORE_INDEX, EncodedSample, PackedLayout

    prefix, blocks = row_layout(seq_len)
    sample = EncodedSample(
        input_ids=torch.zeros(seq_len, dtype=torch.long),
        labels=torch.full((seq_len,), IGNORE_INDEX, dtype=torch.long),
        pixel_values=torch.zeros((0, 3, 1, 1)),
        num_image_tokens=0,
        packed=PackedLayout(prefix, blocks),
    )
    problems = []
    for backend in _packing_backends(prefer):
        if not backend.supports_block_mask(kernel.attn_implementation):
            problems.append(f"{backend.name}: no block mask with {kernel.attn_implementation}")
            continue
        try:
            batch = backend.collate_packed([sample], 0, kernel.attn_implementation, dtype)
        except Exception as exc:  # a backend whose collate needs real media fields: try the next one
            problems.append(f"{backend.name}: {type(exc).__name__}: {exc}")
            continue
        keep = {key: value.to(device) for key, value in batch.items() if key in ("attention_mask", MASK_IDS_KEY)}
        return with_block_mask(keep).get("attention_mask"), backend.name
    raise ConfigError(f"no model backend builds a shared-prefix mask for {kernel.attn_implementation} ({'; '.join(problems) or 'none can pack'})")


def _caller(kernel: Kernel, layout: HeadLayout, training: bool) -> Any:
    """The stand-in for a model's attention module: the attributes attention functions read from it."""
    import torch
    from transformers import PretrainedConfig

    config = PretrainedConfig()
    config._attn_implementation = kernel.attn_implementation
    module = torch.nn.Module()
    module.config = config
    module.is_causal = True
    module.layer_idx = 0
    module.num_key_value_groups = layout.heads // layout.kv_heads
    module.scaling = layout.head_dim**-0.5
    module.train(training)
    return module


def _mask(kernel: Kernel, name: str, module: Any, seq_len: int, batch: int, device: str, dtype: Any, prefer: Any) -> tuple[Any, int, int, str]:
    """(the mask for case `name`, rows, allowed pairs, where it came from)."""
    import torch
    from transformers.masking_utils import create_causal_mask

    if name == "shared-prefix":
        mask, source = shared_prefix_mask(kernel, seq_len, device, dtype, prefer)
        prefix, blocks = row_layout(seq_len)
        return mask, 1, packed_pairs(prefix, blocks), f"{source}.collate_packed, prefix {prefix} + {len(blocks)} blocks of {blocks[0]}"
    lengths = padded_lengths(seq_len, batch) if name == "padded" else [seq_len] * batch
    padding = torch.zeros((len(lengths), seq_len), device=device, dtype=torch.long)
    for row, length in enumerate(lengths):
        padding[row, :length] = 1
    mask = create_causal_mask(
        config=module.config,
        inputs_embeds=torch.empty((len(lengths), seq_len, 1), device=device, dtype=dtype),
        attention_mask=padding,
        position_ids=torch.arange(seq_len, device=device).expand(len(lengths), seq_len),
        **_no_cache(create_causal_mask),
    )
    return mask, len(lengths), sum(causal_pairs(length) for length in lengths), f"create_causal_mask, rows of {', '.join(map(str, lengths))} tokens"


def _no_cache(function: Any) -> dict[str, None]:
    """The keyword for "no KV cache": `cache` in recent transformers (5.24), `past_key_values` in older ones (5.17, on the H200)."""
    import inspect

    return {"cache": None} if "cache" in inspect.signature(function).parameters else {"past_key_values": None}


def _describe(mask: Any) -> str:
    import torch

    if mask is None:
        return "none (is_causal)"
    if torch.is_tensor(mask):
        return f"{tuple(mask.shape)} {mask.dtype}"
    return type(mask).__name__


def _case(kernel: Kernel, layout: HeadLayout, seq_len: int, mask_name: str, options: AttentionOptions, device: str, dtype_name: str, prefer: Any) -> Entry:
    import torch

    from vlmft_cli.runtime import dtype_for

    dtype = dtype_for(dtype_name)
    torch.manual_seed(options.seed)
    module = _caller(kernel, layout, options.backward)
    mask, batch, pairs, source = _mask(kernel, mask_name, module, seq_len, options.batch, device, dtype, prefer)
    shape_q, shape_kv = (batch, layout.heads, seq_len, layout.head_dim), (batch, layout.kv_heads, seq_len, layout.head_dim)
    query = torch.randn(shape_q, device=device, dtype=dtype, requires_grad=options.backward)
    key = torch.randn(shape_kv, device=device, dtype=dtype, requires_grad=options.backward)
    value = torch.randn(shape_kv, device=device, dtype=dtype, requires_grad=options.backward)

    def forward() -> Any:
        return kernel.function(module, query, key, value, mask, dropout=0.0, scaling=module.scaling)[0]

    sync = synchronizer(device)
    grad_output = torch.randn((batch, seq_len, layout.heads, layout.head_dim), device=device, dtype=dtype)

    def forward_backward() -> None:
        torch.autograd.grad(forward(), (query, key, value), grad_output)

    measured = forward_backward if options.backward else forward
    with torch.set_grad_enabled(options.backward):
        forward_s = Stats.of(repeat_timed(forward, warmup=options.warmup, repeats=options.repeats, synchronize=sync))
        both_s = Stats.of(repeat_timed(forward_backward, warmup=options.warmup, repeats=options.repeats, synchronize=sync)) if options.backward else None
        with PeakMemory(device) as peak:
            measured()
            sync()
    flops = pair_flops(layout, pairs)
    metrics: dict[str, float | None] = {**_stat_metrics("forward_ms", forward_s), "forward_tflops": significant(flops / forward_s.median / 1e12)}
    if both_s is not None:
        metrics.update(_stat_metrics("forward_backward_ms", both_s))
        metrics["forward_backward_tflops"] = significant(flops * (1 + BACKWARD_FLOP_FACTOR) / both_s.median / 1e12)
    growth = peak.reading.growth_mib
    metrics["peak_memory_mib"] = None if growth is None else round(growth, 1)
    details = {"memory": peak.reading.as_dict(), "mask": _describe(mask), "mask_source": source, "rows": batch, "allowed_pairs": pairs}
    return Entry(key=_key(kernel, layout, seq_len, mask_name, options, dtype_name), metrics=metrics, details=details)


def _stat_metrics(prefix: str, seconds: Stats) -> dict[str, float | None]:
    ms = seconds.scaled(1000)
    return {f"{prefix}_median": round(ms.median, 4), f"{prefix}_min": round(ms.min, 4), f"{prefix}_max": round(ms.max, 4), f"{prefix}_iqr": round(ms.iqr, 4)}


def _key(kernel: Kernel, layout: HeadLayout, seq_len: int, mask: str, options: AttentionOptions, dtype_name: str) -> dict[str, Any]:
    return {"backend": kernel.name, "mask": mask, "seq_len": seq_len, "batch": options.batch, **layout.as_dict(), "dtype": dtype_name, "backward": options.backward}


def _failed(kernel: Kernel, layout: HeadLayout, seq_len: int, mask: str, options: AttentionOptions, dtype_name: str, error: Exception) -> Entry:
    message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return Entry(key=_key(kernel, layout, seq_len, mask, options, dtype_name), metrics={}, details={"error": message})


def run_attention_bench(layout: HeadLayout, options: AttentionOptions, *, layout_source: str, model_backend: Any = None, reporter: Reporter | None = None) -> BenchDocument:
    """Time every available attention backend with every mask at every sequence length; see the module
    docstring. `model_backend` (the layout's, when known) builds the shared-prefix mask first."""
    import torch

    reporter = reporter or NullReporter()
    device = resolve_device(options.device)
    dtype_name = options.dtype or default_dtype(device)
    kernels, unavailable = discover_kernels()
    document = BenchDocument(
        bench="attention",
        device=device_info(device),
        parameters={**asdict(options), "seq_lens": list(options.seq_lens), "masks": list(options.masks), "device": device, "dtype": dtype_name, "layout": layout.as_dict(), "layout_source": layout_source},
        unavailable=unavailable,
        notes={
            "kernel": "transformers' ALL_ATTENTION_FUNCTIONS[attn_implementation] (eager: transformers' eager_attention_forward), as a model calls it",
            "mask": "causal and padded: transformers.masking_utils.create_causal_mask for the implementation; shared-prefix: a model backend's "
            f"collate_packed on one packed row ({QAS_PER_ROW} blocks of up to {QA_BLOCK} tokens after the prefix) and attention_masks.with_block_mask",
            "flops": FLOPS_NOTE,
            "memory": MEMORY_NOTE,
        },
    )
    cases = [(kernel, mask, seq_len) for kernel in kernels for mask in options.masks for seq_len in options.seq_lens]
    with reporter.progress("bench attention", total=len(cases), unit="cases") as task:
        for kernel, mask, seq_len in cases:
            try:
                entry = _case(kernel, layout, seq_len, mask, options, device, dtype_name, model_backend)
            except Exception as exc:  # an OOM or an unsupported dtype ends this case, not the run
                entry = _failed(kernel, layout, seq_len, mask, options, dtype_name, exc)
                reporter.warning(f"{kernel.name} ({mask}) at {seq_len} tokens failed: {entry.details['error']}")
                if device == "cuda":
                    torch.cuda.empty_cache()
            document.entries.append(entry)
            task.advance(backend=kernel.name, mask=mask, seq_len=seq_len)
    return document
