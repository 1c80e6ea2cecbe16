"""Frames → Qwen video inputs without a video processor: patches, grid, and the chunks' timestamps.

Qwen's video processors need torchvision; this builds the same layout from the PIL image processor.
Each frame is resized (the image processor's resampling) to the processor's square `frame_size`, then
rescaled, normalised and cut into patches by the image processor itself. A Qwen video patch covers
`temporal_patch_size` consecutive frames, so the frames are paired: patch rows are chunk by chunk in the
image processor's spatial order, each row holding (channel, frame-in-chunk, row, column) values, which
is exactly the video processor's `patchify`. An odd number of frames repeats the last frame, the video
processor's rule.

Timestamps follow transformers' `Qwen3VLProcessor._calculate_timestamps`: frame k of the given frames is
at k / fps seconds, the index list is padded with the last frame like the pixels, and a chunk's time is
the mean of its first and last frame's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image as PILImage
from PIL.Image import Image

from vlmft_qwen_vl.processor import QwenVLProcessor


@dataclass
class VideoInputs:
    """`pixel_values_videos` (chunks × grid_h × grid_w rows) and `video_grid_thw` (1, 3) of one video."""

    pixel_values_videos: torch.Tensor
    video_grid_thw: torch.Tensor


def padded_frame_indices(num_frames: int, temporal_patch_size: int) -> list[int]:
    """Indices of the frames the model sees: all of them, then the last repeated to fill the last chunk."""
    indices = list(range(num_frames))
    if num_frames and num_frames % temporal_patch_size:
        indices += [num_frames - 1] * (temporal_patch_size - num_frames % temporal_patch_size)
    return indices


def chunk_timestamps(num_frames: int, fps: float, temporal_patch_size: int) -> list[float]:
    """Seconds of each temporal chunk of `num_frames` frames given at `fps` frames per second."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    times = [index / fps for index in padded_frame_indices(num_frames, temporal_patch_size)]
    return [
        (times[start] + times[start + temporal_patch_size - 1]) / 2
        for start in range(0, len(times), temporal_patch_size)
    ]


def resize_frames(processor: QwenVLProcessor, frames: Sequence[Image]) -> list[Image]:
    """RGB frames at `frame_size` × `frame_size`, resampled as the image processor would."""
    side = processor.frame_size
    resample = PILImage.Resampling(int(processor.image_processor.resample))
    resized = []
    for frame in frames:
        rgb = frame.convert("RGB")
        resized.append(rgb if rgb.size == (side, side) else rgb.resize((side, side), resample))
    return resized


def video_inputs(processor: QwenVLProcessor, frames: Sequence[Image]) -> VideoInputs:
    """The video inputs of `frames` (at least one), in the layout Qwen's vision tower reads."""
    if not frames:
        raise ValueError("a video needs at least one frame")
    temporal = processor.temporal_patch_size
    images = resize_frames(processor, frames)
    images = [images[index] for index in padded_frame_indices(len(images), temporal)]
    per_image = processor.image_processor(images=images, do_resize=False, return_tensors="np")["pixel_values"]
    side, patch = processor.grid_side, processor.patch_size
    rows = side * side
    # (frames, rows, channels, temporal copies of the image, patch, patch): keep one copy per frame.
    patches = np.asarray(per_image, dtype=np.float32).reshape(len(images), rows, 3, temporal, patch, patch)[:, :, :, 0]
    chunks = len(images) // temporal
    # (chunks, frame in chunk, rows, C, P, P) → (chunks, rows, C, frame in chunk, P, P)
    paired = patches.reshape(chunks, temporal, rows, 3, patch, patch).transpose(0, 2, 3, 1, 4, 5)
    values = torch.from_numpy(np.ascontiguousarray(paired).reshape(chunks * rows, 3 * temporal * patch * patch))
    return VideoInputs(
        pixel_values_videos=values, video_grid_thw=torch.tensor([[chunks, side, side]], dtype=torch.long)
    )
