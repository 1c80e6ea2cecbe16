"""bench extract: both measurements run on the same frames; the figures are consistent (not timed)."""

from __future__ import annotations

import pytest

from vlmft_cli.data.bench import TARGET_RATIO, run_extract_benchmark


def test_benchmark_measures_extract_and_the_bare_loop_on_the_same_frames(synth_source):
    result = run_extract_benchmark(str(synth_source), workers=1, size=32, limit=6, repeat=2)
    assert (result.records, result.frames, result.workers, result.repeat) == (10, 160, 1, 2)
    assert result.extract_s > 0 and result.loop_s > 0
    assert result.extract_frames_per_s == pytest.approx(result.frames / result.extract_s, rel=0.01)
    assert result.ratio == pytest.approx(result.extract_frames_per_s / result.loop_frames_per_s, abs=0.01)
    assert result.target_ratio == TARGET_RATIO and result.meets_target == (result.ratio >= TARGET_RATIO)
    assert 0 < result.peak_rss_worker_mib < result.peak_rss_total_mib and result.peak_rss_main_mib > 0
    assert set(result.as_dict()) >= {
        "extract_records_per_s",
        "loop_frames_per_s",
        "ratio",
        "meets_target",
        "peak_rss_total_mib",
    }
