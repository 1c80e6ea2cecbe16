"""Left-padded batched greedy generation equals one-prompt-at-a-time generation."""

import pytest
import torch

from vlmft_cli.backends import backend_for
from vlmft_cli.data.schema import iter_samples
from vlmft_cli.evaluate.generation import (
    PromptEncoder,
    decode_answer,
    generate_answers,
    generate_batch,
    left_pad,
    stop_token_ids,
)
from vlmft_cli.evaluate.prompts import generation_jobs
from vlmft_cli.model_backend import EncodedSample, LoadOptions
from vlmft_cli.pipeline.examples import build_examples


def sample(ids, frames, extra=None):
    ids = torch.tensor(ids)
    return EncodedSample(input_ids=ids, labels=torch.full_like(ids, -100), pixel_values=torch.full((frames, 3, 2, 2), float(frames)), num_image_tokens=0, extra=extra or {})


def test_left_pad_puts_pads_and_a_zero_mask_before_each_prompt():
    short = sample([5, 6], 1, {"types": torch.tensor([1, 1]), "grid": torch.tensor([[7]])})
    long = sample([1, 2, 3, 4], 2, {"types": torch.tensor([2, 2, 2, 2]), "grid": torch.tensor([[8]])})
    batch = left_pad([short, long], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[0, 0, 5, 6], [1, 2, 3, 4]]
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [1.0, 2.0, 2.0]  # frames of both, in order
    assert batch["types"].tolist() == [[0, 0, 1, 1], [2, 2, 2, 2]]
    assert batch["grid"].tolist() == [[7], [8]]
    with pytest.raises(ValueError):
        left_pad([], 0)


def test_decode_answer_stops_at_the_first_stop_token():
    class Tokenizer:
        def decode(self, ids, skip_special_tokens):
            return " ".join(str(i) for i in ids) + " "

    assert decode_answer(Tokenizer(), [4, 5, 9, 6], stop_ids=[9]) == "4 5"
    assert decode_answer(Tokenizer(), torch.tensor([4, 5]), stop_ids=[9]) == "4 5"


@pytest.fixture(scope="module")
def tiny(processed_data, vlmft_home):
    backend = backend_for("tiny-internvl3")
    loaded = backend.load("tiny-internvl3", LoadOptions(precision="fp32", attn_implementation="sdpa"), vlmft_home)
    samples = list(iter_samples(processed_data / "stage2" / "val.jsonl", processed_data))
    examples, _ = build_examples(samples[:2], backend=backend, processor=loaded.processor, max_frames=2, frame_sampling="uniform-last", max_length=4096)
    return backend, loaded, examples


def test_batch_of_three_equals_one_at_a_time(tiny, processed_data):
    backend, loaded, examples = tiny
    tokenizer = loaded.processor.tokenizer
    jobs = generation_jobs(examples)[:6]
    encode = PromptEncoder(examples, processed_data, backend, loaded.processor)
    stops = stop_token_ids(backend, tokenizer)
    assert stops[0] == loaded.processor.im_end_id
    prompts = [encode(job) for job in jobs]
    assert len({len(p) for p in prompts[:3]}) == 3  # the first batch really needs padding
    kwargs = {"pad_token_id": tokenizer.pad_token_id, "stop_ids": stops, "max_new_tokens": 10, "device": "cpu"}
    one_by_one = [generate_batch(loaded.model, [p], **kwargs)[0] for p in prompts]
    batched = generate_batch(loaded.model, prompts[:3], **kwargs) + generate_batch(loaded.model, prompts[3:], **kwargs)
    assert len({tuple(tokens) for tokens in one_by_one}) > 1  # different prompts, different answers
    for alone, together in zip(one_by_one, batched, strict=True):
        cut = next((i + 1 for i, t in enumerate(alone) if t in stops), len(alone))
        assert together[:cut] == alone[:cut]  # a row may go on padding after its stop token
    answers = {size: generate_answers(loaded.model, jobs, encode, tokenizer=tokenizer, stop_ids=stops, batch_size=size, max_new_tokens=10, device="cpu") for size in (1, 3)}
    assert answers[1] == answers[3] and len(answers[1]) == len(jobs)


class RecordingModel:
    """The model, with the attention mask of every `generate` call kept (how much each batch padded)."""

    def __init__(self, model):
        self.model = model
        self.masks = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, **kwargs):
        self.masks.append(kwargs["attention_mask"].clone())
        return self.model.generate(**kwargs)


def padding(lengths, batch_size):
    return sum(max(chunk) * len(chunk) - sum(chunk) for chunk in (lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)))


@pytest.mark.slow
def test_generation_batches_prompts_by_length_and_answers_in_job_order(tiny, processed_data):
    from vlmft_cli.reporting import RecordingReporter

    backend, loaded, examples = tiny
    tokenizer = loaded.processor.tokenizer
    jobs = generation_jobs(examples)
    encode = PromptEncoder(examples, processed_data, backend, loaded.processor)
    stops = stop_token_ids(backend, tokenizer)
    lengths = [len(encode(job)) for job in jobs]
    # In job order (conversation by conversation, turn by turn) batches of 3 would pad much more.
    assert padding(sorted(lengths), 3) < padding(lengths, 3)
    model, reporter = RecordingModel(loaded.model), RecordingReporter()
    answers = generate_answers(model, jobs, encode, tokenizer=tokenizer, stop_ids=stops, batch_size=3, max_new_tokens=3, device="cpu", reporter=reporter, workers=1)
    rows = [[int(row.sum()) for row in mask] for mask in model.masks]
    assert sorted(length for row in rows for length in row) == sorted(lengths)
    assert sum(len(row) * mask.shape[1] - sum(row) for row, mask in zip(rows, model.masks, strict=True)) == padding(sorted(lengths), 3)
    # Each answer is the one its prompt gets alone, in the order of the jobs.
    kwargs = {"pad_token_id": tokenizer.pad_token_id, "stop_ids": stops, "max_new_tokens": 3, "device": "cpu"}
    alone = [decode_answer(tokenizer, generate_batch(loaded.model, [encode(job)], **kwargs)[0], stops) for job in jobs]
    assert answers == alone and len(set(alone)) > 1
    task = next(task for task in reporter.tasks if task.description == "generate")
    assert task.total == task.completed == len(jobs)


def test_plain_progress_lines_show_the_time_left(monkeypatch, capsys):
    from vlmft_cli.cli import output

    clock = iter([100.0, 110.0, 130.0, 140.0])
    monkeypatch.setattr(output.time, "monotonic", lambda: next(clock))
    with output.ConsoleReporter().progress("generate", total=4, unit="answers") as task:
        task.advance(1)  # 1 answer in 10 s: 3 left at 0.1/s
        task.advance(2)  # 3 in 30 s: 1 left
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "generate: 1/4 answers (0.1 answers/s, ETA 30s)"
    assert lines[1] == "generate: 3/4 answers (0.1 answers/s, ETA 10s)"
    assert lines[2] == "generate: 3/4 answers (0.075 answers/s, ETA 13s)"
