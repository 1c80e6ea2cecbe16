"""bench attention on the CPU with tiny sizes: every available backend timed through transformers'
attention functions with the masks training uses (causal, the stage-1 shared-prefix block mask, padded),
unavailable ones listed with their reasons."""

import pytest

from bench.fakes import OffAttention, UnknownKernelAttention, register
from vlmft_cli.bench.architecture import HeadLayout
from vlmft_cli.bench.attention import (
    AttentionOptions,
    Kernel,
    attention_function,
    parse_masks,
    parse_seq_lens,
    run_attention_bench,
    shared_prefix_mask,
)
from vlmft_cli.errors import ConfigError

LAYOUT = HeadLayout(heads=4, kv_heads=2, head_dim=32)


def test_kernels_are_transformers_own_functions():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.llama.modeling_llama import eager_attention_forward

    assert attention_function("sdpa") is ALL_ATTENTION_FUNCTIONS["sdpa"]
    assert attention_function("eager") is eager_attention_forward
    assert attention_function("no_such_attention") is None


def _allowed_pairs(mask: str, seq_len: int) -> int:
    """By hand: causal T(T+1)/2; padded rows of T and 3T/4 tokens; shared-prefix: the training mask's
    True entries for the benchmark's row (4 blocks of T/16 tokens after the prefix)."""
    from vlmft_internvl3.block_mask import batch_block_mask

    if mask == "causal":
        return seq_len * (seq_len + 1) // 2
    if mask == "padded":
        short = seq_len * 3 // 4
        return seq_len * (seq_len + 1) // 2 + short * (short + 1) // 2
    block = seq_len // 16
    dense, _ = batch_block_mask([(seq_len - 4 * block, (block,) * 4)], seq_len, "sdpa")
    return int(dense.sum())


def test_every_available_backend_with_every_mask_at_every_length(monkeypatch):
    register(monkeypatch, "attention", UnknownKernelAttention(), OffAttention(), broken="broken-kernel")
    options = AttentionOptions(seq_lens=(64, 128), dtype="fp32", backward=True, repeats=3, warmup=1, device="cpu")
    document = run_attention_bench(LAYOUT, options, layout_source="test").as_dict()
    assert document["bench"] == "attention" and document["device"]["device"] == "cpu" and document["device"]["torch"]
    assert document["parameters"]["layout"] == {"heads": 4, "kv_heads": 2, "head_dim": 32}
    measured = {(e["key"]["backend"], e["key"]["mask"], e["key"]["seq_len"]): e for e in document["entries"]}
    assert set(measured) == {(b, m, t) for b in ("eager", "sdpa") for m in ("causal", "shared-prefix", "padded") for t in (64, 128)}
    for (_, mask, seq_len), entry in measured.items():
        m = entry["metrics"]
        assert 0 < m["forward_ms_min"] <= m["forward_ms_median"] <= m["forward_ms_max"] and m["forward_ms_iqr"] >= 0
        assert 0 < m["forward_backward_ms_min"] <= m["forward_backward_ms_median"] <= m["forward_backward_ms_max"]
        pairs = _allowed_pairs(mask, seq_len)
        assert entry["details"]["allowed_pairs"] == pairs
        assert m["forward_tflops"] == pytest.approx(4 * 4 * 32 * pairs / m["forward_ms_median"] / 1e9, rel=0.01)
        assert m["peak_memory_mib"] is None or m["peak_memory_mib"] >= 0
        assert entry["details"]["memory"]["kind"] in ("rss_peak", "n/a")
    assert measured[("eager", "causal", 64)]["details"]["mask"].startswith("(1, 1, 64, 64)")  # eager gets transformers' 4-D mask
    assert measured[("sdpa", "causal", 64)]["details"]["mask"] == "none (is_causal)"
    assert measured[("sdpa", "padded", 64)]["details"]["mask"] == "(2, 1, 64, 64) torch.bool"
    assert measured[("sdpa", "shared-prefix", 64)]["details"]["mask_source"].startswith("internvl3.collate_packed")
    reasons = {item["name"]: item["reason"] for item in document["unavailable"]}
    assert "flash_attn is not installed" in reasons["flash-attn-sm121"]
    assert reasons["off"] == "switched off for the test"
    assert "no attention function 'no_such_attention'" in reasons["no-such-kernel"]
    assert "failed to load" in reasons["broken-kernel"]


def test_the_shared_prefix_mask_is_the_one_training_builds():
    import torch

    from vlmft_internvl3 import InternVL3Backend
    from vlmft_internvl3.block_mask import batch_block_mask

    kernel = Kernel("sdpa", "sdpa", attention_function("sdpa"))
    mask, source = shared_prefix_mask(kernel, 64, "cpu", torch.float32, InternVL3Backend())
    expected, _ = batch_block_mask([(48, (4, 4, 4, 4))], 64, "sdpa")
    assert source == "internvl3" and torch.equal(mask, expected)


def test_failed_case_is_recorded_not_raised():
    options = AttentionOptions(seq_lens=(32,), masks=("causal",), dtype="fp32", repeats=1, warmup=0, device="cpu")
    document = run_attention_bench(HeadLayout(4, 2, 8), options, layout_source="test")
    assert all(entry.metrics["forward_ms_median"] > 0 for entry in document.entries)
    odd = HeadLayout.__new__(HeadLayout)  # bypass validation: 3 query heads over 2 KV heads cannot run
    object.__setattr__(odd, "heads", 3), object.__setattr__(odd, "kv_heads", 2), object.__setattr__(odd, "head_dim", 8)
    failed = run_attention_bench(odd, options, layout_source="test")
    assert failed.entries and all("error" in entry.details and entry.metrics == {} for entry in failed.entries)


def test_sequence_lengths_and_masks_are_parsed():
    assert parse_seq_lens("512, 1024,4096") == (512, 1024, 4096)
    for bad in ("", "12,x", "0,16"):
        with pytest.raises(ConfigError):
            parse_seq_lens(bad)
    assert parse_masks("padded, causal") == ("padded", "causal")
    for bad in ("", "causal,diagonal"):
        with pytest.raises(ConfigError, match="--masks"):
            parse_masks(bad)
