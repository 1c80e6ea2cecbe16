"""video_source: frames folders, image lists and video files give the frames training would sample."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from vlmft_cli.errors import DataError
from vlmft_cli.video_source import is_video_file, read_video

FRAMES = 16


def colour(i: int) -> tuple[int, int, int]:
    return (i * 16, 255 - i * 16, (i * 48) % 256)


def nearest_frame(image: Image.Image) -> int:
    mean = np.asarray(image, dtype=float).reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(mean - np.array(colour(i))).sum() for i in range(FRAMES)]))


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    # names that sort wrongly as text: frame_10 before frame_2
    for i in range(FRAMES):
        Image.new("RGB", (40, 30), colour(i)).save(folder / f"frame_{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    return folder


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 8)
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), colour(i), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_frames_folder_in_numeric_order_sampled_with_the_final_frame(frames_dir):
    video = read_video(frames_dir, max_frames=4, size=24)
    # 16 frames → 4, evenly from the first to the final: 0, 5, 10, 15 (worked by hand)
    assert video.indices == [0, 5, 10, 15]
    assert video.files == [str(frames_dir / f"frame_{i}.png") for i in (0, 5, 10, 15)]
    assert [f.getpixel((3, 3)) for f in video.frames] == [colour(i) for i in (0, 5, 10, 15)]
    assert all(f.size == (24, 24) for f in video.frames)
    assert video.source_frames == FRAMES and video.fps is None


def test_image_list_last_sampling_and_fps_from_the_stride(frames_dir):
    files = [frames_dir / f"frame_{i}.png" for i in range(0, FRAMES, 2)]  # 8 frames
    video = read_video(files, max_frames=3, sampling="last", size=None, fps=6.0)
    assert video.indices == [5, 6, 7]
    assert [f.getpixel((0, 0)) for f in video.frames] == [colour(i) for i in (10, 12, 14)]
    assert video.frames[0].size == (40, 30)
    assert video.fps == 6.0  # consecutive frames: stride 1
    spread = read_video(files, max_frames=3, fps=6.0, size=None)
    assert spread.indices == [0, 4, 7]  # round(i * 7/2)
    assert spread.fps == pytest.approx(6.0 / 3.5)


def test_mp4_frames_sampled_as_training_samples_them(mp4):
    assert is_video_file(mp4) and not is_video_file("a.png")
    video = read_video(mp4, max_frames=4, size=16)
    assert video.source_frames == FRAMES
    assert video.indices == [0, 5, 10, 15]
    assert [nearest_frame(f) for f in video.frames] == [0, 5, 10, 15]
    assert all(f.size == (16, 16) for f in video.frames)
    assert video.source_fps == pytest.approx(8.0)
    assert video.fps == pytest.approx(8.0 / 5)  # mean stride 15/3
    every = read_video(mp4, max_frames=32, size=None)
    assert [nearest_frame(f) for f in every.frames] == list(range(FRAMES))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no frames"),
        (lambda d: (d / "bad.mp4").write_bytes(b"not a video at all") and d / "bad.mp4", "cannot decode"),
        (lambda d: (d / "clip.gif.txt").write_text("x") and [d / "clip.gif.txt"], "unsupported file type"),
        (lambda d: (d / "broken.png").write_bytes(b"\x89PNG junk") and [d / "broken.png"], "cannot read this image"),
    ],
)
def test_bad_input_names_the_file(tmp_path, make, words):
    source = make(tmp_path)
    with pytest.raises(DataError) as caught:
        read_video(source, max_frames=4)
    message = str(caught.value)
    assert words in message and "\n" not in message
    named = source[0] if isinstance(source, list) else source
    assert str(named) in message
