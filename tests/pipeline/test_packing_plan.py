"""The packed batch plan: every QA once per epoch, steps of whole videos averaging the global batch, whole
QAs and frames, deterministic by seed and epoch, and a resume that skips batches without reading data."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from accelerate import Accelerator
from accelerate.data_loader import BatchSamplerShard

from vlmft_cli.pipeline.packed_dataset import PackedBatchSampler
from vlmft_cli.pipeline.packing import PackingData, micro_batches_per_epoch, packed_accumulation, plan_epoch

PREFIX = 1050


def synthetic(videos: int = 300, seed: int = 0, max_length: int = 2048) -> PackingData:
    """RoboVQA-shaped lengths: 1-8 QAs per video (mean ≈ 3.6), a 4-frame prefix, 25-90-token QA blocks."""
    rng = random.Random(seed)
    groups, blocks, group_of = [], [], []
    for video in range(videos):
        count = rng.choice([1, 2, 3, 3, 4, 4, 4, 5, 6, 8])
        groups.append(tuple(range(len(blocks), len(blocks) + count)))
        for _ in range(count):
            blocks.append(rng.randint(25, 90))
            group_of.append(video)
    return PackingData(tuple(groups), (PREFIX,) * videos, tuple(blocks), tuple(group_of), max_length)


def qas_of(step):
    return [qa for batch in step for sequence in batch for qa in sequence]


@pytest.mark.parametrize("global_batch_size", [32, 7])
def test_every_qa_once_in_steps_that_average_the_global_batch(global_batch_size):
    data = synthetic()
    accumulation = packed_accumulation(global_batch_size, 2, data.mean_qas_per_video)
    steps = plan_epoch(data, seed=3, epoch=0, global_batch_size=global_batch_size, per_step=accumulation)
    assert Counter(qa for step in steps for qa in qas_of(step)) == Counter(range(data.num_qas))
    sizes = [len(qas_of(step)) for step in steps]
    assert len(steps) == -(-data.num_qas // global_batch_size)  # as many steps as 32-QA slices: the schedule holds
    # Each cut sits within half the largest video (8 QAs) of its multiple of the global batch.
    ends = [sum(sizes[: k + 1]) for k in range(len(sizes) - 1)]
    assert all(abs(end - (k + 1) * global_batch_size) <= 4 for k, end in enumerate(ends))
    assert all(len(step) == accumulation for step in steps[:-1])
    assert micro_batches_per_epoch(data.num_qas, global_batch_size, accumulation) == sum(len(step) for step in steps)
    for step in steps:
        loads = [sum(len(sequence) for sequence in batch) for batch in step]
        assert all(loads)  # no empty micro-batch
        assert max(loads) - min(loads) <= max(len(sequence) for batch in step for sequence in batch)


@pytest.mark.parametrize("global_batch_size", [32, 5])
def test_no_video_is_split_across_steps_unless_it_alone_exceeds_the_global_batch(global_batch_size):
    data = synthetic(videos=400, seed=2)
    steps = plan_epoch(data, seed=7, epoch=1, global_batch_size=global_batch_size, per_step=packed_accumulation(global_batch_size, 2, data.mean_qas_per_video))
    steps_of_video: dict[int, set[int]] = {}
    for number, step in enumerate(steps):
        for qa in qas_of(step):
            steps_of_video.setdefault(data.group_of[qa], set()).add(number)
    split = {video for video, numbers in steps_of_video.items() if len(numbers) > 1}
    oversize = {video for video, group in enumerate(data.groups) if len(group) > global_batch_size}
    assert split <= oversize
    if global_batch_size == 5:
        assert split  # 6- and 8-QA videos must be cut, into as few steps as they need
        assert all(len(steps_of_video[video]) <= -(-len(data.groups[video]) // global_batch_size) + 1 for video in split)


def test_sequences_hold_whole_qas_of_one_video_within_max_length():
    data = synthetic(max_length=PREFIX + 200)  # two to four QA blocks fit: long videos must split
    steps = plan_epoch(data, seed=0, epoch=0, global_batch_size=32, per_step=4)
    sequences = [sequence for step in steps for batch in step for sequence in batch]
    assert all(len({data.group_of[qa] for qa in sequence}) == 1 for sequence in sequences)
    assert all(data.sequence_length(sequence) <= data.max_length for sequence in sequences)
    assert any(len(data.groups[data.group_of[s[0]]]) > len(s) for s in sequences)  # some videos were split
    # Within a video, QAs keep their data order.
    assert all(list(sequence) == sorted(sequence) for sequence in sequences)


def test_deterministic_by_seed_and_epoch():
    data = synthetic()

    def plan(seed, epoch):
        return plan_epoch(data, seed=seed, epoch=epoch, global_batch_size=32, per_step=4)

    assert plan(5, 0) == plan(5, 0)
    assert plan(5, 1) != plan(5, 0) and plan(6, 0) != plan(5, 0)


def test_packed_tokens_are_a_third_of_unpacked():
    from vlmft_cli.pipeline.packing import summarize

    data = synthetic()
    steps = plan_epoch(data, seed=0, epoch=0, global_batch_size=32, per_step=packed_accumulation(32, 2, data.mean_qas_per_video))
    summary = summarize(data, steps)
    assert summary.tokens_unpacked == sum(PREFIX + block for block in data.block_lengths)
    assert summary.ratio <= 0.4


def test_accumulation_rule():
    assert packed_accumulation(32, 2, 3.6) == 4  # round(32 / 7.2)
    assert packed_accumulation(32, 1, 3.6) == 9
    assert packed_accumulation(4, 2, 3.6) == 1  # never below one
    assert packed_accumulation(32, 2, 3.6, world_size=4) == 1
    assert packed_accumulation(8, 1, 0.5, world_size=2) == 4  # at most the QAs one device gets


def test_devices_each_get_the_same_number_of_micro_batches_per_step():
    data = synthetic()
    world, accumulation = 2, 3
    sampler = PackedBatchSampler(data, seed=1, global_batch_size=32, accumulation=accumulation, world_size=world)
    shards = [list(BatchSamplerShard(sampler, num_processes=world, process_index=rank)) for rank in range(world)]
    assert len(shards[0]) == len(shards[1])
    steps = sampler.plan()
    for number, step in enumerate(steps[:-1]):
        mine = [shard[number * accumulation : (number + 1) * accumulation] for shard in shards]
        assert sorted(qa for batches in mine for batch in batches for s in batch for qa in s) == sorted(qas_of(step))


class Recording(torch.utils.data.Dataset):
    """Records which packed sequences were fetched."""

    def __init__(self, size):
        self.size = size
        self.fetched = []

    def __len__(self):
        return self.size

    def __getitem__(self, sequence):
        self.fetched.append(sequence)
        return torch.tensor(sequence)


def test_resume_skips_micro_batches_without_fetching_them():
    from accelerate import skip_first_batches

    data = synthetic(videos=60)
    sampler = PackedBatchSampler(data, seed=2, global_batch_size=8, accumulation=2)
    sampler.set_epoch(1)
    expected = list(sampler)
    dataset = Recording(data.num_qas)
    loader = Accelerator(cpu=True).prepare(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=list))
    skipped = skip_first_batches(loader, 6)  # three optimizer steps
    skipped.set_epoch(1)
    first = next(iter(skipped))
    assert [tuple(t.tolist()) for t in first] == expected[6]
    assert dataset.fetched[: len(expected[6])] == expected[6]  # nothing before the resume point was read
