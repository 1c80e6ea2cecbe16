"""Which of a clip's frames a sample uses. RoboVQA questions are about the final frame, so every
strategy keeps it (the reference run kept the first N and lost it)."""

from __future__ import annotations

from typing import Literal

FrameSampling = Literal["uniform-last", "last"]


def sample_frame_indices(num_frames: int, max_frames: int, strategy: FrameSampling = "uniform-last") -> list[int]:
    """Indices of the frames to use, ascending, always ending with the final frame.

    `uniform-last`: evenly spaced from the first to the final frame (16 → 4 gives 0, 5, 10, 15).
    `last`: the final `max_frames` frames.
    """
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    if max_frames >= num_frames:
        return list(range(num_frames))
    if strategy == "last":
        return list(range(num_frames - max_frames, num_frames))
    if strategy != "uniform-last":
        raise ValueError(f"unknown frame sampling strategy {strategy!r}")
    if max_frames == 1:
        return [num_frames - 1]
    step = (num_frames - 1) / (max_frames - 1)
    # step >= 1 here, so rounding never maps two positions onto one frame.
    return [round(i * step) for i in range(max_frames)]
