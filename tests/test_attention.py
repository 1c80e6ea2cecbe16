from vlmft_cli.attention import select_attention
from vlmft_cli.reporting import RecordingReporter


def test_available_backend_is_selected():
    reporter = RecordingReporter()
    assert select_attention("eager", reporter).attn_implementation == "eager"
    assert reporter.warnings == []


def test_unavailable_backend_falls_back_to_sdpa_with_a_warning():
    reporter = RecordingReporter()
    backend = select_attention("flash-attn-sm121", reporter)
    assert backend.name == "sdpa" and backend.attn_implementation == "sdpa"
    assert len(reporter.warnings) == 1
    assert "flash-attn-sm121 is unavailable" in reporter.warnings[0] and "falling back to sdpa" in reporter.warnings[0]
