"""The training reader: valid lines become typed samples; hostile lines are rejected with their number."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vlmft_cli.data import schema
from vlmft_cli.data.schema import (
    Message,
    Rejection,
    Sample,
    TurnInfo,
    _plain_jpeg_size,
    image_file_problem,
    iter_samples,
    load_samples,
    stage1_lines,
    stage2_line,
)
from vlmft_cli.errors import DataError

QAS = [
    {
        "question": "put it down Q: satisfied?",
        "answer": "yes",
        "task_type": "success",
        "subtype": "True",
        "format": "binary",
        "frame_range": [0, 3],
    },
    {
        "question": "Q: what just happened?",
        "answer": "pick up the cup",
        "task_type": "past_description",
        "subtype": None,
        "format": "freeform",
        "frame_range": None,
    },
]


def _jpeg(size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 40, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header claiming width×height (no pixel data), written out by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "images" / "train-00000" / "v1"
    folder.mkdir(parents=True)
    for i in range(2):
        (folder / f"{i:02d}.jpg").write_bytes(_jpeg())
    (tmp_path / "outside.jpg").write_bytes(b"secret")
    return tmp_path / "data"


IMAGES = ["images/train-00000/v1/00.jpg", "images/train-00000/v1/01.jpg"]


def _write(path: Path, lines: list) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines), encoding="utf-8"
    )
    return path


def test_lines_built_by_extraction_read_back_as_typed_samples(root):
    path = _write(
        root / "s.jsonl",
        [*stage1_lines("v1", "vid/1", "train", IMAGES, QAS), stage2_line("v1", "vid/1", "train", IMAGES, QAS)],
    )
    loaded = load_samples(path, root)
    assert loaded.rejections == []
    first, second, whole = loaded.samples
    assert first == Sample(
        id="v1-0",
        images=tuple(IMAGES),
        conversations=(Message("human", "<image>\n<image>\nput it down Q: satisfied?"), Message("gpt", "yes")),
        video_id="vid/1",
        split="train",
        turns=(TurnInfo("success", "True", "binary", (0, 3)),),
        line=1,
    )
    assert second.turns == (TurnInfo("past_description", None, "freeform", None),) and second.line == 2
    assert whole.id == "v1" and len(whole.conversations) == 4 and len(whole.turns) == 2
    assert whole.questions == ["put it down Q: satisfied?", "Q: what just happened?"]
    assert whole.answers == ["yes", "pick up the cup"]
    assert whole.image_paths(root) == [root / image for image in IMAGES]


def _line(**changes) -> dict:
    line = stage2_line("v1", "vid", "train", IMAGES, QAS)
    for key, value in changes.items():
        line[key] = value
    return line


def _bad_lines(root: Path) -> list[tuple[object, str]]:
    outside_link = root / "images" / "train-00000" / "v1" / "link.jpg"
    outside_link.symlink_to(root.parent / "outside.jpg")
    escape_dir = root / "images" / "escape"
    escape_dir.symlink_to(root.parent, target_is_directory=True)
    two = _line()
    return [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ("", "empty line"),
        (_line(id=5), "'id' has the wrong type"),
        ({k: v for k, v in _line().items() if k != "images"}, "no 'images'"),
        (_line(images=[str(root / IMAGES[0]), IMAGES[1]]), "is absolute"),
        (_line(images=["images/../../outside.jpg", IMAGES[1]]), "climbs out"),
        (_line(images=["images/train-00000/v1/link.jpg", IMAGES[1]]), "symlink resolving outside"),
        (_line(images=["images/escape/outside.jpg", IMAGES[1]]), "resolves outside"),
        (_line(images=["images/train-00000/v1/09.jpg", IMAGES[1]]), "does not exist"),
        (_line(images=["images\\train-00000\\v1\\00.jpg", IMAGES[1]]), "backslash"),
        (_line(images=IMAGES[:1]), "1 images"),
        (_line(conversations=two["conversations"][1:]), "expected 'human'"),
        (_line(conversations=two["conversations"][:3]), "pairs"),
        (_line(conversations=[two["conversations"][0], {"from": "gpt", "value": "  "}]), "empty answer"),
        (_line(conversations=[two["conversations"][0], {"from": "gpt", "value": 3}]), "'value' has the wrong type"),
        (
            _line(conversations=[*two["conversations"][:3], {"from": "gpt", "value": "<image>"}]),
            "outside the first turn",
        ),
        (_line(metadata={"video_id": "vid", "split": "train", "turns": []}), "0 turn metadata entries"),
        (
            _line(
                metadata={
                    "video_id": "vid",
                    "split": "train",
                    "turns": [{"task_type": "x", "format": "y", "frame_range": [1]}] * 2,
                }
            ),
            "frame_range",
        ),
        (_line(metadata={"split": "train", "turns": two["metadata"]["turns"]}), "no 'video_id'"),
        (_line(metadata={"video_id": True, "split": "train", "turns": two["metadata"]["turns"]}), "wrong type"),
    ]


def test_hostile_lines_are_rejected_with_line_numbers_and_reasons(root):
    bad = _bad_lines(root)
    path = root / "bad.jsonl"
    _write(path, [_line(), *[line for line, _ in bad], _line()])
    rejections: list[Rejection] = []
    samples = list(iter_samples(path, root, rejections=rejections))
    assert [s.line for s in samples] == [1, len(bad) + 2]
    assert [r.line for r in rejections] == list(range(2, len(bad) + 2))
    for rejection, (_, reason) in zip(rejections, bad, strict=True):
        assert reason in rejection.reason, (rejection, reason)
        assert str(rejection).startswith(f"{path}:{rejection.line}: ")


def test_strict_mode_raises_naming_file_and_line(root):
    path = _write(root / "bad.jsonl", [_line(), _line(images=["/etc/passwd", IMAGES[1]])])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: .*absolute"):
        load_samples(path, root, strict=True)


def test_undecodable_bytes_reject_only_their_line(root):
    path = root / "mixed.jsonl"
    path.write_bytes(json.dumps(_line()).encode() + b"\n\xff\xfe broken\n" + json.dumps(_line()).encode() + b"\n")
    loaded = load_samples(path, root)
    assert [s.line for s in loaded.samples] == [1, 3]
    assert [(r.line, r.reason) for r in loaded.rejections] == [(2, "not UTF-8")]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"", "is empty (0 bytes)", id="zero-bytes"),
        pytest.param(b"this is a text file, not a frame\n", "is not a readable image", id="not-an-image"),
        pytest.param(_jpeg()[:40], "is not a readable image", id="cut-inside-the-header"),
        pytest.param(_png_header(0, 16), "is not a readable image", id="zero-width"),
        pytest.param(_png_header(20000, 20000), "is too large to decode", id="decompression-bomb"),
        pytest.param(_png_header(10000, 10000), "is 10000x10000, over the", id="over-the-pixel-limit"),
    ],
)
def test_a_frame_that_cannot_be_a_frame_rejects_its_lines_at_load(root, content, reason):
    (root / "images" / "train-00000" / "v1" / "bad.jpg").write_bytes(content)
    bad = ["images/train-00000/v1/bad.jpg", IMAGES[1]]
    path = _write(root / "s.jsonl", [_line(), _line(images=bad), _line(), _line(images=bad)])
    loaded = load_samples(path, root)
    assert [s.line for s in loaded.samples] == [1, 3]
    assert [r.line for r in loaded.rejections] == [2, 4]
    for rejection in loaded.rejections:
        assert str(rejection).startswith(f"{path}:{rejection.line}: image 'images/train-00000/v1/bad.jpg' {reason}")


def _jpeg_variants() -> list[bytes]:
    exif = Image.Exif()
    exif[0x010F] = "vlmft"  # Make: an APP1 segment before the frame header
    variants = []
    for image in (Image.new("RGB", (37, 21), (1, 2, 3)), Image.new("L", (5, 300)), Image.new("CMYK", (64, 48))):
        for options in ({}, {"progressive": True}, {"optimize": True, "quality": 30}, {"exif": exif.tobytes()}):
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", **options)
            variants.append(buffer.getvalue())
    return variants


def _pillow_opens(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return image.size is not None
    except Exception:  # noqa: BLE001
        return False


def test_the_quick_jpeg_header_reader_agrees_with_pillow(tmp_path):
    path = tmp_path / "frame.jpg"
    for data in _jpeg_variants():
        path.write_bytes(data)
        with Image.open(path) as image:
            expected = image.size
        assert _plain_jpeg_size(str(path)) in (expected, None)
        assert image_file_problem(str(path), len(data)) is None
    path.write_bytes(_jpeg((37, 21)))
    assert _plain_jpeg_size(str(path)) == (37, 21)  # what extraction writes takes the quick way
    # Cut anywhere up to the scan, a file is accepted exactly when Pillow can open it.
    data = _jpeg_variants()[3]
    for cut in range(1, data.index(b"\xff\xda") + 6):
        path.write_bytes(data[:cut])
        assert (image_file_problem(str(path), cut) is None) == _pillow_opens(path), cut


_VARIANTS = _jpeg_variants()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    variant=st.sampled_from(range(len(_VARIANTS))),
    changes=st.lists(st.tuples(st.integers(2, 700), st.integers(0, 255)), min_size=1, max_size=3),
    cut=st.none() | st.integers(1, 800),
)
def test_a_damaged_jpeg_header_is_accepted_exactly_when_pillow_opens_it(tmp_path, variant, changes, cut):
    data = bytearray(_VARIANTS[variant])
    header = data.index(b"\xff\xda") + 14
    for position, value in changes:
        data[position % header] = value
    data = bytes(data[:cut])
    path = tmp_path / "frame.jpg"
    path.write_bytes(data)
    assert (image_file_problem(str(path), len(data)) is None) == _pillow_opens(path)


def test_a_line_without_frames_is_rejected(root):
    no_frames = _line(
        images=[], conversations=[{"from": "human", "value": "Q: what now?"}, {"from": "gpt", "value": "go"}]
    )
    no_frames["metadata"] = {"video_id": "vid", "split": "train", "turns": [_line()["metadata"]["turns"][0]]}
    path = _write(root / "s.jsonl", [no_frames, _line()])
    loaded = load_samples(path, root)
    assert [s.line for s in loaded.samples] == [2]
    assert [(r.line, r.reason) for r in loaded.rejections] == [
        (1, "'images' is empty: a sample needs at least one frame")
    ]


def test_a_frame_shared_by_many_lines_has_its_header_read_once(root, monkeypatch):
    checked: list[str] = []

    def counting(path: str, size: int) -> str | None:
        checked.append(path)
        return image_file_problem(path, size)

    monkeypatch.setattr(schema, "image_file_problem", counting)
    path = _write(root / "s.jsonl", [_line()] * 50)
    assert len(load_samples(path, root).samples) == 50
    assert sorted(checked) == sorted(str((root / image).resolve()) for image in IMAGES)


def test_a_jsonl_file_linked_from_outside_the_data_root_is_refused_unread(root, tmp_path):
    outside = tmp_path / "elsewhere" / "train.jsonl"
    outside.parent.mkdir()
    _write(outside, [_line()])
    (root / "stage1").mkdir()
    (root / "stage1" / "train.jsonl").symlink_to(outside)
    with pytest.raises(DataError) as refused:
        load_samples(root / "stage1" / "train.jsonl", root)
    assert str(refused.value) == (
        f"{root / 'stage1' / 'train.jsonl'} resolves outside the data root {root.resolve()} "
        f"(to {outside.resolve()}): refused, not read"
    )
    linked_folder = root / "stage2"
    linked_folder.symlink_to(outside.parent, target_is_directory=True)  # a folder linked out: the same
    with pytest.raises(DataError, match="resolves outside the data root"):
        load_samples(linked_folder / "train.jsonl", root)
    (root / "inside.jsonl").symlink_to(_write(root / "real.jsonl", [_line()]))  # a link inside the root is fine
    assert len(load_samples(root / "inside.jsonl", root).samples) == 1


def test_existence_checks_can_be_skipped_but_never_path_safety(root):
    path = _write(
        root / "s.jsonl", [_line(images=["images/x/00.jpg", "images/x/01.jpg"]), _line(images=["../x.jpg", "y.jpg"])]
    )
    loaded = load_samples(path, root, check_images=False)
    assert [s.line for s in loaded.samples] == [1] and "climbs out" in loaded.rejections[0].reason


def test_a_missing_file_is_a_data_error(root):
    with pytest.raises(DataError, match="cannot read"):
        load_samples(root / "nope.jsonl", root)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.sampled_from(["<image>", "human", "gpt", "../x", "/etc/passwd"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "images",
                    "conversations",
                    "metadata",
                    "from",
                    "value",
                    "turns",
                    "video_id",
                    "split",
                    "task_type",
                    "format",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(
        json_values.map(json.dumps) | st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t), max_size=8
    )
)
def test_any_line_is_read_or_rejected_never_an_exception(root, lines):
    path = root / "fuzz.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    loaded = load_samples(path, root)
    assert len(loaded.samples) + len(loaded.rejections) == len(lines)
    assert all(
        os.path.realpath(root / image).startswith(str(root.resolve())) for s in loaded.samples for image in s.images
    )


def test_a_hand_written_line_without_metadata_reads_with_the_documented_defaults(root):
    line = {"id": "mine-1", "images": IMAGES, "conversations": _line()["conversations"]}
    for name, split in (("val.jsonl", "val"), ("anything.jsonl", "train")):
        (sample,) = load_samples(_write(root / name, [line]), root).samples
        assert sample.video_id == "images/train-00000/v1" and sample.split == split  # the frames' folder
        assert sample.turns == (TurnInfo("unknown", None, "freeform", None),) * 2
        assert sample.fps is None and not sample.metadata_given
    # Metadata with the video and split only: the task fields default, for every QA of the line.
    partial = {**line, "metadata": {"video_id": "v", "split": "val", "fps": 2.5}}
    (sample,) = load_samples(_write(root / "p.jsonl", [partial]), root).samples
    assert (sample.video_id, sample.split, sample.fps, sample.metadata_given) == ("v", "val", 2.5, True)
    assert [t.task_type for t in sample.turns] == ["unknown", "unknown"]
    bad = [{**partial, "metadata": {"video_id": "v", "split": "val", "fps": value}} for value in (0, -1, "2", True)]
    loaded = load_samples(_write(root / "b.jsonl", bad), root)
    assert loaded.samples == [] and [r.line for r in loaded.rejections] == [1, 2, 3, 4]
    assert all("'fps' must be a positive number" in r.reason for r in loaded.rejections)


def test_extraction_lines_carry_fps_only_when_known():
    assert "fps" not in stage2_line("v1", "vid", "train", IMAGES, QAS)["metadata"]
    assert [line["metadata"]["fps"] for line in stage1_lines("v1", "vid", "train", IMAGES, QAS, fps=1.5)] == [1.5, 1.5]
