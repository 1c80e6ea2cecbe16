"""A user's video as the frames a sample would use: a folder of frames, a list of image files, or a video
file (decoded with PyAV). Frames are picked by the training sampler (`sample_frame_indices`, the final frame
always kept), resized as `data extract` resizes them (size×size, bicubic), and timed as training times
them (`sampled_fps`: the clip's rate divided by the sampling stride). Shared by `vlmft chat` and
`vlmft data import`."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlmft_cli.errors import DataError
from vlmft_cli.pipeline.examples import sampled_fps
from vlmft_cli.pipeline.frames import FrameSampling, sample_frame_indices

#: What a frames folder or an image list may hold.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
#: Containers PyAV is asked to decode.
VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v"})

#: `data extract --size` default: the frames training saw are this square.
DEFAULT_SIZE = 288

VideoInput = str | Path | Sequence[str | Path]


@dataclass(frozen=True)
class VideoFrames:
    """The frames chosen from a source, in frame order."""

    frames: list[Image.Image]
    indices: list[int]  # positions of `frames` among the source's frames
    fps: float | None  # rate of the chosen frames (None: unknown, the backend's default applies)
    source_frames: int  # frames in the source
    files: list[str] | None = None  # the image file of each chosen frame (None for a video file)
    source_fps: float | None = None  # the source's own rate (a video file's), before sampling


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _natural_key(name: str) -> list[int | str]:
    # frame_2.jpg before frame_10.jpg
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a frames folder, in frame order (numbers compared as numbers)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of frames")
    files = sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=lambda p: _natural_key(p.name))
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"{folder}: no frames in this folder (looked for {suffixes})")
    return files


def resize_frame(image: Image.Image, size: int | None) -> Image.Image:
    """RGB, size×size by bicubic resampling as `data extract` writes frames (unchanged when `size` is None)."""
    rgb = image.convert("RGB")
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return rgb


def _open_image(path: Path, size: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return resize_frame(image, size)
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError, …
        raise DataError(f"{path}: cannot read this image ({type(exc).__name__}: {exc})") from None


def _resolve(source: VideoInput) -> tuple[str, list[Path]]:
    """('video', [file]) or ('images', files in order)."""
    if isinstance(source, (str, Path)):
        items = [Path(source)]
    else:
        items = [Path(item) for item in source]
        if not items:
            raise DataError("no video given: pass a frames folder, image files or a video file")
    if len(items) == 1:
        path = items[0]
        if path.is_dir():
            return "images", frame_files(path)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if is_video_file(path):
            return "video", [path]
    for path in items:
        if path.is_dir() or is_video_file(path):
            raise DataError(f"{path}: a list of frames must hold image files only (one folder or one video file goes alone)")
        if not is_image_file(path):
            known = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
            raise DataError(f"{path}: unsupported file type {path.suffix or '(none)'!r} (use {known}, or a folder of frames)")
    return "images", items


def read_video(
    source: VideoInput,
    *,
    max_frames: int,
    sampling: FrameSampling | str = "uniform-last",
    size: int | None = DEFAULT_SIZE,
    fps: float | None = None,
) -> VideoFrames:
    """The frames a training sample of `source` would use. `fps` is the source's frame rate when the
    source does not carry one (frames folders and image lists; a video file's own rate wins unless given)."""
    kind, paths = _resolve(source)
    strategy = str(getattr(sampling, "value", sampling))
    if kind == "video":
        return _read_video_file(paths[0], max_frames=max_frames, sampling=strategy, size=size, fps=fps)
    indices = sample_frame_indices(len(paths), max_frames, strategy)  # type: ignore[arg-type]
    frames = [_open_image(paths[i], size) for i in indices]
    return VideoFrames(frames, indices, sampled_fps(fps, indices), len(paths), [str(paths[i]) for i in indices], fps)


def _read_video_file(path: Path, *, max_frames: int, sampling: str, size: int | None, fps: float | None) -> VideoFrames:
    import av  # only commands given a video file pay for the import

    def decode(wanted: set[int]) -> tuple[dict[int, Image.Image], int, float | None]:
        kept: dict[int, Image.Image] = {}
        count = 0
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: this file has no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else None
            for frame in container.decode(stream):
                if count in wanted:
                    kept[count] = resize_frame(frame.to_image(), size)
                count += 1
        return kept, count, rate

    def packets() -> int:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: this file has no video stream")
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)

    try:
        # Demuxing is cheap; the packet count is the frame count for the usual codecs. When decoding finds
        # another count, a second pass picks the frames again from the true count.
        estimate = packets()
        if estimate < 1:
            raise DataError(f"{path}: no frames in this video")
        indices = sample_frame_indices(estimate, max_frames, sampling)  # type: ignore[arg-type]
        kept, count, rate = decode(set(indices))
        if count != estimate:
            if count < 1:
                raise DataError(f"{path}: no frames decode in this video")
            indices = sample_frame_indices(count, max_frames, sampling)  # type: ignore[arg-type]
            kept, count, rate = decode(set(indices))
    except DataError:
        raise
    except Exception as exc:  # PyAV raises its own error family (InvalidDataError, …) and OSError
        raise DataError(f"{path}: cannot decode this video ({type(exc).__name__}: {exc})") from None
    clip_fps = fps if fps is not None else rate
    return VideoFrames([kept[i] for i in indices], indices, sampled_fps(clip_fps, indices), count, None, clip_fps)
