"""The RoboVQA text grammar: `texts` entries → question/answer pairs, and back (for synthetic data).

Parsing follows the official loader (the RoboVQA notebook's `Tasks`/`Task` classes):
- an entry splits into blocks at task tags matched case-insensitively by `<task[:\\w]*>`; text before
  the first tag is not a task;
- in a block, the question is everything before the answer marker `A:` (case-insensitive) and the answer
  everything after it; a block without the marker has no answer;
- every tag matching `</*\\w[:\\w]*>` (`<PRED>`, `</PRED:ANSWER:BINARY>`, …) is removed from both, so a
  tagged answer keeps its text (never cut at the first `<`), and a `<` that opens no tag stays.
Two deliberate differences: whitespace runs become one space, and the marker must not follow a word
character (it stands at the start, after a space or after a tag in all released data), where the
official loader would also split inside a word such as `banana:`.

The tag `<task:TYPE[:SUBTYPE…][:FORMAT][:LABEL]>` gives the task type (first field) and the subtype (the
other fields but the format, joined by `:`, e.g. `discriminative:True`; `None` if none). The format is the
most specific one known: `binary` when the answer is tagged binary (`<PRED:BINARY>`,
`<PRED:ANSWER:BINARY>`; the release tags yes/no answers so inside `discrete` tasks), else the tag's last
field that is `freeform`, `discrete` or `binary`, else `discrete` when the answer is tagged so, else
`freeform`.

Which `texts` entries a record's QAs come from (`select_qas`, `vlmft data extract --texts`): the official
notebook reads only the first entry (`texts.feature[0]`); `all` (the default) reads every entry and keeps
a QA identical to an earlier one of the same record (same task type, subtype, format, question and
answer) once, counting the copies as dropped (`DROP_DUPLICATE`); `first` reproduces the notebook and
counts the QAs of the later entries it leaves out (`DROP_NOT_FIRST_ENTRY`, only those `all` would add).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

TASK_TAG_RE = re.compile(r"(<task[:\w]*>)", re.IGNORECASE)
MARKUP_TAG_RE = re.compile(r"</*\w[:\w]*>")
ANSWER_MARKER_RE = re.compile(r"(?<!\w)A:", re.IGNORECASE)
_BINARY_ANSWER_RE = re.compile(r"<PRED(?::ANSWER)?:BINARY>", re.IGNORECASE)
_DISCRETE_ANSWER_RE = re.compile(r"<PRED(?::ANSWER)?:DISCRETE>", re.IGNORECASE)

FORMATS: tuple[str, ...] = ("freeform", "discrete", "binary")
UNKNOWN_TASK_TYPE = "unknown"

# Why a task block yields no QA (counted, never silently dropped).
DROP_EMPTY_BLOCK = "empty_task_block"
DROP_NO_ANSWER_MARKER = "no_answer_marker"
DROP_EMPTY_QUESTION = "empty_question"
DROP_EMPTY_ANSWER = "empty_answer"
# Why a QA is not kept although it parsed (`select_qas`).
DROP_DUPLICATE = "duplicate_qa"  # --texts all: identical to an earlier QA of the same record
DROP_NOT_FIRST_ENTRY = "not_first_entry"  # --texts first: in a later entry (and not a copy of a kept QA)


class TextsMode(str, Enum):
    """Which `texts` entries of a record are read (`vlmft data extract --texts`)."""

    ALL = "all"  # every entry, identical QAs kept once
    FIRST = "first"  # the first entry only, as the official notebook (`texts.feature[0]`)

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class TaskTag:
    """What a `<task:…>` tag says about its block."""

    task_type: str
    subtype: str | None
    format: str | None  # None when the tag names no format


@dataclass(frozen=True)
class QA:
    """One question/answer pair, cleaned, with the tag fields and the `texts` entry it came from."""

    task_type: str
    subtype: str | None
    format: str
    question: str
    answer: str
    entry: int = 0

    @property
    def content(self) -> tuple[str, str | None, str, str, str]:
        """What a sample trains on: two QAs with the same content are identical, whatever their entry."""
        return (self.task_type, self.subtype, self.format, self.question, self.answer)


@dataclass
class ParsedTexts:
    """All QAs of one record's `texts` entries, in order, and the count of blocks dropped per reason."""

    qas: list[QA] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def strip_tags(text: str) -> str:
    """Remove every markup tag, repeatedly, so removing one cannot leave another behind (`<<a>b>`)."""
    while True:
        stripped = MARKUP_TAG_RE.sub("", text)
        if stripped == text:
            return text
        text = stripped


def parse_task_tag(tag: str) -> TaskTag:
    """`<task:affordance:discriminative:discrete:True>` → affordance / discriminative:True / discrete."""
    fields = [f for f in tag.strip().lstrip("<").rstrip(">").split(":")[1:] if f]
    if not fields:
        return TaskTag(UNKNOWN_TASK_TYPE, None, None)
    task_type, rest = fields[0].lower(), fields[1:]
    format_index = next((i for i in reversed(range(len(rest))) if rest[i].lower() in FORMATS), None)
    task_format = None
    if format_index is not None:
        task_format = rest.pop(format_index).lower()
    return TaskTag(task_type, ":".join(rest) or None, task_format)


