"""The questions to generate answers for: one per QA, each with its true conversation history.

A stage-1 example gives one job (its question). A stage-2 conversation gives one job per turn: for turn
k the prompt is the frames, then Q1 A1 … Q(k-1) A(k-1) with the REFERENCE answers, then Qk. The model's
own earlier predictions never enter a prompt, so an early mistake cannot spoil later turns and each
turn is scored on the same context teacher-forced loss sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vlmft_cli.model_backend import Turn
from vlmft_cli.pipeline.examples import Example


@dataclass(frozen=True)
class GenerationJob:
    """One question to answer: its example, turn (0-based), the prompt turns and the reference."""

    example_index: int
    example_id: str
    turn: int
    prompt: tuple[Turn, ...]  # ends with the user question of `turn`
    reference: str
    task_type: str
    subtype: str | None
    format: str

    @property
    def question(self) -> str:
        return self.prompt[-1].text


def example_jobs(example: Example, example_index: int) -> list[GenerationJob]:
    """The jobs of one example, in turn order, with the true history before each question."""
    jobs = []
    for turn, info in enumerate(example.turn_info):
        question_at = 2 * turn
        jobs.append(
            GenerationJob(
                example_index=example_index,
                example_id=example.id,
                turn=turn,
                prompt=tuple(example.turns[: question_at + 1]),
                reference=example.turns[question_at + 1].text,
                task_type=info.task_type,
                subtype=info.subtype,
                format=info.format,
            )
        )
    return jobs


def generation_jobs(examples: Sequence[Example]) -> list[GenerationJob]:
    """Every QA of every example, example by example (so one example's frames are loaded once)."""
    return [job for index, example in enumerate(examples) for job in example_jobs(example, index)]
