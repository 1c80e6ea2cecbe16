"""`data import`: users' ShareGPT / LLaMA-Factory / hand-written JSONL over frames folders, image lists and
video files → the processed layout, which `data verify` passes and `train` trains on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from vlmft_cli.data.importer import ImportOptions, run_import
from vlmft_cli.data.schema import iter_samples
from vlmft_cli.data.verify import VerifyOptions, run_verify
from vlmft_cli.errors import DataError
from vlmft_cli.reporting import RecordingReporter

# 20 source frames kept as 16, evenly with the final one: i * 19/15 rounded, worked out by hand.
KEPT_OF_20 = [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19]


def _frame_colour(index: int) -> tuple[int, int, int]:
    return (index * 12, 255 - index * 12, 128)


def _frames_folder(folder: Path, count: int, shift: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (40, 30), _frame_colour(i + shift)).save(folder / f"frame_{i}.png")


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def _sharegpt(video: str, qas: list[tuple[str, str]], **extra) -> dict:
    conversations = []
    for n, (question, answer) in enumerate(qas):
        conversations += [
            {"from": "human", "value": ("<video>\n" if n == 0 else "") + question},
            {"from": "gpt", "value": answer},
        ]
    return {"conversations": conversations, "videos": [video], **extra}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _import(source: Path, out: Path, **options) -> dict:
    defaults = {"format": "sharegpt", "size": 32, "workers": 1}
    return run_import(ImportOptions(source=source, out=out, **{**defaults, **options})).metadata


@pytest.fixture(scope="module")
def sharegpt_set(tmp_path_factory):
    """Five episodes as frames folders (20 frames each), two QAs each (the val one: one), split in the source."""
    root = tmp_path_factory.mktemp("sharegpt")
    records = []
    for v in range(5):
        _frames_folder(root / "episodes" / f"ep{v}", 20)
        split = "val" if v == 4 else "train"
        task = "success" if v % 2 else "planning"
        qas = [(f"what next in {v}?", f"step {v}"), ("done?", "yes")][: 1 if split == "val" else 2]
        records.append(_sharegpt(f"episodes/ep{v}", qas, split=split, task_type=task))
    source = _write_jsonl(root / "data.jsonl", records)
    metadata = _import(source, root / "out")
    return root, root / "out", metadata


def test_sharegpt_frames_folders_round_trip_and_verify(sharegpt_set):
    root, out, metadata = sharegpt_set
    assert run_verify(VerifyOptions(root=out, full=True, workers=1)).ok
    assert metadata["split_from"] == "source" and metadata["skipped_samples_total"] == 0
    stage2 = {split: _lines(out / "stage2" / f"{split}.jsonl") for split in ("train", "val")}
    assert [line["metadata"]["video_id"] for line in stage2["val"]] == ["episodes/ep4"]
    assert [line["metadata"]["video_id"] for line in stage2["train"]] == [f"episodes/ep{v}" for v in range(4)]
    first = stage2["train"][1]  # ep1: a success video
    assert [t["value"] for t in first["conversations"]] == [
        "<image>\n" * 16 + "what next in 1?",
        "step 1",
        "done?",
        "yes",
    ]
    assert [t["task_type"] for t in first["metadata"]["turns"]] == ["success", "success"]
    stage1 = _lines(out / "stage1" / "train.jsonl")
    assert [
        (line["conversations"][0]["value"].split("\n")[-1], line["conversations"][1]["value"]) for line in stage1[:2]
    ] == [
        ("what next in 0?", "step 0"),
        ("done?", "yes"),
    ]
    # The frames kept are the sampler's, final frame included, each stored once per video at --size.
    frames = [out / image for image in first["images"]]
    assert len(frames) == 16 and len({image.rsplit("/", 1)[0] for line in stage1 for image in line["images"]}) == 4
    for frame, source_index in zip(frames, KEPT_OF_20, strict=True):
        with Image.open(frame) as image:
            assert image.size == (32, 32)
            red = sum(image.convert("RGB").getpixel((x, y))[0] for x in range(8, 24) for y in range(8, 24)) / 256
        assert abs(red - _frame_colour(source_index)[0]) < 4, (frame, source_index)


def test_an_imported_set_trains_stage1_and_stage2(sharegpt_set, vlmft_home, tmp_path):
    from vlmft_cli.settings import SettingsInput
    from vlmft_cli.training.recipe import TrainRequest, train

    _, out, _ = sharegpt_set
    # One step each, one frame per sample, one val QA: the cheapest run that still trains and evaluates.
    fast = {"data": out, "out": tmp_path, "home": vlmft_home, "global_batch_size": 2, "max_steps": 1}
    fast |= {"dataloader_workers": 0, "save_steps": 1, "max_frames": 1, "gradient_checkpointing": False}
    reporter = RecordingReporter()
    results = [
        train(TrainRequest(settings=SettingsInput(stage=stage, profile="cpu", flags=fast, environ={})), reporter)
        for stage in (1, 2)
    ]
    assert [r.status for r in results] == ["finished", "finished"] and [r.global_step for r in results] == [1, 1]
    assert all(r.bad_samples == 0 and math.isfinite(r.train_loss) for r in results)
    # 4 train videos with 2 QAs each: 8 stage-1 examples and 4 conversations; the val video's one QA evaluated.
    assert any("stage 1, 8 training examples" in m for m in reporter.infos)
    assert any("stage 2, 4 training examples" in m for m in reporter.infos)
    assert [r.eval_metrics["samples"] for r in results] == [1, 1]


def test_llamafactory_entry_with_its_columns_and_tags(tmp_path):
    import av

    root = tmp_path / "lf"
    _frames_folder(root / "media" / "a", 6)
    _frames_folder(root / "media" / "c", 5)
    # A video file: 24 frames at 8 fps; 16 kept, so the stored frames' rate is 8 / (23/15).
    clip = root / "media" / "b.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(24):
            frame = av.VideoFrame.from_image(Image.new("RGB", (32, 32), (i * 10, 0, 0)))
            container.mux(stream.encode(frame))
        container.mux(stream.encode())

    def record(video: str, question: str, answer: str) -> dict:
        return {
            "dialog": [
                {"speaker": "sys", "text": "Be brief."},
                {"speaker": "me", "text": f"<video>{question}"},
                {"speaker": "bot", "text": answer},
            ],
            "clips": [video],
        }

    (root / "train.json").write_text(
        json.dumps([record("media/a", "where?", "left"), record("media/b.mp4", "what?", "a cup")])
    )
    _write_jsonl(root / "val.jsonl", [record("media/c", "how?", "slowly")])
    entry = {
        "formatting": "sharegpt",
        "columns": {"messages": "dialog", "videos": "clips"},
        "tags": {
            "role_tag": "speaker",
            "content_tag": "text",
            "user_tag": "me",
            "assistant_tag": "bot",
            "system_tag": "sys",
        },
    }
    info = {"robot_train": {"file_name": "train.json", **entry}, "robot_val": {"file_name": "val.jsonl", **entry}}
    (root / "dataset_info.json").write_text(json.dumps(info))
    metadata = _import(
        root / "dataset_info.json", tmp_path / "out", format="llamafactory", dataset="robot_train", val="robot_val"
    )

    assert metadata["skipped_samples_total"] == 0 and metadata["system_prompts_dropped"] == 3
    train = _lines(tmp_path / "out" / "stage2" / "train.jsonl")
    assert [(line["metadata"]["video_id"], line["conversations"][1]["value"]) for line in train] == [
        ("media/a", "left"),
        ("media/b.mp4", "a cup"),
    ]
    val = _lines(tmp_path / "out" / "stage2" / "val.jsonl")
    assert [(line["metadata"]["video_id"], line["metadata"]["split"], len(line["images"])) for line in val] == [
        ("media/c", "val", 5)
    ]
    assert len(train[0]["images"]) == 6 and len(train[1]["images"]) == 16  # a short folder is kept whole
    assert train[1]["metadata"]["fps"] == pytest.approx(8 * 15 / 23) and "fps" not in train[0]["metadata"]
    assert [s.fps for s in iter_samples(tmp_path / "out" / "stage1" / "train.jsonl", tmp_path / "out")] == [
        None,
        pytest.approx(8 * 15 / 23),
    ]
    with pytest.raises(DataError, match="'robot' is not in .*did you mean 'robot_val'"):
        _import(root / "dataset_info.json", tmp_path / "other", format="llamafactory", dataset="robot")


def test_llamafactory_alpaca_entry_with_history_and_an_image_list(tmp_path):
    root = tmp_path / "lf"
    _frames_folder(root / "media" / "a", 3)
    frames = [f"media/a/frame_{i}.png" for i in range(3)]
    row = {"ask": "<image><image><image>And now?", "more": "Say it short.", "reply": "stop", "past": [["Start?", "go"]]}
    (root / "rows.jsonl").write_text(json.dumps({**row, "pics": frames}) + "\n")
    columns = {"prompt": "ask", "query": "more", "response": "reply", "history": "past", "images": "pics"}
    (root / "dataset_info.json").write_text(json.dumps({"rows": {"file_name": "rows.jsonl", "columns": columns}}))
    _import(root / "dataset_info.json", tmp_path / "out", format="llamafactory", dataset="rows", val_ratio=0)
    (line,) = _lines(tmp_path / "out" / "stage2" / "train.jsonl")
    # LLaMA-Factory's alpaca: the history first, then `prompt` + newline + `query`; tags out, frames first.
    assert [t["value"] for t in line["conversations"]] == [
        "<image>\n" * 3 + "Start?",
        "go",
        "And now?\nSay it short.",
        "stop",
    ]
    assert len(line["images"]) == 3


def test_bad_samples_are_counted_with_file_line_and_reason(tmp_path):
    root = tmp_path / "src"
    _frames_folder(root / "ok", 3)
    _frames_folder(tmp_path / "secret", 3)
    (root / "escape").symlink_to(tmp_path / "secret", target_is_directory=True)
    _frames_folder(root / "linked", 2)
    (root / "linked" / "frame_2.png").symlink_to(tmp_path / "secret" / "frame_0.png")  # a frame from outside
    (root / "broken").mkdir()
    (root / "broken" / "0.jpg").write_bytes(b"not a jpeg")
    good = _sharegpt("ok", [("q?", "a")])
    bad = [
        ("{oops", "not_json", "not JSON"),
        ({"videos": ["ok"]}, "bad_conversation", "no 'conversations' or 'messages'"),
        ({**good, "conversations": good["conversations"][::-1]}, "bad_conversation", "must alternate"),
        (_sharegpt("ok", [("q?", " ")]), "bad_conversation", "answer 1 is empty"),
        (
            {**good, "conversations": [{"from": "human", "value": "<video><video>q"}, {"from": "gpt", "value": "a"}]},
            "bad_conversation",
            "2 <image>/<video> tags for 1",
        ),
        (_sharegpt("../secret", [("q?", "a")]), "outside_media_root", "resolves outside the media root"),
        (_sharegpt("escape", [("q?", "a")]), "outside_media_root", "resolves outside the media root"),
        (_sharegpt("linked", [("q?", "a")]), "outside_media_root", "frame_2.png resolves outside the media root"),
        (_sharegpt("missing", [("q?", "a")]), "no_video", "does not exist"),
        (_sharegpt("https://example.com/v.mp4", [("q?", "a")]), "no_video", "URLs are not read"),
        ({**good, "videos": ["ok", "ok"]}, "no_video", "holds 2 videos"),
        ({"conversations": good["conversations"]}, "no_video", "no video"),
        (_sharegpt("ok", [("q?", "a")], split="test"), "bad_split", "split 'test' is not train or val"),
        (_sharegpt("broken", [("q?", "a")]), "unreadable_video", "cannot read this image"),
    ]
    source = _write_jsonl(root / "data.jsonl", [good, *[line for line, _, _ in bad], good])
    metadata = _import(source, tmp_path / "out")
    skipped = metadata["skipped_samples"]
    assert sorted((s["line"], s["reason"]) for s in skipped) == [(n + 2, code) for n, (_, code, _) in enumerate(bad)]
    for entry in skipped:
        _, _, reason = bad[entry["line"] - 2]
        assert reason in entry["detail"] and entry["source"] == str(source), entry
    assert metadata["skipped_samples_total"] == len(bad) and metadata["samples_read"] == len(bad) + 2
    # The two good lines name one video and ask the same QA: one stage-2 line, the repeat dropped.
    assert metadata["duplicate_qas_dropped"] == 1
    assert sum(s["stage2_lines"] for s in metadata["splits"].values()) == 1
    assert not any((tmp_path / "out" / "images").rglob("*secret*"))


def test_split_is_drawn_per_video_never_per_qa(tmp_path):
    root = tmp_path / "src"
    records = []
    for v in range(10):
        _frames_folder(root / f"v{v}", 2, shift=v)
        # One QA per line, the video named three ways: its folder; its frames as an image list in ms-swift's
        # messages; ms-swift's human/assistant pairs.
        frames = [f"v{v}/frame_0.png", f"v{v}/frame_1.png"]
        records += [
            _sharegpt(f"v{v}", [(f"q0 of {v}?", "a0")]),
            {
                "messages": [
                    {"role": "user", "content": "<image><image>q1?"},
                    {"role": "assistant", "content": "a1"},
                ],
                "images": frames,
                "system": "You are a robot.",
            },
            {"conversation": [{"human": "q2?", "assistant": "a2"}], "system": "Be brief.", "videos": f"v{v}"},
        ]
    source = _write_jsonl(root / "data.jsonl", records)
    metadata = _import(source, tmp_path / "a", val_ratio=0.3, seed=1)
    assert metadata["split_from"] == "seed" and metadata["skipped_samples_total"] == 0
    assert metadata["system_prompts_dropped"] == 20
    videos = {}
    for split in ("train", "val"):
        for line in _lines(tmp_path / "a" / "stage1" / f"{split}.jsonl"):
            videos.setdefault(line["metadata"]["video_id"], set()).add(split)
    assert len(videos) == 10 and all(len(splits) == 1 for splits in videos.values())
    val = sorted(v for v, splits in videos.items() if splits == {"val"})
    assert len(val) == 3 and metadata["splits"]["val"]["stage1_lines"] == 9
    assert [len(line["conversations"]) for line in _lines(tmp_path / "a" / "stage2" / "val.jsonl")] == [6, 6, 6]
    again = _import(source, tmp_path / "b", val_ratio=0.3, seed=1)
    assert again["splits"] == metadata["splits"]
    for name in ("stage1/train.jsonl", "stage1/val.jsonl", "stage2/val.jsonl"):
        assert (tmp_path / "a" / name).read_text().replace("/a/", "/") == (tmp_path / "b" / name).read_text().replace(
            "/b/", "/"
        )
    assert run_verify(VerifyOptions(root=tmp_path / "a", workers=1)).ok


def test_hand_written_processed_jsonl_without_metadata(tmp_path):
    root = tmp_path / "mine"
    _frames_folder(root / "clips" / "c1", 4)
    _frames_folder(root / "clips" / "c2", 4, shift=3)

    def line(clip: str, question: str, answer: str) -> dict:
        conversation = [{"from": "human", "value": "<image>\n" * 4 + question}, {"from": "gpt", "value": answer}]
        return {
            "id": f"{clip}-{question}",
            "images": [f"clips/{clip}/frame_{i}.png" for i in range(4)],
            "conversations": conversation,
        }

    _write_jsonl(root / "train.jsonl", [line("c1", "q1", "a1"), line("c1", "q2", "a2"), line("c2", "q1", "a3")])
    _write_jsonl(root / "val.jsonl", [line("c2", "q9", "a9")])
    metadata = _import(root / "train.jsonl", tmp_path / "out", format="robovqa-jsonl", val=str(root / "val.jsonl"))
    # --val names the val file; c2 is asked about in both files, so it stays in train only.
    assert metadata["skipped_reasons"] == {"video_in_both_splits": 1}
    stage2 = _lines(tmp_path / "out" / "stage2" / "train.jsonl")
    assert [(s["metadata"]["video_id"], len(s["conversations"]) // 2) for s in stage2] == [
        ("clips/c1", 2),
        ("clips/c2", 1),
    ]
    assert stage2[0]["metadata"]["turns"][0]["task_type"] == "unknown"
    assert run_verify(VerifyOptions(root=tmp_path / "out", workers=1)).ok


def test_rerun_does_nothing_and_other_output_is_refused(sharegpt_set, tmp_path):
    root, out, metadata = sharegpt_set
    before = (out / "metadata.json").read_bytes()
    result = run_import(ImportOptions(format="sharegpt", source=root / "data.jsonl", out=out, size=32, workers=1))
    assert result.already_complete and (out / "metadata.json").read_bytes() == before
    with pytest.raises(DataError, match="holds other data"):
        run_import(ImportOptions(format="sharegpt", source=root / "data.jsonl", out=out, size=48, workers=1))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        run_import(ImportOptions(format="sharegpt", source=root / "data.jsonl", out=tmp_path / "full"))


@pytest.mark.parametrize(
    "bad", [{"frames": 0}, {"size": 8}, {"quality": 101}, {"val_ratio": 1.0}, {"workers": 0}]
)
def test_options_are_validated(bad, tmp_path):
    options = ImportOptions("sharegpt", tmp_path / "data.json", tmp_path / "out", **bad)
    with pytest.raises(DataError, match="--" + next(iter(bad)).replace("_", "-")):
        options.validate()
