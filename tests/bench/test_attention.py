"""bench attention on the CPU with tiny sizes: every available backend timed through transformers'
attention functions, unavailable ones listed with their reasons."""

import pytest

from bench.fakes import OffAttention, UnknownKernelAttention, register
from vlmft_cli.bench.architecture import HeadLayout
from vlmft_cli.bench.attention import (
    AttentionOptions,
    attention_function,
    causal_flops,
    parse_seq_lens,
    run_attention_bench,
)
from vlmft_cli.errors import ConfigError

LAYOUT = HeadLayout(heads=4, kv_heads=2, head_dim=32)


def test_kernels_are_transformers_own_functions():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.llama.modeling_llama import eager_attention_forward

    assert attention_function("sdpa") is ALL_ATTENTION_FUNCTIONS["sdpa"]
    assert attention_function("eager") is eager_attention_forward
    assert attention_function("no_such_attention") is None


def test_every_available_backend_at_every_length(monkeypatch):
    register(monkeypatch, "attention", UnknownKernelAttention(), OffAttention(), broken="broken-kernel")
    options = AttentionOptions(seq_lens=(64, 128), dtype="fp32", backward=True, repeats=3, warmup=1, device="cpu")
    document = run_attention_bench(LAYOUT, options, layout_source="test").as_dict()
    assert document["bench"] == "attention" and document["device"]["device"] == "cpu" and document["device"]["torch"]
    assert document["parameters"]["layout"] == {"heads": 4, "kv_heads": 2, "head_dim": 32}
    measured = {(e["key"]["backend"], e["key"]["seq_len"]): e for e in document["entries"]}
    assert set(measured) == {("eager", 64), ("eager", 128), ("sdpa", 64), ("sdpa", 128)}
    for entry in measured.values():
        m = entry["metrics"]
        assert 0 < m["forward_ms_min"] <= m["forward_ms_median"] <= m["forward_ms_max"] and m["forward_ms_iqr"] >= 0
        assert 0 < m["forward_backward_ms_min"] <= m["forward_backward_ms_median"] <= m["forward_backward_ms_max"]
        assert m["forward_tflops"] == pytest.approx(causal_flops(1, LAYOUT, entry["key"]["seq_len"]) / m["forward_ms_median"] / 1e9, rel=0.01)
        assert m["peak_memory_mib"] is None or m["peak_memory_mib"] >= 0
        assert entry["details"]["memory"]["kind"] in ("rss_peak", "n/a")
    assert measured[("eager", 64)]["details"]["mask"].startswith("(1, 1, 64, 64)")  # eager gets transformers' 4-D mask
    assert measured[("sdpa", 64)]["details"]["mask"] == "none (is_causal)"
    reasons = {item["name"]: item["reason"] for item in document["unavailable"]}
    assert "flash_attn is not installed" in reasons["flash-attn-sm121"]
    assert reasons["off"] == "switched off for the test"
    assert "no attention function 'no_such_attention'" in reasons["no-such-kernel"]
    assert "failed to load" in reasons["broken-kernel"]


def test_failed_case_is_recorded_not_raised():
    options = AttentionOptions(seq_lens=(32,), dtype="fp32", repeats=1, warmup=0, device="cpu")
    document = run_attention_bench(HeadLayout(4, 2, 8), options, layout_source="test")
    assert all(entry.metrics["forward_ms_median"] > 0 for entry in document.entries)
    odd = HeadLayout.__new__(HeadLayout)  # bypass validation: 3 query heads over 2 KV heads cannot run
    object.__setattr__(odd, "heads", 3), object.__setattr__(odd, "kv_heads", 2), object.__setattr__(odd, "head_dim", 8)
    failed = run_attention_bench(odd, options, layout_source="test")
    assert failed.entries and all("error" in entry.details and entry.metrics == {} for entry in failed.entries)


def test_sequence_lengths_are_parsed():
    assert parse_seq_lens("512, 1024,4096") == (512, 1024, 4096)
    for bad in ("", "12,x", "0,16"):
        with pytest.raises(ConfigError):
            parse_seq_lens(bad)