def _answer_format(tag_format: str | None, raw_answer: str) -> str:
    if _BINARY_ANSWER_RE.search(raw_answer):
        return "binary"
    if tag_format:
        return tag_format
    if _DISCRETE_ANSWER_RE.search(raw_answer):
        return "discrete"
    return "freeform"


def split_task_blocks(text: str) -> list[tuple[str, str]]:
    """(tag, block body) pairs in order; text before the first tag is dropped, as the official loader does."""
    parts = TASK_TAG_RE.split(text)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def parse_block(tag: str, body: str, entry: int = 0) -> QA | str:
    """The QA in one task block, or the reason it has none (one of the `DROP_*` constants)."""
    if not body.strip():
        return DROP_EMPTY_BLOCK
    marker = ANSWER_MARKER_RE.search(body)
    if marker is None:
        return DROP_NO_ANSWER_MARKER
    raw_answer = body[marker.end() :]
    question = normalize_whitespace(strip_tags(body[: marker.start()]))
    answer = normalize_whitespace(strip_tags(raw_answer))
    if not question:
        return DROP_EMPTY_QUESTION
    if not answer:
        return DROP_EMPTY_ANSWER
    parsed_tag = parse_task_tag(tag)
    return QA(
        parsed_tag.task_type, parsed_tag.subtype, _answer_format(parsed_tag.format, raw_answer), question, answer, entry
    )


def parse_texts(entries: Iterable[str]) -> ParsedTexts:
    """Every QA of every `texts` entry of a record, in entry order then block order."""
    parsed = ParsedTexts()
    for entry_index, text in enumerate(entries):
        for tag, body in split_task_blocks(text):
            outcome = parse_block(tag, body, entry_index)
            if isinstance(outcome, QA):
                parsed.qas.append(outcome)
            else:
                parsed.dropped[outcome] += 1
    return parsed


def select_qas(entries: Sequence[str], mode: TextsMode | str = TextsMode.ALL) -> ParsedTexts:
    """The QAs a record gives under `mode` (see the module docstring), in entry order then block order.

    `all`: every entry; a QA whose content equals an earlier one's is dropped as `DROP_DUPLICATE` (the
    first copy, with its entry and so its frame range, is kept). `first`: the first entry's QAs, all of
    them, as the official loader; each distinct QA of a later entry that is not a copy of a kept one is
    counted as `DROP_NOT_FIRST_ENTRY` (what `all` would add); blocks of later entries without a QA are
    not counted (they are not read)."""
    mode = TextsMode(mode)
    parsed = ParsedTexts()
    seen: set[tuple[str, str | None, str, str, str]] = set()
    for entry_index, text in enumerate(entries):
        read = mode is TextsMode.ALL or entry_index == 0
        for tag, body in split_task_blocks(text):
            outcome = parse_block(tag, body, entry_index)
            if not isinstance(outcome, QA):
                if read:
                    parsed.dropped[outcome] += 1
                continue
            duplicate = outcome.content in seen
            seen.add(outcome.content)
            if not read:
                if not duplicate:
                    parsed.dropped[DROP_NOT_FIRST_ENTRY] += 1
            elif duplicate and mode is TextsMode.ALL:
                parsed.dropped[DROP_DUPLICATE] += 1
            else:
                parsed.qas.append(outcome)
    return parsed


# --- rendering, the inverse, for synthetic data -------------------------------------------------------

#: How an answer is wrapped, as seen in the release.
ANSWER_STYLES: tuple[str, ...] = ("plain", "pred_answer", "nested")


def wrap_answer(answer: str, task_format: str, style: str) -> str:
    """The answer with its prediction tags: `plain` leaves it bare; `pred_answer` wraps it as
    `<PRED:ANSWER:BINARY>yes</PRED:ANSWER:BINARY>`; `nested` as
    `<PRED:ANSWER><PRED:DISCRETE><PRED:BINARY>yes</PRED:BINARY></PRED:DISCRETE></PRED:ANSWER>`."""
    kind = task_format.upper()
    if style == "plain":
        return answer
    if style == "pred_answer":
        return f"<PRED:ANSWER:{kind}>{answer}</PRED:ANSWER:{kind}>"
    if style == "nested":
        inner = f"<PRED:{kind}>{answer}</PRED:{kind}>"
        if task_format == "binary":
            inner = f"<PRED:DISCRETE>{inner}</PRED:DISCRETE>"
        return f"<PRED:ANSWER>{inner}</PRED:ANSWER>"
    raise ValueError(f"unknown answer style {style!r}; expected one of {ANSWER_STYLES}")


def render_block(tag: str, question: str, answer: str, task_format: str, style: str = "pred_answer") -> str:
    """One task block as the release writes it: tag, question, `<PRED>A: answer</PRED>`."""
    return f"{tag}\n{question} <PRED>A: {wrap_answer(answer, task_format, style)}\n</PRED>"
