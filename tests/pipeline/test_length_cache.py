"""Planning at scale: bulk lengths equal per-line ones on every backend, and the plan cache is used only
for the same data and settings, is ignored (with a warning) when damaged, and equals a fresh computation."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vlmft_cli.backends import backend_for
from vlmft_cli.chat_pieces import apply_system_prompt
from vlmft_cli.data.schema import iter_samples
from vlmft_cli.data.synth import ProcessedOptions, synthesize_processed
from vlmft_cli.model_backend import Turn
from vlmft_cli.pipeline.examples import build_examples, sample_turns
from vlmft_cli.pipeline.length_cache import CACHE_DIR
from vlmft_cli.pipeline.splits import load_split
from vlmft_cli.reporting import RecordingReporter
from vlmft_cli.settings import SettingsInput

TINY = ("tiny-internvl3", "tiny-qwen2.5-vl", "tiny-qwen3-vl")


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A small full-scale stand-in: 40 train and 8 val videos, RoboVQA's QAs per video."""
    root = tmp_path_factory.mktemp("standin")
    synthesize_processed(ProcessedOptions(out=root, videos=40, val_videos=8, pool_videos=4, frame_size=32))
    return root


def _conversations(root):
    """Stage-1 and stage-2 turns of the stand-in plus turns that tokenize awkwardly, at several frame
    counts and rates."""
    samples = (
        list(iter_samples(root / "stage1" / "train.jsonl", root))[:30]
        + list(iter_samples(root / "stage2" / "train.jsonl", root))[:10]
    )
    turns = [sample_turns(s) for s in samples]
    turns += [
        [Turn("user", " leading space<|im_end|> and a literal tag"), Turn("assistant", "\nnew line first")],
        [
            Turn("user", "ünïcode — 书生 Q: ok?"),
            Turn("assistant", "yes"),
            Turn("user", "  "),
            Turn("assistant", "<image> 1- a 2- done"),
        ],
    ]
    shapes = [(4, None), (10, 2.5), (1, None), (16, 0.75), (0, None)]
    return [(frames, t, fps) for k, t in enumerate(turns) for frames, fps in [shapes[k % len(shapes)]]]


@pytest.mark.parametrize("model", TINY)
@pytest.mark.parametrize("system_prompt", [None, "none", "A custom system turn."])
def test_bulk_lengths_equal_the_per_line_ones(model, system_prompt, standin, vlmft_home):
    backend = backend_for(model)
    processor = apply_system_prompt(backend, backend.load_processor(model, vlmft_home), system_prompt)
    conversations = _conversations(standin)
    per_line = [backend.conversation_lengths(processor, frames, turns, fps=fps) for frames, turns, fps in conversations]
    assert backend.conversation_lengths_bulk(processor, conversations) == per_line
    # And the examples built in bulk hold exactly what encoding each of them gives.
    samples = list(iter_samples(standin / "stage2" / "train.jsonl", standin))[:3]
    examples, _ = build_examples(
        samples,
        backend=backend,
        processor=processor,
        max_frames=4,
        frame_sampling="uniform-last",
        max_length=4096,
        clip_fps=2.0,
    )
    assert [e.length for e in examples] == [
        backend.conversation_lengths(processor, 4, sample_turns(s), fps=e.fps)[-1]
        for s, e in zip(samples, examples, strict=True)
    ]


def _settings(data, home, **flags):
    return (
        SettingsInput(
            stage=1, profile="cpu", flags={"data": data, "home": home, "model": "tiny-internvl3", **flags}, environ={}
        )
        .resolve()
        .settings
    )


@pytest.fixture(scope="module")
def internvl(vlmft_home):
    backend = backend_for("tiny-internvl3")
    return backend, backend.load_processor("tiny-internvl3", vlmft_home)


def _load(settings, internvl, split="train"):
    backend, processor = internvl
    processor = apply_system_prompt(backend, processor, settings.system_prompt)
    reporter = RecordingReporter()
    examples, summary = load_split(settings, split, backend, processor, reporter, required=True)
    return examples, summary, reporter


def _cache_files(home):
    return sorted((home / CACHE_DIR).glob("*.npz"))


