"""The length policy and turn handling, on the tiny InternVL3 backend and extracted synthetic data."""

import pytest

from vlmft_cli.backends import backend_for
from vlmft_cli.data.schema import iter_samples
from vlmft_cli.model_backend import IGNORE_INDEX
from vlmft_cli.pipeline.dataset import ExampleDataset
from vlmft_cli.pipeline.examples import build_examples, sample_turns, subset


@pytest.fixture(scope="module")
def backend_and_processor(vlmft_home):
    backend = backend_for("tiny-internvl3")
    return backend, backend.load_processor("tiny-internvl3", vlmft_home)


def stage_samples(data, stage):
    return list(iter_samples(data / f"stage{stage}" / "train.jsonl", data))


def test_stage2_trains_every_turn_with_frames_in_the_first(processed_data, backend_and_processor):
    backend, processor = backend_and_processor
    samples = [s for s in stage_samples(processed_data, 2) if len(s.turns) >= 3]
    examples, report = build_examples(samples, backend=backend, processor=processor, max_frames=10, frame_sampling="uniform-last", max_length=4096)
    assert report.rejected == 0 and report.turns_dropped == 0
    dataset = ExampleDataset(examples, processed_data, backend, processor)
    example, encoded = examples[0], dataset[0]
    # The reference run trained only the last turn: here every answer is labelled …
    assert len(encoded.answer_spans) == example.num_qas == len(samples[0].turns)
    labelled = encoded.labels != IGNORE_INDEX
    for (start, end), answer in zip(encoded.answer_spans, [t.text for t in example.turns[1::2]], strict=True):
        assert labelled[start:end].all()
        assert processor.tokenizer.decode(encoded.input_ids[start:end]).startswith(answer)
    # … and the frames sit in the first turn, before the first answer.
    image_id = processor.image_context_id
    image_positions = (encoded.input_ids == image_id).nonzero().flatten()
    assert len(image_positions) == 10 * processor.image_seq_length
    assert image_positions.max() < encoded.answer_spans[0][0]
    assert not labelled[image_positions].any()
    # The final frame is always among those used.
    assert example.images[-1] == samples[0].images[-1]


def test_too_long_conversations_lose_whole_trailing_turns(processed_data, backend_and_processor):
    backend, processor = backend_and_processor
    sample = max(stage_samples(processed_data, 2), key=lambda s: len(s.turns))
    lengths = backend.conversation_lengths(processor, 10, sample_turns(sample))
    limit = lengths[0]  # room for exactly the first QA
    examples, report = build_examples([sample], backend=backend, processor=processor, max_frames=10, frame_sampling="uniform-last", max_length=limit)
    assert report.examples_truncated == 1 and report.turns_dropped == len(lengths) - 1
    assert examples[0].num_qas == 1 and examples[0].length == limit
    encoded = ExampleDataset(examples, processed_data, backend, processor)[0]
    assert len(encoded) == limit
    assert (encoded.input_ids == processor.image_context_id).sum() == 10 * processor.image_seq_length  # frames intact


def test_frames_that_do_not_fit_reject_the_sample(processed_data, backend_and_processor):
    backend, processor = backend_and_processor
    samples = stage_samples(processed_data, 1)[:5]
    examples, report = build_examples(samples, backend=backend, processor=processor, max_frames=4, frame_sampling="uniform-last", max_length=40)
    assert examples == [] and report.rejected == 5 and report.rejected_ids == [s.id for s in samples]


def test_subset_keeps_whole_videos(processed_data):
    samples = stage_samples(processed_data, 1)
    chosen = subset(samples, 0.5, seed=3)
    videos = {s.video_id for s in chosen}
    assert 0 < len(videos) < len({s.video_id for s in samples})
    assert all(s in chosen for s in samples if s.video_id in videos)
    assert subset(samples, 0.5, seed=3) == chosen


def test_sampled_frames_are_timed_from_the_clip_rate():
    from vlmft_cli.pipeline.examples import sampled_fps

    assert sampled_fps(None, [0, 5, 10, 15]) is None
    assert sampled_fps(3.0, [0, 5, 10, 15]) == pytest.approx(0.6)
    assert sampled_fps(3.0, [15]) == 3.0


def test_clip_rate_reaches_a_backend_that_times_frames(processed_data, vlmft_home):
    backend = backend_for("tiny-qwen3-vl")
    processor = backend.load_processor("tiny-qwen3-vl", vlmft_home)
    samples = stage_samples(processed_data, 1)[:1]
    slow, _ = build_examples(samples, backend=backend, processor=processor, max_frames=4, frame_sampling="uniform-last", max_length=4096, clip_fps=1.0)
    fast, _ = build_examples(samples, backend=backend, processor=processor, max_frames=4, frame_sampling="uniform-last", max_length=4096, clip_fps=10.0)
    assert slow[0].fps == pytest.approx(0.2) and fast[0].fps == pytest.approx(2.0)
    decoded = [processor.tokenizer.decode(ExampleDataset(e, processed_data, backend, processor)[0].input_ids) for e in (slow, fast)]
    assert decoded[0] != decoded[1]  # the prompt's timestamps follow the rate (and lengths still match exactly)
