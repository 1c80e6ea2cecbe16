import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlmft_cli.pipeline.frames import sample_frame_indices


def test_reference_flaw_is_impossible_final_frame_kept():
    # The reference run kept frames 0..3 and lost frame 15, the one the questions are about.
    assert sample_frame_indices(16, 4) == [0, 5, 10, 15]
    assert sample_frame_indices(16, 10)[-1] == 15
    assert sample_frame_indices(16, 4, "last") == [12, 13, 14, 15]
    assert sample_frame_indices(16, 1) == [15]


def test_fewer_frames_than_asked_uses_them_all():
    assert sample_frame_indices(3, 10) == [0, 1, 2]


@given(num=st.integers(1, 64), keep=st.integers(1, 64), strategy=st.sampled_from(["uniform-last", "last"]))
def test_indices_are_distinct_ascending_and_end_at_the_final_frame(num, keep, strategy):
    indices = sample_frame_indices(num, keep, strategy)
    assert indices[-1] == num - 1
    assert indices == sorted(set(indices))
    assert len(indices) == min(num, keep)
    assert all(0 <= i < num for i in indices)


def test_bad_arguments():
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4)
    with pytest.raises(ValueError):
        sample_frame_indices(16, 0)
    with pytest.raises(ValueError):
        sample_frame_indices(16, 4, "first")  # type: ignore[arg-type]
