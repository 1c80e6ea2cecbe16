"""QA parsing: examples from the release, the official loader as an oracle, and fuzzing."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmft_cli.data.grammar import (
    ANSWER_STYLES,
    DROP_DUPLICATE,
    DROP_EMPTY_ANSWER,
    DROP_EMPTY_BLOCK,
    DROP_EMPTY_QUESTION,
    DROP_NO_ANSWER_MARKER,
    DROP_NOT_FIRST_ENTRY,
    MARKUP_TAG_RE,
    QA,
    TaskTag,
    TextsMode,
    normalize_whitespace,
    parse_task_tag,
    parse_texts,
    render_block,
    select_qas,
)

RELEASE_TEXT = (
    "<task:affordance:discriminative:discrete:True>\nput packet on the table Q: possible right now? <PRED>A: "
    "<PRED:ANSWER><PRED:DISCRETE><PRED:BINARY>yes</PRED:BINARY></PRED:DISCRETE></PRED:ANSWER>\n</PRED>"
    "<task:future_prediction:freeform>\nQ: what is likely to happen next? <PRED>A: put packet on the table\n</PRED>"
    "<task:remaining5_planning_with_context20:freeform>\ncurrent goal is: please place all the chips on the counter. "
    "last 20 steps: 1- put packet on the table Q: next 5 steps? <PRED>A: 1- put packet on the table 2- done\n</PRED>"
)


def test_release_text_parses_like_the_official_notebook():
    qas = parse_texts([RELEASE_TEXT]).qas
    assert qas == [
        QA("affordance", "discriminative:True", "binary", "put packet on the table Q: possible right now?", "yes"),
        QA("future_prediction", None, "freeform", "Q: what is likely to happen next?", "put packet on the table"),
        QA(
            "remaining5_planning_with_context20",
            None,
            "freeform",
            "current goal is: please place all the chips on the counter. last 20 steps: 1- put packet on the table Q: next 5 steps?",
            "1- put packet on the table 2- done",
        ),
    ]


def test_every_entry_is_parsed_and_remembers_its_index():
    second = "<task:past_description:freeform> Q: what just happened? A: pick up the sanitizer"
    qas = parse_texts([RELEASE_TEXT, second]).qas
    assert [qa.entry for qa in qas] == [0, 0, 0, 1]
    assert qas[-1].answer == "pick up the sanitizer"


FIRST_ENTRY = (
    "<task:success:discrete:True> put the cup down Q: satisfied? A: yes"
    "<task:planning:freeform> Q: immediate next step? A: open the drawer"
)
LATER_ENTRY = (
    "<task:planning:freeform>\nQ:  immediate next step?\n<PRED>A: open the drawer</PRED>"  # a copy, other spacing
    "<task:past_description:freeform> Q: what just happened? A: put book on the table"
    "<task:future_prediction:freeform> Q: what next?"  # no answer marker
)


def test_all_entries_keep_identical_qas_once_and_first_reads_the_first_entry_only():
    entries = [FIRST_ENTRY, FIRST_ENTRY, LATER_ENTRY]
    success = QA("success", "True", "discrete", "put the cup down Q: satisfied?", "yes", 0)
    planning = QA("planning", None, "freeform", "Q: immediate next step?", "open the drawer", 0)
    past = QA("past_description", None, "freeform", "Q: what just happened?", "put book on the table", 2)
    every = select_qas(entries)
    assert every.qas == [success, planning, past]
    assert every.dropped == Counter({DROP_DUPLICATE: 3, DROP_NO_ANSWER_MARKER: 1})
    first = select_qas(entries, TextsMode.FIRST)
    assert first.qas == [success, planning]
    assert first.dropped == Counter({DROP_NOT_FIRST_ENTRY: 1})  # past_description; the copies are no loss
    # The official loader keeps a copy inside the first entry; `all` keeps it once.
    assert select_qas([FIRST_ENTRY + FIRST_ENTRY], "first").qas == [success, planning, success, planning]
    assert select_qas([FIRST_ENTRY + FIRST_ENTRY], "all").qas == [success, planning]
    # The same question and answer under another task tag is another QA.
    retagged = FIRST_ENTRY.replace("<task:planning:freeform>", "<task:future_prediction:freeform>")
    assert len(select_qas([FIRST_ENTRY, retagged]).qas) == 3
    with pytest.raises(ValueError):
        select_qas(entries, "second")


def test_tagged_answers_are_kept_whole_and_a_bare_less_than_survives():
    text = "<task:success:discrete:True> put the glass into the trash Q: satisfied? A: <PRED:ANSWER:BINARY>yes</PRED:ANSWER:BINARY>"
    assert parse_texts([text]).qas[0].answer == "yes"
    text = "<task:planning:freeform> Q: immediate next step? A: <PRED:ANSWER:FREEFORM>slide the tray < 10 cm left</PRED:ANSWER:FREEFORM>"
    assert parse_texts([text]).qas[0].answer == "slide the tray < 10 cm left"


def test_task_tags_match_case_insensitively():
    qa = parse_texts(["<TASK:Success:DISCRETE:False> open it Q: satisfied? a: no"]).qas[0]
    assert (qa.task_type, qa.subtype, qa.format, qa.answer) == ("success", "False", "discrete", "no")


def test_text_before_the_first_tag_is_not_a_task():
    assert [qa.question for qa in parse_texts(["preamble Q: x? A: y <task:planning:freeform> Q: z? A: w"]).qas] == [
        "Q: z?"
    ]


def test_blocks_without_a_qa_are_counted_per_reason():
    parsed = parse_texts(
        [
            "<task:a:freeform> \n <task:b:freeform> no marker here <task:c:freeform> A: yes <task:d:freeform> Q: x? A: <PRED></PRED>"
        ]
    )
    assert parsed.qas == []
    assert parsed.dropped == Counter(
        {DROP_EMPTY_BLOCK: 1, DROP_NO_ANSWER_MARKER: 1, DROP_EMPTY_QUESTION: 1, DROP_EMPTY_ANSWER: 1}
    )


def test_the_answer_marker_is_not_found_inside_a_word():
    qa = parse_texts(["<task:planning:freeform> goal is: peel the banana: then eat Q: next? A: peel"]).qas[0]
    assert qa.question == "goal is: peel the banana: then eat Q: next?" and qa.answer == "peel"


def test_parse_task_tag():
    assert parse_task_tag("<task:affordance:generative:positive:freeform>") == TaskTag(
        "affordance", "generative:positive", "freeform"
    )
    assert parse_task_tag("<task:immediate_planning_with_context20:freeform>") == TaskTag(
        "immediate_planning_with_context20", None, "freeform"
    )
    assert parse_task_tag("<task:success:discrete:False>") == TaskTag("success", "False", "discrete")
    assert parse_task_tag("<task>") == TaskTag("unknown", None, None)
    assert parse_task_tag("<task::planning>") == TaskTag("planning", None, None)


def test_format_prefers_a_binary_answer_tag_then_the_tag_then_discrete_tags():
    def fmt(tag: str, answer: str) -> str:
        return parse_texts([f"{tag} Q: x? A: {answer}"]).qas[0].format

    assert fmt("<task:success:discrete:True>", "<PRED:BINARY>yes</PRED:BINARY>") == "binary"
    assert fmt("<task:success:discrete:True>", "yes") == "discrete"
    assert fmt("<task:success>", "<PRED:ANSWER:DISCRETE>halfway</PRED:ANSWER:DISCRETE>") == "discrete"
    assert fmt("<task:success>", "halfway") == "freeform"


# --- the official loader as an oracle -----------------------------------------------------------------

_OFFICIAL_TAGS_RE = r"(</*\w[:\w]*>)"


def official_qas(text: str) -> list[tuple[str, str, str]]:
    """(tag, question, answer) as the RoboVQA notebook's Tasks/Task classes produce them (answers keep
    their leading `A:`), in its grouping order."""
    split = re.split(r"(<task[:\w]*>)", text, flags=re.IGNORECASE)[1:]
    by_tag: dict[str, list[str]] = {}
    for i in range(0, len(split) - 1, 2):
        tag, task = split[i].strip(), split[i + 1].lstrip()
        if task:
            by_tag.setdefault(tag, []).append(task)
    results = []
    for tag, tasks in by_tag.items():
        for task in tasks:
            position = task.lower().find("a:")
            source, target = ("", task) if position < 0 else (task[:position], task[position:])
            results.append(
                (tag, re.sub(_OFFICIAL_TAGS_RE, "", source).strip(), re.sub(_OFFICIAL_TAGS_RE, "", target).strip())
            )
    return results


# Free text as in the release: words, numbers, `Q:`, punctuation, a lone `<`, odd whitespace; never a
# colon right after a word (the one place the parser deliberately differs from the official loader).
words = st.lists(
    st.one_of(
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9'.,?!-]{0,8}", fullmatch=True),
        st.sampled_from(["Q:", "<", "1-", "2-", "goal is", "done", "é", "現在"]),
    ),
    min_size=1,
    max_size=8,
)
spaces = st.sampled_from([" ", "  ", "\n", "\t", " \n "])
tag_fields = st.lists(st.from_regex(r"[A-Za-z0-9_]{1,10}", fullmatch=True), min_size=1, max_size=4)


@st.composite
def free_text(draw: st.DrawFn) -> str:
    separator = draw(spaces)
    return separator.join(draw(words))


@st.composite
def task_block(draw: st.DrawFn) -> tuple[str, str, str, str, str]:
    fields = draw(tag_fields)
    task_format = draw(st.sampled_from(["freeform", "discrete", "binary"]))
    tag = f"<{draw(st.sampled_from(['task', 'TASK', 'Task']))}:{':'.join([*fields, task_format])}>"
    question, answer = draw(free_text()), draw(free_text())
    style = draw(st.sampled_from(ANSWER_STYLES))
    return tag, question, answer, task_format, render_block(tag, question, answer, task_format, style)


@settings(max_examples=200, deadline=None)
@given(blocks=st.lists(task_block(), min_size=1, max_size=5), preamble=st.sampled_from(["", "noise Q: x A: y ", "\n"]))
def test_parsing_matches_the_official_loader(blocks, preamble):
    text = preamble + "".join(block[-1] for block in blocks)
    ours = Counter((qa.question, qa.answer) for qa in parse_texts([text]).qas)
    official = Counter(
        (normalize_whitespace(q), normalize_whitespace(a[2:]))
        for _, q, a in official_qas(text)
        if normalize_whitespace(a[2:]) and normalize_whitespace(q)
    )
    assert ours == official


@settings(max_examples=200, deadline=None)
@given(block=task_block())
def test_rendering_then_parsing_gives_back_the_qa(block):
    tag, question, answer, task_format, text = block
    (qa,) = parse_texts([text]).qas
    expected = parse_task_tag(tag)
    assert qa.question == normalize_whitespace(question)
    assert qa.answer == normalize_whitespace(answer)
    assert (qa.task_type, qa.subtype) == (expected.task_type, expected.subtype)
    assert qa.format in ("binary", task_format)


@st.composite
def entries_sharing_blocks(draw: st.DrawFn) -> list[str]:
    """1-4 `texts` entries built from a few blocks, so copies within and across entries are common."""
    blocks = [block[-1] for block in draw(st.lists(task_block(), min_size=1, max_size=3))]
    entry = st.lists(st.sampled_from(blocks), max_size=4).map("".join)
    return draw(st.lists(entry, min_size=1, max_size=4))


def _fields(qa: QA) -> tuple:
    return (qa.task_type, qa.subtype, qa.format, qa.question, qa.answer)


@settings(max_examples=200, deadline=None)
@given(entries=entries_sharing_blocks())
def test_the_texts_modes_against_parsing_every_entry(entries):
    parsed = parse_texts(entries).qas
    first_seen: dict[tuple, QA] = {}
    for qa in parsed:
        first_seen.setdefault(_fields(qa), qa)
    every = select_qas(entries, "all")
    assert every.qas == list(first_seen.values())
    assert every.dropped[DROP_DUPLICATE] == len(parsed) - len(first_seen)
    first = select_qas(entries, "first")
    assert first.qas == [qa for qa in parsed if qa.entry == 0]
    in_first = {_fields(qa) for qa in first.qas}
    assert first.dropped[DROP_NOT_FIRST_ENTRY] == len(set(first_seen) - in_first)


hostile_text = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.sampled_from(
            ["<task:", "<TASK:a:b>", ">", "<", "A:", "a:", "Q:", "</", "<PRED:", "\n", " ", "x", ":", "_", "é"]
        ),
        max_size=60,
    ).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(hostile_text, max_size=4))
def test_hostile_text_never_raises_and_yields_clean_qas(entries):
    parsed = parse_texts(entries)
    for qa in parsed.qas:
        for value in (qa.question, qa.answer):
            assert value and value == normalize_whitespace(value)
            assert MARKUP_TAG_RE.search(value) is None
        assert qa.task_type and qa.format
