"""The console reporter: progress on stderr in both modes, byte counts in human units."""

from __future__ import annotations

from vlmft_cli.cli import output


def test_format_bytes():
    assert [output.format_bytes(n) for n in (512, 1_500, 2_345_678, 3_210_000_000)] == ["512 B", "1.5 kB", "2.3 MB", "3.2 GB"]


def test_json_mode_keeps_progress_and_drops_messages(monkeypatch):
    monkeypatch.setattr(output, "PLAIN_PROGRESS_INTERVAL_S", 0.0)
    reporter = output.make_reporter(quiet=True)
    with output.err_console.capture() as captured:
        reporter.info("a message")
        with reporter.progress("bench packing", total=4, unit="steps") as task:
            task.advance(2)
    text = captured.get()
    assert "a message" not in text
    assert "bench packing: 2/4 steps" in text


def test_download_progress_is_in_megabytes_with_a_rate_and_an_eta(monkeypatch):
    monkeypatch.setattr(output, "PLAIN_PROGRESS_INTERVAL_S", 0.0)
    clock = iter([100.0, 102.0])
    monkeypatch.setattr(output.time, "monotonic", lambda: next(clock))
    task = output._PlainTask("Downloading", 4_000_000, output.BYTES)
    with output.err_console.capture() as captured:
        task.advance(1_000_000)  # 1 MB in 2 s: 0.5 MB/s, 3 MB left → 6 s
    assert captured.get().strip() == "Downloading: 1.0 MB of 4.0 MB (500.0 kB/s, ETA 6s)"
