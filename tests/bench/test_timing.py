"""Timing helpers: summary statistics of known samples, warm-up and repeats, synchronisation."""

import pytest

from vlmft_cli.bench.timing import Stats, WallCpu, repeat_timed, timed


def test_stats_of_known_samples():
    stats = Stats.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats.median, stats.min, stats.max, stats.count) == (3.0, 1.0, 5.0, 5)
    assert (stats.q1, stats.q3, stats.iqr) == (2.0, 4.0, 2.0)
    assert Stats.of([0.25]).iqr == 0.0 and Stats.of([0.25]).median == 0.25
    ms = stats.scaled(1000)
    assert ms.median == 3000.0 and ms.iqr == pytest.approx(2000.0)
    assert stats.as_dict()["iqr"] == 2.0
    with pytest.raises(ValueError):
        Stats.of([])


def test_repeat_timed_warms_up_then_times_each_repeat_between_synchronisations():
    events = []
    samples = repeat_timed(lambda: events.append("call"), warmup=2, repeats=3, synchronize=lambda: events.append("sync"))
    assert len(samples) == 3 and all(s >= 0 for s in samples)
    assert events[:3] == ["call", "call", "sync"]  # warm-up is not timed
    assert events[3:] == ["sync", "call", "sync"] * 3  # every timed call between two synchronisations
    with pytest.raises(ValueError):
        repeat_timed(lambda: None, warmup=0, repeats=0)


def test_timed_records_wall_and_cpu_time():
    timings: list[WallCpu] = []
    with timed(timings):
        sum(i * i for i in range(200_000))
    assert len(timings) == 1 and timings[0].wall_s > 0 and timings[0].cpu_s > 0
