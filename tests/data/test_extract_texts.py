"""Which `texts` entries give a record's QAs: `extract --texts all` (every entry, identical QAs once) and
`--texts first` (the official loader's `texts.feature[0]`), on records written out by hand here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlmft_cli.cli.app import app
from vlmft_cli.data.extract import ExtractOptions, run_extract
from vlmft_cli.errors import DataError

from .builders import video, write_source

# One video, three entries: the second repeats the first word for word; the third repeats the first
# entry's planning QA (same tag, question and answer) and adds a past_description QA.
SUCCESS = (
    "<task:success:discrete:True>\nput the cup down Q: satisfied? "
    "<PRED>A: <PRED:ANSWER:BINARY>yes</PRED:ANSWER:BINARY>\n</PRED>"
)
PLANNING = (
    "<task:planning:freeform>\ncurrent goal is: tidy up the desk Q: immediate next step? "
    "<PRED>A: open the top drawer\n</PRED>"
)
PAST = "<task:past_description:freeform>\nQ: what just happened? <PRED>A: put book on the table\n</PRED>"
SEVERAL = [SUCCESS + PLANNING, SUCCESS + PLANNING, PLANNING + PAST]
# A val video with a single entry.
SINGLE = ["<task:future_prediction:freeform>\nQ: what is likely to happen next? <PRED>A: close the top drawer\n</PRED>"]

IMAGES = [f"images/train-00000/ep-1/{i:02d}.jpg" for i in range(4)]
VAL_IMAGES = [f"images/val-00000/ep-2/{i:02d}.jpg" for i in range(2)]
FRAMES = "<image>\n" * 4

#: What each mode must write for the train video: (question, answer, task_type, subtype, format, frame range).
EXPECTED = {
    "all": [
        ("put the cup down Q: satisfied?", "yes", "success", "True", "binary", [0, 3]),
        ("current goal is: tidy up the desk Q: immediate next step?", "open the top drawer", "planning", None, "freeform", [0, 3]),
        ("Q: what just happened?", "put book on the table", "past_description", None, "freeform", [2, 3]),
    ],
    "first": [
        ("put the cup down Q: satisfied?", "yes", "success", "True", "binary", [0, 3]),
        ("current goal is: tidy up the desk Q: immediate next step?", "open the top drawer", "planning", None, "freeform", [0, 3]),
    ],
}
#: metadata.json's `texts` block for each mode (one val QA besides the train video's).
EXPECTED_TEXTS = {
    "all": {
        "mode": "all",
        "qas_kept": 4,
        "duplicate_qas_dropped": 3,  # the second entry's two QAs and the third entry's planning QA
        "later_entry_qas_not_read": 0,
        "records_with_several_entries": 1,
        "entries_per_record": {"1": 1, "3": 1},
    },
    "first": {
        "mode": "first",
        "qas_kept": 3,
        "duplicate_qas_dropped": 0,
        "later_entry_qas_not_read": 1,  # past_description: the only QA of a later entry not already kept
        "records_with_several_entries": 1,
        "entries_per_record": {"1": 1, "3": 1},
    },
}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("texts")
    several = video("ep-1", frames=4, texts=SEVERAL, texts_start=[0, 0, 2], texts_end=[3, 3, 3])
    single = video("ep-2", frames=2, texts=SINGLE)
    return write_source(root / "src", {"train": [[several]], "val": [[single]]})


@pytest.mark.parametrize("mode", ["all", "first"])
def test_a_record_with_several_entries_gives_the_qas_of_its_mode(source, tmp_path, mode):
    out = tmp_path / mode
    result = run_extract(ExtractOptions(str(source), out, size=16, workers=1, texts=mode))
    qas = EXPECTED[mode]
    turns = [{"task_type": t, "subtype": s, "format": f, "frame_range": r} for _, _, t, s, f, r in qas]
    conversation = []
    for n, (question, answer, *_) in enumerate(qas):
        conversation += [
            {"from": "human", "value": (FRAMES if n == 0 else "") + question},
            {"from": "gpt", "value": answer},
        ]
    assert _lines(out / "stage2" / "train.jsonl") == [
        {
            "id": "ep-1",
            "images": IMAGES,
            "conversations": conversation,
            "metadata": {"video_id": "ep-1", "split": "train", "turns": turns},
        }
    ]
    assert _lines(out / "stage1" / "train.jsonl") == [
        {
            "id": f"ep-1-{n}",
            "images": IMAGES,
            "conversations": [{"from": "human", "value": FRAMES + question}, {"from": "gpt", "value": answer}],
            "metadata": {**turns[n], "video_id": "ep-1", "split": "train"},
        }
        for n, (question, answer, *_) in enumerate(qas)
    ]
    assert _lines(out / "stage1" / "val.jsonl") == [
        {
            "id": "ep-2-0",
            "images": VAL_IMAGES,
            "conversations": [
                {"from": "human", "value": "<image>\n<image>\nQ: what is likely to happen next?"},
                {"from": "gpt", "value": "close the top drawer"},
            ],
            "metadata": {
                "task_type": "future_prediction",
                "subtype": None,
                "format": "freeform",
                "frame_range": [0, 1],
                "video_id": "ep-2",
                "split": "val",
            },
        }
    ]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata == result.metadata
    assert metadata["options"]["texts"] == mode and metadata["fingerprint"]["texts"] == mode
    assert metadata["texts"] == EXPECTED_TEXTS[mode]
    train = metadata["splits"]["train"]
    assert train["texts_entries"] == {"3": 1} and metadata["splits"]["val"]["texts_entries"] == {"1": 1}
    assert train["dropped_qas"] == ({"duplicate_qa": 3} if mode == "all" else {"not_first_entry": 1})
    assert result.problems == 0  # choosing entries is no bad input

    other = "first" if mode == "all" else "all"
    with pytest.raises(DataError, match="texts differ"):
        run_extract(ExtractOptions(str(source), out, size=16, workers=1, texts=other))


def test_an_unknown_texts_mode_is_refused(source, tmp_path):
    with pytest.raises(DataError, match="--texts 'second'"):
        run_extract(ExtractOptions(str(source), tmp_path / "out", texts="second"))


def test_the_cli_takes_texts_first_and_says_what_it_did(source, tmp_path):
    runner = CliRunner()
    args = ["data", "extract", "--source", str(source), "--size", "16", "--workers", "1", "--texts", "first"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "json"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["texts"] == EXPECTED_TEXTS["first"]
    table = runner.invoke(app, [*args, "--out", str(tmp_path / "json")])  # a rerun prints the summary
    assert table.exit_code == 0, table.output
    assert "first texts entry only (the official loader); 1 QAs of later entries not read" in table.output
    assert "not_first_entry" not in table.output  # not listed as bad input
    assert runner.invoke(app, [*args[:-1], "second", "--out", str(tmp_path / "bad")]).exit_code == 2


def test_synth_writes_the_mixed_layout_and_inspect_flags_differing_entries(tmp_path):
    runner = CliRunner()
    synth = runner.invoke(
        app,
        ["data", "synth", "--out", str(tmp_path), "--videos", "8", "--val", "0", "--frame-size", "16", "--texts-layout", "mixed"],
    )
    assert synth.exit_code == 0, synth.output
    report = runner.invoke(app, ["data", "inspect", str(tmp_path), "--records", "8", "--json"])
    assert report.exit_code == 0, report.output
    texts = json.loads(report.stdout)["texts"]
    assert texts["records_with_identical_entries"] and texts["records_with_differing_entries"]
    assert set(texts["entries_per_record"]) > {"1"}
    table = runner.invoke(app, ["data", "inspect", str(tmp_path), "--records", "8"])
    flagged = [line for line in table.output.splitlines() if line.startswith("entries differ: ")]
    assert len(flagged) == min(texts["records_with_differing_entries"], 5)
    assert flagged[0].startswith(f"entries differ: {texts['differing_examples'][0]['video_id']}: ")
    bad = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "x"), "--videos", "1", "--texts-layout", "odd"])
    assert bad.exit_code == 2
