"""Batched greedy generation: prompts encoded by the model backend, padded on the LEFT, answers decoded.

A backend's `collate` pads on the right, which suits teacher forcing but not generation: every row must
end where its answer starts. `left_pad` builds the batch with pads (and a zero attention mask) before
each prompt; transformers derives position ids from the mask, so a padded row decodes exactly as it
would alone. Only the new tokens are decoded, cut at the first end-of-turn token.

`generate_answers` batches the jobs by prompt length (sorted, so a batch pads little; the answers come
back in job order), encodes the prompts in a torch DataLoader (`workers` processes decode the frames
while the model generates) and reports progress as it goes (the reporter's task shows the rate and the
time left).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from vlmft_cli.evaluate.loss import batches_of
from vlmft_cli.evaluate.prompts import GenerationJob
from vlmft_cli.model_backend import EncodedSample, ModelBackend, Turn, pad_token_id
from vlmft_cli.pipeline.dataset import load_frames
from vlmft_cli.pipeline.examples import Example
from vlmft_cli.reporting import NullReporter, Reporter


def left_pad(samples: Sequence[EncodedSample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Stack prompts padded on the left: `input_ids`, `attention_mask`, `pixel_values` (all frames in
    order) and the backend's extras (per-token ones left-padded with 0, others concatenated)."""
    if not samples:
        raise ValueError("cannot batch an empty list of prompts")
    length = max(len(sample) for sample in samples)
    rows = len(samples)
    input_ids = torch.full((rows, length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((rows, length), dtype=torch.long)
    for row, sample in enumerate(samples):
        input_ids[row, length - len(sample) :] = sample.input_ids
        attention_mask[row, length - len(sample) :] = 1
    batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    frames = [sample.pixel_values for sample in samples if sample.pixel_values.shape[0] > 0]
    if frames:
        batch["pixel_values"] = torch.cat(frames, dim=0)
    for key in samples[0].extra:
        values = [sample.extra[key] for sample in samples]
        if all(value.dim() == 1 and value.shape[0] == len(sample) for value, sample in zip(values, samples, strict=True)):
            padded = torch.zeros((rows, length), dtype=values[0].dtype)
            for row, value in enumerate(values):
                padded[row, length - value.shape[0] :] = value
            batch[key] = padded
        else:
            batch[key] = torch.cat(values, dim=0)
    return batch


def stop_token_ids(backend: ModelBackend, tokenizer: Any) -> list[int]:
    """Token ids that end an answer: the backend's end-of-turn token and the tokenizer's eos."""
    ids: list[int] = []
    turn_end = backend.special_tokens().get("turn_end")
    if turn_end is not None:
        token_id = tokenizer.convert_tokens_to_ids(turn_end)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.append(token_id)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError(f"backend {backend.name} names no end-of-turn token and the tokenizer has no eos token")
    return ids


def decode_answer(tokenizer: Any, new_tokens: Iterable[int], stop_ids: Iterable[int]) -> str:
    """The text of generated tokens up to (not including) the first stop token."""
    stops = set(stop_ids)
    kept = []
    for token in new_tokens:
        if int(token) in stops:
            break
        kept.append(int(token))
    return tokenizer.decode(kept, skip_special_tokens=True).strip()


class PromptEncoder:
    """Encodes jobs into generation prompts. Decoded frames are kept for the few most recent clips (the
    QAs of one video, and the turns of one conversation, share their frames); picklable, for workers."""

    CACHED_CLIPS = 8

    def __init__(self, examples: Sequence[Example], root: Path, backend: ModelBackend, processor: Any) -> None:
        self.examples = examples
        self.root = root
        self.backend = backend
        self.processor = processor
        self._cache: OrderedDict[tuple[str, ...], list[Any]] = OrderedDict()

    def frames(self, example_index: int) -> list[Any]:
        images = self.examples[example_index].images
        if images in self._cache:
            self._cache.move_to_end(images)
        else:
            self._cache[images] = load_frames(self.root, images)
            while len(self._cache) > self.CACHED_CLIPS:
                self._cache.popitem(last=False)
        return self._cache[images]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict()}  # a worker starts with no frames

    def prompt_length(self, job: GenerationJob) -> int:
        """The prompt's length in tokens (to within the few tokens of the generation prompt), without
        reading a frame: the conversation up to the question with an empty answer."""
        example = self.examples[job.example_index]
        turns = [*job.prompt, Turn("assistant", "")]
        return self.backend.conversation_lengths(self.processor, len(example.images), turns, fps=example.fps)[-1]

    def __call__(self, job: GenerationJob) -> EncodedSample:
        return self.backend.encode_prompt(self.processor, self.frames(job.example_index), job.prompt, fps=self.examples[job.example_index].fps)


class _JobPrompts(torch.utils.data.Dataset):
    """Job index → (index, encoded prompt), for the DataLoader."""

    def __init__(self, jobs: Sequence[GenerationJob], encode: PromptEncoder) -> None:
        self.jobs = jobs
        self.encode = encode

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> tuple[int, EncodedSample]:
        return index, self.encode(self.jobs[index])


class _LeftPadCollate:
    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[tuple[int, EncodedSample]]) -> tuple[list[int], dict[str, torch.Tensor]]:
        return [index for index, _ in items], left_pad([prompt for _, prompt in items], self.pad_token_id)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (ties in index order), cut into batches of `batch_size`."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def generate_batch(model: Any, prompts: Sequence[EncodedSample], *, pad_token_id: int, stop_ids: Sequence[int], max_new_tokens: int, device: torch.device | str) -> list[list[int]]:
    """Greedy continuation of each prompt (new token ids only, stop token kept, padding removed)."""
    return generate_padded(model, left_pad(prompts, pad_token_id), pad_token_id=pad_token_id, stop_ids=stop_ids, max_new_tokens=max_new_tokens, device=device)


