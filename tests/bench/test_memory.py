"""Peak memory of a region on the CPU: the resident set's high-water mark, reset at the start."""

import torch

from vlmft_cli.bench.memory import PeakMemory


def test_a_large_temporary_shows_as_growth():
    with PeakMemory("cpu") as quiet:
        pass
    with PeakMemory("cpu") as busy:
        block = torch.ones(64 * 2**20 // 4 * 3)  # 192 MiB, touched
        del block
    assert busy.reading.kind == quiet.reading.kind == "rss_peak"
    assert busy.reading.growth_mib > 150
    assert quiet.reading.growth_mib < 50
    assert busy.reading.as_dict()["peak_mib"] >= busy.reading.as_dict()["start_mib"]
