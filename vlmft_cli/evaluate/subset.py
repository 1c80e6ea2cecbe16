"""The evaluation subset used at checkpoints (`eval_limit`): fixed, seeded and stratified by task type.

`eval_limit = N` keeps at most N QAs of every task type. The examples are put in a seeded order (a hash
of the seed and each example's id, so the order is the same in every process and at every checkpoint,
and an example keeps its rank when others are added or removed), then taken in that order while any of
their task types has fewer than N QAs taken. In stage 1 an example is one QA, so this is exactly N QAs
per task type (all of a rarer one). A stage-2 conversation is taken whole: every task type gets at least
min(N, its QAs) QAs, and a type may get more through conversations taken for another type.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

from vlmft_cli.pipeline.examples import Example


def seeded_rank(seed: int, example_id: str) -> bytes:
    """An example's place in the seeded order: a hash of the seed and its id."""
    return hashlib.blake2b(f"{seed}\0{example_id}".encode(), digest_size=16).digest()


def stratified_subset(examples: Sequence[Example], per_task: int | None, seed: int) -> list[int] | None:
    """Indices (in data order) of the evaluation subset, or None when it is the whole set (no limit, or a
    limit that every task type stays under)."""
    if per_task is None:
        return None
    if per_task < 1:
        raise ValueError("eval_limit must be at least 1")
    order = sorted(range(len(examples)), key=lambda i: (seeded_rank(seed, examples[i].id), i))
    taken: Counter[str] = Counter()
    chosen = []
    for index in order:
        types = [info.task_type for info in examples[index].turn_info]
        if any(taken[task] < per_task for task in types):
            chosen.append(index)
            taken.update(types)
    if len(chosen) == len(examples):
        return None
    return sorted(chosen)
