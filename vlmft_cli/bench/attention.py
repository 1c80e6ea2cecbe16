"""`vlmft bench attention`: every registered attention backend's kernel, timed as training calls it.

Each backend available here (found through `vlmft_cli.plugins`, never by name) is called the way a
transformers model calls it: the function `ALL_ATTENTION_FUNCTIONS` holds for its `attn_implementation`
(transformers' eager function for `eager`), on query/key/value of the language model's head layout
(grouped-query: fewer key/value heads), with the causal mask transformers' `create_causal_mask` builds
for that implementation from an unpadded batch (None for sdpa, which then runs `is_causal`; a 4-D additive
mask for eager). Per sequence length: forward latency (and forward + backward with `backward`) after
warm-up, as median, min, max and interquartile range; the peak memory of one call beyond its inputs; and
the achieved TFLOP/s. Backends that cannot run here are listed with their reason, and a case that fails
(out of memory, an unsupported dtype) is recorded with its error instead of stopping the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from vlmft_cli import plugins
from vlmft_cli.bench.architecture import HeadLayout
from vlmft_cli.bench.device import device_info, resolve_device, synchronizer
from vlmft_cli.bench.memory import PeakMemory
from vlmft_cli.bench.results import BenchDocument, Entry, significant
from vlmft_cli.bench.timing import Stats, repeat_timed
from vlmft_cli.errors import ConfigError
from vlmft_cli.reporting import NullReporter, Reporter

DEFAULT_SEQ_LENS = (512, 1024, 2048, 4096)
#: FlashAttention's benchmark convention: backward = 2.5 × forward (five matmuls, scores recomputed).
BACKWARD_FLOP_FACTOR = 2.5
FLOPS_NOTE = (
    "causal attention FLOPs: forward 4·B·H·T²·D × 0.5 (QKᵀ and PV, half the square under the causal mask); "
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


def causal_flops(batch: int, layout: HeadLayout, seq_len: int) -> float:
    """Forward FLOPs of causal attention (see FLOPS_NOTE)."""
    return 4 * batch * layout.heads * seq_len**2 * layout.head_dim * 0.5


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


def _case(kernel: Kernel, layout: HeadLayout, seq_len: int, options: AttentionOptions, device: str, dtype_name: str) -> Entry:
    import torch
    from transformers.masking_utils import create_causal_mask

    from vlmft_cli.runtime import dtype_for

    dtype, batch = dtype_for(dtype_name), options.batch
    torch.manual_seed(options.seed)
    module = _caller(kernel, layout, options.backward)
    shape_q, shape_kv = (batch, layout.heads, seq_len, layout.head_dim), (batch, layout.kv_heads, seq_len, layout.head_dim)
    query = torch.randn(shape_q, device=device, dtype=dtype, requires_grad=options.backward)
    key = torch.randn(shape_kv, device=device, dtype=dtype, requires_grad=options.backward)
    value = torch.randn(shape_kv, device=device, dtype=dtype, requires_grad=options.backward)
    mask = create_causal_mask(
        config=module.config,
        inputs_embeds=torch.empty((batch, seq_len, 1), device=device, dtype=dtype),
        attention_mask=torch.ones((batch, seq_len), device=device, dtype=torch.long),
        cache=None,
        position_ids=torch.arange(seq_len, device=device).expand(batch, seq_len),
    )

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
    flops = causal_flops(batch, layout, seq_len)
    metrics: dict[str, float | None] = {**_stat_metrics("forward_ms", forward_s), "forward_tflops": significant(flops / forward_s.median / 1e12)}
    if both_s is not None:
        metrics.update(_stat_metrics("forward_backward_ms", both_s))
        metrics["forward_backward_tflops"] = significant(flops * (1 + BACKWARD_FLOP_FACTOR) / both_s.median / 1e12)
    growth = peak.reading.growth_mib
    metrics["peak_memory_mib"] = None if growth is None else round(growth, 1)
    details = {"memory": peak.reading.as_dict(), "mask": "none (is_causal)" if mask is None else f"{tuple(mask.shape)} {mask.dtype}"}
    return Entry(key=_key(kernel, layout, seq_len, options, dtype_name), metrics=metrics, details=details)


def _stat_metrics(prefix: str, seconds: Stats) -> dict[str, float | None]:
    ms = seconds.scaled(1000)
    return {f"{prefix}_median": round(ms.median, 4), f"{prefix}_min": round(ms.min, 4), f"{prefix}_max": round(ms.max, 4), f"{prefix}_iqr": round(ms.iqr, 4)}


def _key(kernel: Kernel, layout: HeadLayout, seq_len: int, options: AttentionOptions, dtype_name: str) -> dict[str, Any]:
    return {"backend": kernel.name, "seq_len": seq_len, "batch": options.batch, **layout.as_dict(), "dtype": dtype_name, "backward": options.backward}


def _failed(kernel: Kernel, layout: HeadLayout, seq_len: int, options: AttentionOptions, dtype_name: str, error: Exception) -> Entry:
    message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return Entry(key=_key(kernel, layout, seq_len, options, dtype_name), metrics={}, details={"error": message})


def run_attention_bench(layout: HeadLayout, options: AttentionOptions, *, layout_source: str, reporter: Reporter | None = None) -> BenchDocument:
    """Time every available attention backend at every sequence length; see the module docstring."""
    import torch

    reporter = reporter or NullReporter()
    device = resolve_device(options.device)
    dtype_name = options.dtype or default_dtype(device)
    kernels, unavailable = discover_kernels()
    document = BenchDocument(
        bench="attention",
        device=device_info(device),
        parameters={**asdict(options), "seq_lens": list(options.seq_lens), "device": device, "dtype": dtype_name, "layout": layout.as_dict(), "layout_source": layout_source},
        unavailable=unavailable,
        notes={
            "kernel": "transformers' ALL_ATTENTION_FUNCTIONS[attn_implementation] (eager: transformers' eager_attention_forward), as a model calls it",
            "mask": "transformers.masking_utils.create_causal_mask for the implementation, from an unpadded batch",
            "flops": FLOPS_NOTE,
            "memory": MEMORY_NOTE,
        },
    )
    with reporter.progress("bench attention", total=len(kernels) * len(options.seq_lens), unit="cases") as task:
        for kernel in kernels:
            for seq_len in options.seq_lens:
                try:
                    entry = _case(kernel, layout, seq_len, options, device, dtype_name)
                except Exception as exc:  # an OOM or an unsupported dtype ends this case, not the run
                    entry = _failed(kernel, layout, seq_len, options, dtype_name, exc)
                    reporter.warning(f"{kernel.name} at {seq_len} tokens failed: {entry.details['error']}")
                    if device == "cuda":
                        torch.cuda.empty_cache()
                document.entries.append(entry)
                task.advance(backend=kernel.name, seq_len=seq_len)
    return document
