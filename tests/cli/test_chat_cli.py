"""`vlmft chat`: answers equal what the backend's prompt encoding and `model.generate` give directly."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import typer
from ckpt.fabricate import adapter_template, make_run  # noqa: F401 - fixtures
from PIL import Image
from typer.testing import CliRunner

from vlmft_cli.cli import chat_cmd
from vlmft_cli.cli.app import VlmftGroup
from vlmft_cli.model_backend import LoadOptions, Turn

runner = CliRunner()
MODEL = "tiny-internvl3"
TOKENS = 4
QUESTION = "what is the robot doing?"


def vlmft():
    root = typer.Typer(cls=VlmftGroup)

    @root.callback()
    def main() -> None:
        pass

    root.command("chat")(chat_cmd.chat)
    return root


@pytest.fixture(autouse=True)
def _home(vlmft_home, monkeypatch):
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))


@pytest.fixture(scope="module")
def reference(vlmft_home):
    """The tiny model and processor loaded straight through the backend (fp32, sdpa: the cpu profile)."""
    from vlmft_cli.backends import backend_for

    backend = backend_for(MODEL)
    loaded = backend.load(MODEL, LoadOptions(precision="fp32", attn_implementation="sdpa"), vlmft_home)
    loaded.model.eval()
    return backend, loaded


def greedy(backend, processor, model, frames, turns, **sampling) -> tuple[str, int]:
    """Greedy answer by hand (sampled with `sampling`'s arguments when given): encode_prompt, generate,
    decode up to <|im_end|> / eos."""
    prompt = backend.encode_prompt(processor, frames, turns)
    tokenizer = processor.tokenizer
    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    inputs = {"input_ids": prompt.input_ids[None], "attention_mask": torch.ones(1, len(prompt), dtype=torch.long), "pixel_values": prompt.pixel_values}
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=bool(sampling), max_new_tokens=TOKENS, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id, **sampling)
    new = out[0, len(prompt) :].tolist()
    new = new[: next((i for i, t in enumerate(new) if t in stops), len(new))]
    return tokenizer.decode(new, skip_special_tokens=True).strip(), len(prompt)


def video_folder(processed_data: Path) -> Path:
    return sorted(p for p in (processed_data / "images").glob("*/*") if p.is_dir())[0]


def chat_json(args: list[str]) -> dict:
    result = runner.invoke(vlmft(), ["chat", *args, "--max-new-tokens", str(TOKENS), "--profile", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_base_model_on_a_frames_folder_answers_as_generate_does(processed_data, reference):
    backend, loaded = reference
    folder = video_folder(processed_data)
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == 16
    shown = chat_json(["--checkpoint", "none", "--model", MODEL, "--video", str(folder), "--question", QUESTION, "--size", "0"])
    # stage-1 defaults: 4 frames evenly over 16, the final one included (worked by hand)
    assert shown["frames"]["indices"] == [0, 5, 10, 15]
    assert shown["frames"]["files"] == [str(files[i]) for i in (0, 5, 10, 15)]
    frames = [Image.open(files[i]).convert("RGB") for i in (0, 5, 10, 15)]
    answer, prompt_tokens = greedy(backend, loaded.processor, loaded.model, frames, [Turn("user", QUESTION)])
    assert shown["answer"] == answer
    assert shown["tokens"]["prompt"] == prompt_tokens
    assert shown["model"]["checkpoint"] is None
    assert set(shown["timings"]) == {"video_s", "load_s", "encode_s", "generate_s"}


def test_sampling_is_seeded_and_samples_as_generate_does(processed_data, reference):
    backend, loaded = reference
    folder = video_folder(processed_data)
    files = sorted(folder.glob("*.jpg"))
    args = ["--checkpoint", "none", "--video", str(folder), "--question", QUESTION, "--size", "0", "--temperature", "5", "--top-p", "0.9", "--seed", "3"]
    shown = chat_json(args)
    assert shown["generation"] == {"decoding": "sampling", "max_new_tokens": TOKENS, "temperature": 5.0, "top_p": 0.9, "seed": 3}
    frames = [Image.open(files[i]).convert("RGB") for i in (0, 5, 10, 15)]
    torch.manual_seed(3)
    answer, _ = greedy(backend, loaded.processor, loaded.model, frames, [Turn("user", QUESTION)], temperature=5.0, top_p=0.9)
    assert shown["answer"] == answer
    assert chat_json(args)["answer"] == answer  # the same seed, the same answer


def colour(i: int) -> tuple[int, int, int]:
    return (i * 16, 255 - i * 16, (i * 48) % 256)


def test_base_model_on_an_mp4(tmp_path, reference):
    backend, loaded = reference
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 8)
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), colour(i), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    shown = chat_json(["--checkpoint", "none", "--video", str(path), "--question", QUESTION, "--max-frames", "3", "--size", "64"])
    # 12 frames → 3: round(i * 11 / 2) = 0, 6, 11 (hand-worked); 8 fps over a mean stride of 5.5
    assert shown["frames"]["indices"] == [0, 6, 11]
    assert shown["frames"]["source_frames"] == 12
    assert shown["frames"]["fps"] == pytest.approx(8 / 5.5)
    with av.open(str(path)) as container:
        decoded = [f.to_image() for f in container.decode(video=0)]
    frames = [decoded[i].convert("RGB").resize((64, 64), Image.Resampling.BICUBIC) for i in (0, 6, 11)]
    assert shown["answer"] == greedy(backend, loaded.processor, loaded.model, frames, [Turn("user", QUESTION)])[0]


def test_checkpoint_answers_with_its_adapter_and_its_runs_settings(tmp_path, make_run, processed_data, reference, vlmft_home):  # noqa: F811
    import dataclasses

    from peft import PeftModel

    from vlmft_cli.settings import resolve_settings

    backend, _ = reference
    out = tmp_path / "experiments"
    run = make_run(out, steps=(10,))
    system = "You answer questions about robots."
    stored = resolve_settings(stage=2, profile="cpu", cli={"model": MODEL, "data": processed_data, "max_frames": 3, "system_prompt": system}, environ={})
    (run.path / "config.yaml").write_text(stored.document())
    folder = video_folder(processed_data)
    files = sorted(folder.glob("*.jpg"))
    # no --size: the run's data was extracted at 64 px, so its frames go in as they are
    shown = chat_json(["--checkpoint", "latest", "--runs-dir", str(out), "--video", str(folder), "--question", QUESTION])
    assert shown["model"]["checkpoint"] == str(run.checkpoints_dir / "checkpoint-10")
    assert shown["frames"]["indices"] == [0, 8, 15]  # round(i * 15 / 2)
    assert shown["frames"]["size"] == [64, 64]
    assert shown["system_prompt"] == system
    fresh = backend.load(MODEL, LoadOptions(precision="fp32", attn_implementation="sdpa"), vlmft_home)
    adapted = PeftModel.from_pretrained(fresh.model, str(run.checkpoints_dir / "checkpoint-10")).eval()
    processor = dataclasses.replace(fresh.processor, system_prompt=system)
    frames = [Image.open(files[i]).convert("RGB") for i in (0, 8, 15)]
    answer, prompt_tokens = greedy(backend, processor, adapted, frames, [Turn("user", QUESTION)])
    assert shown["answer"] == answer
    assert shown["tokens"]["prompt"] == prompt_tokens


def test_conversation_keeps_the_history_as_stage_2_trains(processed_data, reference, monkeypatch):
    backend, loaded = reference
    folder = video_folder(processed_data)
    files = sorted(folder.glob("*.jpg"))
    monkeypatch.setattr(chat_cmd, "stdin_is_terminal", lambda: True)
    args = ["chat", "--checkpoint", "none", "--video", str(folder), "--max-new-tokens", str(TOKENS), "--profile", "cpu", "--size", "0", "--max-frames", "2"]
    result = runner.invoke(vlmft(), args, input=f"{QUESTION}\nand then?\n/exit\n")
    assert result.exit_code == 0, result.output
    answers = re.findall(r"model> (.*)", result.stdout)  # after the "you> " prompt on the same line
    frames = [Image.open(files[i]).convert("RGB") for i in (0, 15)]
    first, _ = greedy(backend, loaded.processor, loaded.model, frames, [Turn("user", QUESTION)])
    history = [Turn("user", QUESTION), Turn("assistant", first), Turn("user", "and then?")]
    second, _ = greedy(backend, loaded.processor, loaded.model, frames, history)
    assert answers == [first, second]


@pytest.mark.parametrize(
    "extra, words",
    [
        ([], "stdin is not a terminal"),
        (["--question", "x", "--temperature", "0", "--top-p", "0.5"], "--top-p only applies to sampling"),
        (["--question", "x", "--video", "also.jpg"], "a list of frames must hold image files only"),
    ],
)
def test_refusals_are_one_line(processed_data, extra, words):
    folder = video_folder(processed_data)
    result = runner.invoke(vlmft(), ["chat", "--checkpoint", "none", "--video", str(folder), *extra])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_a_merged_folder_takes_the_settings_of_the_run_it_came_from(tmp_path, make_run, processed_data, vlmft_home):  # noqa: F811
    from vlmft_cli.chat import ChatRequest, resolve_chat_target
    from vlmft_cli.ckpt.merge import merge_checkpoint
    from vlmft_cli.settings import resolve_settings

    run = make_run(tmp_path / "experiments", steps=(10,))
    stored = resolve_settings(stage=2, profile="cpu", cli={"model": MODEL, "data": processed_data, "max_frames": 3, "system_prompt": "Be brief."}, environ={})
    (run.path / "config.yaml").write_text(stored.document())
    merged = tmp_path / "merged"
    merge_checkpoint(run.checkpoints()[0], merged, home=vlmft_home, precision="fp32")
    target = resolve_chat_target(ChatRequest(video=str(tmp_path), checkpoint=str(merged), home=vlmft_home))
    assert target.checkpoint is None  # the weights are the folder's, no adapter on top
    assert (target.settings.model, target.settings.max_frames, target.settings.system_prompt) == (str(merged), 3, "Be brief.")