@torch.no_grad()
def generate_padded(
    model: Any,
    batch: dict[str, torch.Tensor],
    *,
    pad_token_id: int,
    stop_ids: Sequence[int],
    max_new_tokens: int,
    device: torch.device | str,
    sampling: dict[str, Any] | None = None,
) -> list[list[int]]:
    """`generate_batch` on an already left-padded batch; greedy, or sampled with `sampling`'s arguments
    (`temperature`, `top_p`) when given."""
    batch = {key: value.to(device) for key, value in batch.items()}
    width = batch["input_ids"].shape[1]
    output = model.generate(
        **batch,
        do_sample=sampling is not None,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_token_id,
        **(sampling or {}),
    )
    return [row[width:].tolist() for row in output]


def generate_answers(
    model: Any,
    jobs: Sequence[GenerationJob],
    encode: PromptEncoder,
    *,
    tokenizer: Any,
    stop_ids: Sequence[int],
    batch_size: int,
    max_new_tokens: int,
    device: torch.device | str,
    reporter: Reporter | None = None,
    workers: int = 0,
) -> list[str]:
    """One greedy answer per job, in job order: `batch_size` prompts of similar length at a time, encoded
    by `workers` DataLoader processes."""
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be at least 1")
    reporter = reporter or NullReporter()
    pad_id = pad_token_id(tokenizer, stop_ids[0])
    batches = length_batches([encode.prompt_length(job) for job in jobs], batch_size)
    loader = torch.utils.data.DataLoader(
        _JobPrompts(jobs, encode),
        batch_sampler=batches,
        collate_fn=_LeftPadCollate(pad_id),
        num_workers=workers,
        pin_memory=str(device).startswith("cuda"),
    )
    was_training = model.training
    model.eval()
    answers: list[str | None] = [None] * len(jobs)
    try:
        with reporter.progress("generate", total=len(jobs), unit="answers") as task, batches_of(loader) as loaded:
            for indices, batch in loaded:
                new_tokens = generate_padded(model, batch, pad_token_id=pad_id, stop_ids=stop_ids, max_new_tokens=max_new_tokens, device=device)
                for index, tokens in zip(indices, new_tokens, strict=True):
                    answers[index] = decode_answer(tokenizer, tokens, stop_ids)
                task.advance(len(indices))
    finally:
        model.train(was_training)
    assert all(answer is not None for answer in answers)
    return answers  # type: ignore[return-value]