def test_a_second_read_comes_from_the_cache_and_equals_a_fresh_computation(standin, internvl, tmp_path):
    home = tmp_path / "home"
    first, summary, _ = _load(_settings(standin, home), internvl)
    again, cached, _ = _load(_settings(standin, home), internvl)
    assert not summary.cached and cached.cached
    assert list(again) == list(first) and len(first) == summary.lines == 145  # round(40 × 722979 / 199721)
    assert cached.token_lengths == summary.token_lengths and cached.qas == summary.qas
    # The sha256 taken while parsing is the file's.
    import hashlib

    assert (
        summary.sha256 == cached.sha256 == hashlib.sha256((standin / "stage1" / "train.jsonl").read_bytes()).hexdigest()
    )
    # Not a pickle: NumPy reads it with pickles refused; and no temporary file is left beside it.
    with np.load(_cache_files(home)[0], allow_pickle=False) as data:
        assert "lengths" in data.files
    assert not [p for p in (home / CACHE_DIR).iterdir() if p.suffix != ".npz"]


def test_a_miss_reads_the_jsonl_once_and_a_hit_not_at_all(standin, internvl, tmp_path, monkeypatch):
    import builtins
    import io

    import vlmft_cli.fsutil

    jsonl = (standin / "stage1" / "train.jsonl").resolve()
    opened = []
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if str(file).endswith(".jsonl") and Path(file).resolve() == jsonl:
            opened.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(vlmft_cli.fsutil, "sha256_file", lambda *_: pytest.fail("the JSONL was hashed apart"))
    home = tmp_path / "home"
    _load(_settings(standin, home), internvl)
    assert len(opened) == 1  # parsed and hashed in one read
    _, summary, _ = _load(_settings(standin, home), internvl)
    assert summary.cached and len(opened) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"max_frames": 2},
        {"frame_sampling": "last"},
        {"fps": 3.0},
        {"max_length": 120},
        {"system_prompt": "Be brief."},
        {"pack": "none"},
        {"subset_ratio": 0.5},
    ],
)
def test_each_keyed_setting_invalidates_the_cache(change, standin, internvl, tmp_path):
    home = tmp_path / "home"
    _load(_settings(standin, home), internvl)
    changed, summary, _ = _load(_settings(standin, home, **change), internvl)
    assert not summary.cached
    fresh, _, _ = _load(_settings(standin, tmp_path / "fresh", **change), internvl)
    assert list(changed) == list(fresh)
    assert _load(_settings(standin, home, **change), internvl)[1].cached


def test_changed_data_or_processor_invalidates_the_cache(standin, internvl, tmp_path):
    import dataclasses
    import shutil

    data, home = tmp_path / "data", tmp_path / "home"
    shutil.copytree(standin, data)
    before, _, _ = _load(_settings(data, home), internvl)
    # Same size, other content: one answer's letters swapped.
    path = data / "stage1" / "train.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    line = json.loads(lines[0])
    line["conversations"][1]["value"] = line["conversations"][1]["value"][::-1]
    lines[0] = json.dumps(line) + "\n"
    path.write_text("".join(lines))
    after, summary, _ = _load(_settings(data, home), internvl)
    assert not summary.cached and after[0].turns[1].text == before[0].turns[1].text[::-1]
    # Another processor (more image tokens per frame): other lengths, computed again.
    backend, processor = internvl
    other = dataclasses.replace(processor, image_seq_length=processor.image_seq_length + 3)
    examples, summary = load_split(_settings(data, home), "train", backend, other, RecordingReporter(), required=True)
    assert not summary.cached
    assert [e.length for e in examples] == [e.length + 4 * 3 for e in after]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "bad_code"])
def test_a_damaged_cache_is_ignored_with_a_warning(damage, standin, internvl, tmp_path):
    home = tmp_path / "home"
    first, _, _ = _load(_settings(standin, home), internvl)
    cache = _cache_files(home)[0] if "train" in _cache_files(home)[0].name else _cache_files(home)[1]
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    elif damage == "garbage":
        cache.write_bytes(b"not a cache at all")
    else:  # a whole, loadable file whose columns point outside their tables
        with np.load(cache, allow_pickle=False) as loaded:
            arrays = {name: loaded[name] for name in loaded.files}
        arrays["frame_of"] = arrays["frame_of"] + 1000
        with zipfile.ZipFile(cache, "w") as archive:
            for name, values in arrays.items():
                with archive.open(f"{name}.npy", "w") as handle:
                    np.lib.format.write_array(handle, values, allow_pickle=False)
    again, summary, reporter = _load(_settings(standin, home), internvl)
    assert not summary.cached and list(again) == list(first)
    assert any("plan cache" in w and "not used" in w for w in reporter.warnings)
    assert _load(_settings(standin, home), internvl)[1].cached  # rewritten whole
