"""Safe keys for video ids: one folder name, never a path, distinct ids never sharing a key."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from vlmft_cli.data.layout import frame_paths, safe_key, shard_id, subset_fraction, video_image_dir


def test_plain_ids_are_kept_as_they_are():
    assert safe_key("13090847508390728210") == "13090847508390728210"
    assert safe_key("ep_12.v2-a") == "ep_12.v2-a"


def test_unsafe_ids_become_one_safe_folder_name():
    for hostile in ("../../etc/passwd", "a/b", "a\\b", "..", ".", "", "/abs", "x\0y", "C:\\win", "a..b"):
        key = safe_key(hostile)
        assert key and key not in (".", "..") and ".." not in key
        assert "/" not in key and "\\" not in key and "\0" not in key
    assert safe_key("a/b") != safe_key("a_b") != safe_key("a\\b")


@settings(max_examples=300, deadline=None)
@given(video_id=st.text(max_size=200))
def test_any_id_gives_a_safe_deterministic_key(video_id):
    key = safe_key(video_id)
    assert key == safe_key(video_id)
    assert 0 < len(key) <= 96 and key not in (".", "..") and ".." not in key
    assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in key)


@given(first=st.text(max_size=40), second=st.text(max_size=40))
def test_distinct_ids_get_distinct_keys(first, second):
    if first != second:
        assert safe_key(first) != safe_key(second)


def test_an_id_spelled_like_a_hashed_key_never_takes_that_key():
    # `x y` becomes its cleaned form plus the first 10 hex digits of its sha1; the id that is exactly
    # that text is safe on disk, yet must get another folder.
    hashed = "x_y-" + hashlib.sha1(b"x y").hexdigest()[:10]
    assert safe_key("x y") == hashed
    assert safe_key(hashed) != hashed
    assert safe_key("id-" + hashlib.sha1(b"").hexdigest()[:10]) != safe_key("")
    # Ids that only look a little like it stay as they are.
    for plain in ("x_y-73DEC5934A", "x_y-73dec5934", "x_y-73dec5934ab", "run-0123456789-a", "a-b-c"):
        assert safe_key(plain) == plain


@settings(max_examples=300, deadline=None)
@given(video_id=st.text(max_size=80))
def test_no_id_is_spelled_like_the_key_of_another(video_id):
    key = safe_key(video_id)
    if key != video_id:  # `key` is also a possible id: it must map elsewhere
        assert safe_key(key) != key


def test_paths_are_relative_and_in_frame_order():
    folder = video_image_dir(shard_id("train", 3), "abc")
    assert folder == "images/train-00003/abc"
    assert frame_paths(folder, 3) == [
        "images/train-00003/abc/00.jpg",
        "images/train-00003/abc/01.jpg",
        "images/train-00003/abc/02.jpg",
    ]


def test_subset_fraction_is_stable_and_spread():
    fractions = [subset_fraction(str(i)) for i in range(2000)]
    assert fractions == [subset_fraction(str(i)) for i in range(2000)]
    assert all(0 <= f < 1 for f in fractions)
    assert 0.45 < sum(f < 0.5 for f in fractions) / len(fractions) < 0.55
