"""The Qwen2.5-VL and Qwen3-VL backends: names, tiny models, video encoding and timing, LoRA, attention, configs.

Every test runs for both backends unless its name says which; the tiny models are built once per session.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmft_cli.model_backend import DEFAULT_LORA_PROJECTIONS, IGNORE_INDEX, LoadOptions, ModelBackend, Turn
from vlmft_qwen_vl import Qwen3VLBackend, Qwen25VLBackend
from vlmft_qwen_vl import tiny as tiny_module
from vlmft_qwen_vl.family import DEFAULT_FPS
from vlmft_qwen_vl.tokens import IM_END, NAMED_TOKENS, SPECIAL_TOKEN_IDS, VIDEO_PAD, VISION_END, VISION_START

QA_TURNS = [
    Turn("user", "current goal is: Please remove the chips from the basket Q: immediate next step?"),
    Turn("assistant", "place the packet on the table"),
]
MULTI_TURNS = [
    *QA_TURNS,
    Turn("user", "put the glass into the trash Q: satisfied?"),
    Turn("assistant", "yes"),
    Turn("user", "Q: what just happened?"),
    Turn("assistant", "1- pick up the sanitizer 2- done"),
]
#: (backend class, tiny frame size, video tokens per 2-frame chunk, tokens_per_frame)
TINY = {"qwen2_5_vl": (112, 16, 8), "qwen3_vl": (128, 16, 9)}


def make_frames(count: int, size: int = 64, seed: int | None = None) -> list[Image.Image]:
    rng = np.random.default_rng(count if seed is None else seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture(scope="module", params=[Qwen25VLBackend, Qwen3VLBackend], ids=["qwen2_5_vl", "qwen3_vl"])
def backend(request):
    return request.param()


@pytest.fixture(scope="module")
def loaded(backend, vlmft_home):
    return backend.load(backend.tiny_names()[0], LoadOptions(precision="fp32", attn_implementation="sdpa"), vlmft_home)


@pytest.fixture(scope="module")
def processor(loaded):
    return loaded.processor


def reference_timestamps(num_frames: int, fps: float) -> list[float]:
    """transformers' own rule (Qwen3VLProcessor._calculate_timestamps does not use its instance)."""
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    return Qwen3VLProcessor._calculate_timestamps(None, list(range(num_frames)), fps, 2)


def expanded_video(processor, num_frames: int, fps: float = DEFAULT_FPS) -> str:
    """A video placeholder expanded as Qwen's processors expand it (Qwen3-VL: the reference processor's
    per-chunk "<t seconds><|vision_start|>…<|vision_end|>" blocks replacing the whole placeholder)."""
    chunks = -(-num_frames // 2)
    if not processor.family.timestamps:
        return VISION_START + VIDEO_PAD * (chunks * processor.tokens_per_chunk) + VISION_END
    return "".join(
        f"<{seconds:.1f} seconds>{VISION_START}{VIDEO_PAD * processor.tokens_per_chunk}{VISION_END}"
        for seconds in reference_timestamps(num_frames, fps)
    )


# --- names ------------------------------------------------------------------------------------------


def test_satisfies_the_protocol_and_is_registered(backend):
    from vlmft_cli import plugins

    assert isinstance(backend, ModelBackend)
    assert type(plugins.get("models", backend.name)) is type(backend)
    assert backend.tiny_names() == [backend.family.tiny_name]
    assert backend.supports_block_mask("sdpa") and backend.supports_block_mask("eager")
    assert not backend.supports_block_mask("flash_attention_2")


def test_each_name_is_claimed_by_exactly_one_backend(tmp_path):
    from vlmft_cli.backends import backend_for

    expected = {
        "tiny-qwen2.5-vl": "qwen2_5_vl",
        "Qwen/Qwen2.5-VL-7B-Instruct": "qwen2_5_vl",
        "someone/my_qwen2_5_vl_finetune": "qwen2_5_vl",
        "tiny-qwen3-vl": "qwen3_vl",
        "Qwen/Qwen3-VL-8B-Instruct": "qwen3_vl",
        "someone/QWEN3_VL-robot": "qwen3_vl",
        "tiny-internvl3": "internvl3",
        "OpenGVLab/InternVL3-8B-hf": "internvl3",
    }
    for name, backend_name in expected.items():
        assert backend_for(name).name == backend_name, name
    assert not Qwen25VLBackend().handles("Qwen/Qwen2-VL-7B-Instruct")
    # A local folder goes by its config, whatever its name says.
    for model_type, folder_name in [("qwen2_5_vl", "qwen3-vl-named"), ("qwen3_vl", "qwen2.5-vl-named")]:
        folder = tmp_path / folder_name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert backend_for(str(folder)).name == model_type


def test_resolve_keeps_hub_ids_and_absolutises_folders(backend, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # a hub that answers (offline: tests/test_plugins.py)
    monkeypatch.setattr("vlmft_cli.model_backend.hub_unreachable", lambda timeout_s=5.0: None)
    hub_id = backend.family.hub_ids[0]
    assert backend.resolve(hub_id, tmp_path) == hub_id
    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    assert backend.resolve("ckpt", tmp_path / "home") == str(tmp_path / "ckpt")


# --- the tiny models --------------------------------------------------------------------------------


def test_tiny_model_is_written_under_home_and_reloads(backend, vlmft_home, loaded):
    from transformers import AutoModelForImageTextToText

    name = backend.tiny_names()[0]
    folder = Path(backend.resolve(name, vlmft_home))
    assert folder == vlmft_home / "models" / name and loaded.source == str(folder)
    for file in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (folder / file).is_file()
    reloaded = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(reloaded).__name__ == backend.family.model_class == type(loaded.model).__name__
    assert sum(p.numel() for p in reloaded.parameters()) < 1_000_000
    config, processor = reloaded.config, loaded.processor
    assert config.model_type == backend.family.model_type
    assert config.video_token_id == processor.video_pad_id and config.vision_start_token_id == processor.vision_start_id
    assert config.text_config.vocab_size == len(processor.tokenizer)
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    if backend.name == "qwen2_5_vl":
        assert config.vision_config.tokens_per_second == 2 and config.vision_config.hidden_size == 32
    assert not any(p.name.startswith(f".{name}") for p in folder.parent.iterdir())


def test_tiny_builds_are_byte_identical_and_a_failed_build_leaves_nothing(backend, tmp_path, monkeypatch):
    first = tiny_module.ensure_tiny_model(backend.family, tmp_path / "a")
    second = tiny_module.ensure_tiny_model(backend.family, tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name

    def crash(family, directory: Path) -> None:
        (directory / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny_module, "write_tiny_model", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny_module.ensure_tiny_model(backend.family, tmp_path / "c")
    assert list((tmp_path / "c" / "models").iterdir()) == []


def test_tiny_tokenizer_has_the_qwen_special_tokens_in_their_real_order(processor):
    tokenizer = processor.tokenizer
    base = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    for token, real_id in SPECIAL_TOKEN_IDS.items():
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [base + real_id - 151643], token
    for attribute, token in NAMED_TOKENS.items():
        assert getattr(tokenizer, attribute) == token
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.chat_template == processor.family.chat_template
    text = "place the packet on the table"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_default_system_turn_comes_from_the_chat_template(backend, processor):
    from vlmft_qwen_vl.processor import default_system_prompt

    expected = {"qwen2_5_vl": "You are a helpful assistant.", "qwen3_vl": None}[backend.name]
    assert processor.system_prompt == expected
    tokenizer = processor.tokenizer
    plain = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    custom = "<|im_start|>system\nBe brief.<|im_end|>\n" + plain
    for template, prompt in [(custom, "Be brief."), (plain, None), (None, expected)]:  # None: the family's
        original, tokenizer.chat_template = tokenizer.chat_template, template
        try:
            assert default_system_prompt(tokenizer, backend.family) == prompt
        finally:
            tokenizer.chat_template = original


# --- encoding ---------------------------------------------------------------------------------------


def test_frames_become_one_video(backend, processor):
    frame_size, per_chunk, per_frame = TINY[backend.name]
    assert processor.frame_size == frame_size and processor.tokens_per_chunk == per_chunk
    assert backend.tokens_per_frame(processor) == per_frame
    sample = backend.encode(processor, make_frames(4), QA_TURNS)
    ids = sample.input_ids
    is_video = ids == processor.video_pad_id
    assert int(is_video.sum()) == 2 * per_chunk
    starts = 2 if processor.family.timestamps else 1  # Qwen3-VL: one start/end pair per chunk
    assert int((ids == processor.vision_start_id).sum()) == int((ids == processor.vision_end_id).sum()) == starts
    assert sample.num_image_tokens == 2 * per_chunk + 2 * starts
    assert torch.equal(sample.extra["mm_token_type_ids"], is_video.long() * 2)
    patch = processor.patch_size
    side = frame_size // patch
    assert sample.extra["video_grid_thw"].tolist() == [[2, side, side]]
    assert sample.extra["pixel_values_videos"].shape == (2 * side * side, 3 * 2 * patch * patch)
    assert sample.extra["pixel_values_videos"].dtype == torch.float32
    assert sample.pixel_values.shape[0] == 0  # the model's `pixel_values` are images, not these frames
    if backend.name == "qwen2_5_vl":
        assert sample.extra["second_per_grid_ts"].tolist() == [2 / DEFAULT_FPS]
    else:
        assert "second_per_grid_ts" not in sample.extra


def test_video_patches_match_the_video_processor_layout(processor):
    """Patch rows and columns as transformers' Qwen video processor lays them out (its `patchify` is pure
    torch; the processor class needs torchvision only for resizing)."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    from vlmft_qwen_vl.video import resize_frames, video_inputs

    frames = make_frames(3, size=80)
    image_processor = processor.image_processor
    mean = np.array(image_processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.array(image_processor.image_std, dtype=np.float32)[:, None, None]
    resized = resize_frames(processor, frames)
    normalized = [(np.asarray(f, dtype=np.float32).transpose(2, 0, 1) / 255.0 - mean) / std for f in resized]
    video = torch.from_numpy(np.stack(normalized))[None]  # (1, frames, C, H, W); 3 frames: patchify pads
    expected, grid_t, grid_h, grid_w = Qwen3VLVideoProcessor.patchify(
        None, video, processor.patch_size, processor.merge_size, processor.temporal_patch_size
    )
    got = video_inputs(processor, frames)
    assert got.video_grid_thw.tolist() == [[grid_t, grid_h, grid_w]] == [[2, grid_h, grid_h]]
    torch.testing.assert_close(got.pixel_values_videos, expected[0], atol=1e-5, rtol=1e-5)


def test_an_odd_frame_count_repeats_the_last_frame(backend, processor):
    three = make_frames(3)
    four = [*three, three[-1]]
    odd, even = backend.encode(processor, three, QA_TURNS), backend.encode(processor, four, QA_TURNS)
    assert torch.equal(odd.extra["pixel_values_videos"], even.extra["pixel_values_videos"])
    assert torch.equal(odd.extra["video_grid_thw"], even.extra["video_grid_thw"])
    assert backend.conversation_lengths(processor, 3, QA_TURNS) == [len(odd)]
    if processor.family.timestamps:  # the repeated frame is at the last frame's time: chunk 2 is at 1.0 s
        assert "<0.2 seconds>" in processor.decode(odd.input_ids) and "<1.0 seconds>" in processor.decode(odd.input_ids)
        assert "<1.2 seconds>" in processor.decode(even.input_ids)
    else:
        assert torch.equal(odd.input_ids, even.input_ids)


@pytest.mark.parametrize("turns", [QA_TURNS, MULTI_TURNS], ids=["single", "multi"])
def test_labels_cover_exactly_the_answers_and_their_end_token(backend, processor, turns):
    sample = backend.encode(processor, make_frames(3), turns)
    answers = [turn.text for turn in turns if turn.role == "assistant"]
    assert len(sample.answer_spans) == len(answers)
    labelled = sample.labels != IGNORE_INDEX
    covered = torch.zeros_like(labelled)
    for (start, end), answer in zip(sample.answer_spans, answers, strict=True):
        assert processor.decode(sample.labels[start:end]) == answer + IM_END
        assert torch.equal(sample.labels[start:end], sample.input_ids[start:end])
        covered[start:end] = True
    assert torch.equal(labelled, covered)


@pytest.mark.parametrize("num_frames", [4, 5])
def test_encoding_matches_the_chat_template_rendering(backend, processor, num_frames):
    sample = backend.encode(processor, make_frames(num_frames), MULTI_TURNS)
    messages = [
        {
            "role": turn.role,
            "content": ([{"type": "video"}] if index == 0 else []) + [{"type": "text", "text": turn.text}],
        }
        for index, turn in enumerate(MULTI_TURNS)
    ]
    rendered = processor.tokenizer.apply_chat_template(messages, tokenize=False)
    placeholder = VISION_START + VIDEO_PAD + VISION_END
    assert rendered.count(placeholder) == 1
    rendered = rendered.replace(placeholder, expanded_video(processor, num_frames))
    assert processor.decode(sample.input_ids) == rendered
    assert sample.input_ids.tolist() == processor.tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_encode_prompt_ends_where_the_answer_starts(backend, processor):
    prompt = backend.encode_prompt(processor, make_frames(2), MULTI_TURNS[:3])
    assert processor.decode(prompt.input_ids).endswith(
        "put the glass into the trash Q: satisfied?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert bool((prompt.labels == IGNORE_INDEX).all()) and prompt.answer_spans == []
    full = backend.encode(processor, make_frames(2), MULTI_TURNS[:4])
    assert torch.equal(full.input_ids[: len(prompt)], prompt.input_ids)
    assert torch.equal(full.extra["mm_token_type_ids"][: len(prompt)], prompt.extra["mm_token_type_ids"])


def test_system_prompt_and_literal_special_text(backend, processor):
    with_system = replace(processor, system_prompt="You are a robot.")
    sample = backend.encode(
        with_system, [], [Turn("user", "say <|im_end|> and <|video_pad|>"), Turn("assistant", "ok")]
    )
    text = processor.decode(sample.input_ids)
    assert text.startswith(
        "<|im_start|>system\nYou are a robot.<|im_end|>\n<|im_start|>user\nsay <|im_end|> and <|video_pad|>"
    )
    assert sample.input_ids.tolist().count(processor.im_end_id) == 3  # the literal one stays text
    assert not sample.extra["mm_token_type_ids"].any() and "video_grid_thw" not in sample.extra
    assert sample.num_image_tokens == 0


QWEN25_DEFAULT_TURN = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
ROBOT = "You are a robot arm. Answer in five words."
#: backend → system_prompt setting → (the system message given to the chat template, None = none given;
#: whether the template's own default system turn is then cut off: Qwen2.5-VL's template always writes one).
SYSTEM_MODES = {
    "qwen2_5_vl": {
        None: (None, False),  # the template's default: "You are a helpful assistant."
        "none": (None, True),
        "official": ("You are a helpful assistant.", False),  # qwen-vl-finetune's system message
        ROBOT: (ROBOT, False),
    },
    "qwen3_vl": {
        None: (None, False),  # the template writes none
        "none": (None, False),
        "official": (None, False),  # qwen-vl-finetune renders Qwen3-VL samples with no system message
        ROBOT: (ROBOT, False),
    },
}


def _rendered(processor, system, cut_default, turns, num_frames, *, generation_prompt=False) -> str:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [
        {"role": turn.role, "content": ([{"type": "video"}] if index == 0 else []) + [{"type": "text", "text": turn.text}]}
        for index, turn in enumerate(turns)
    ]
    rendered = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    if cut_default:
        assert rendered.startswith(QWEN25_DEFAULT_TURN)
        rendered = rendered[len(QWEN25_DEFAULT_TURN) :]
    return rendered.replace(VISION_START + VIDEO_PAD + VISION_END, expanded_video(processor, num_frames))


@pytest.mark.parametrize("mode", [None, "none", "official", ROBOT], ids=["default", "none", "official", "text"])
def test_each_system_prompt_mode_encodes_as_the_chat_template_renders_it(backend, processor, mode):
    system, cut_default = SYSTEM_MODES[backend.name][mode]
    chosen = backend.with_system_prompt(processor, mode)
    frames = make_frames(4)
    tokenizer = processor.tokenizer
    sample = backend.encode(chosen, frames, MULTI_TURNS)
    rendered = _rendered(processor, system, cut_default, MULTI_TURNS, 4)
    assert sample.input_ids.tolist() == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    prompt = backend.encode_prompt(chosen, frames, MULTI_TURNS[:3])
    rendered_prompt = _rendered(processor, system, cut_default, MULTI_TURNS[:3], 4, generation_prompt=True)
    assert prompt.input_ids.tolist() == tokenizer(rendered_prompt, add_special_tokens=False)["input_ids"]
    lengths = backend.conversation_lengths(chosen, 4, MULTI_TURNS)
    assert lengths == [len(backend.encode(chosen, frames, MULTI_TURNS[: 2 * (k + 1)])) for k in range(3)]
    assert lengths[-1] == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    answers = [turn.text for turn in MULTI_TURNS if turn.role == "assistant"]
    assert [processor.decode(sample.labels[a:b]) for a, b in sample.answer_spans] == [a + IM_END for a in answers]
    # The video tokens are typed where they are, after the system turn.
    assert torch.equal(sample.extra["mm_token_type_ids"], (sample.input_ids == processor.video_pad_id).long() * 2)
    # Unset again means the template's default, whatever was chosen before.
    assert backend.with_system_prompt(chosen, None).system_prompt == processor.system_prompt


@pytest.mark.parametrize(
    "turns",
    [[], [Turn("assistant", "yes")], [Turn("user", "a"), Turn("user", "b")], [Turn("user", "a")]],
    ids=["empty", "assistant-first", "not-alternating", "no-answer"],
)
def test_encode_rejects_malformed_conversations(backend, processor, turns):
    with pytest.raises(ValueError):
        backend.encode(processor, make_frames(1), turns)


@pytest.mark.parametrize("frames", [0, 1, 3, 4, 10])
def test_conversation_lengths_match_encoding_cut_after_each_answer(backend, processor, frames):
    lengths = backend.conversation_lengths(processor, frames, MULTI_TURNS)
    images = make_frames(frames)
    assert lengths == [len(backend.encode(processor, images, MULTI_TURNS[: 2 * (k + 1)])) for k in range(3)]
    with pytest.raises(ValueError):
        backend.conversation_lengths(processor, frames, MULTI_TURNS[:3])


def test_collate_pads_right_and_concatenates_videos(backend, processor):
    short = backend.encode(processor, make_frames(2), QA_TURNS)
    long = backend.encode(processor, make_frames(5), MULTI_TURNS)
    text_only = backend.encode(processor, [], QA_TURNS)
    batch = backend.collate([short, text_only, long], pad_token_id=processor.pad_token_id)
    width = len(long)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["mm_token_type_ids"].shape == (3, width)
    assert "pixel_values" not in batch
    assert batch["video_grid_thw"].tolist() == [
        short.extra["video_grid_thw"][0].tolist(),
        long.extra["video_grid_thw"][0].tolist(),
    ]
    assert torch.equal(
        batch["pixel_values_videos"], torch.cat([short.extra["pixel_values_videos"], long.extra["pixel_values_videos"]])
    )
    pad = slice(len(short), width)
    assert bool((batch["input_ids"][0, pad] == processor.pad_token_id).all())
    assert bool((batch["labels"][0, pad] == IGNORE_INDEX).all()) and not batch["mm_token_type_ids"][0, pad].any()
    assert batch["attention_mask"][0].tolist() == [1] * len(short) + [0] * (width - len(short))
    if backend.name == "qwen2_5_vl":
        assert batch["second_per_grid_ts"].shape == (2,)
    del short.extra["mm_token_type_ids"]
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        backend.collate([short, long], pad_token_id=processor.pad_token_id)


def test_processor_survives_pickling_for_data_workers(backend, processor):
    import pickle

    copy = pickle.loads(pickle.dumps(processor))
    frames = make_frames(2)
    assert torch.equal(
        backend.encode(copy, frames, QA_TURNS).input_ids, backend.encode(processor, frames, QA_TURNS).input_ids
    )


# --- frame rate -------------------------------------------------------------------------------------


def test_qwen3_timestamps_follow_the_fps_given(vlmft_home):
    backend = Qwen3VLBackend()
    processor = backend.load_processor("tiny-qwen3-vl", vlmft_home)
    frames = make_frames(6)

    def stamps(fps):
        text = processor.decode(backend.encode(processor, frames, QA_TURNS, fps=fps).input_ids)
        return re.findall(r"<(\d+\.\d) seconds>", text)

    assert stamps(1.0) == ["0.5", "2.5", "4.5"]
    assert stamps(4.0) == [f"{t:.1f}" for t in reference_timestamps(6, 4.0)] == ["0.1", "0.6", "1.1"]
    assert stamps(None) == stamps(DEFAULT_FPS) == ["0.2", "1.2", "2.2"]
    assert stamps(None) != [f"{t:.1f}" for t in reference_timestamps(6, 24.0)]  # never the processor's 24 fps guess
    # Longer timestamps cost more tokens, and the predicted lengths follow the rate too.
    slow = backend.encode(processor, frames, QA_TURNS, fps=0.1)
    assert backend.conversation_lengths(processor, 6, QA_TURNS, fps=0.1) == [len(slow)]
    assert len(slow) > len(backend.encode(processor, frames, QA_TURNS))
    with pytest.raises(ValueError):
        backend.encode(processor, frames, QA_TURNS, fps=0.0)


def test_qwen2_5_fps_spaces_the_temporal_rope_positions(vlmft_home):
    backend = Qwen25VLBackend()
    loaded = backend.load("tiny-qwen2.5-vl", LoadOptions(precision="fp32"), vlmft_home)
    processor = loaded.processor
    frames = make_frames(6)
    steps = {}
    for fps in (0.5, 2.0, 4.0):
        batch = backend.collate([backend.encode(processor, frames, QA_TURNS, fps=fps)], processor.pad_token_id)
        positions, _ = loaded.model.model.get_rope_index(
            batch["input_ids"],
            batch["mm_token_type_ids"],
            video_grid_thw=batch["video_grid_thw"],
            second_per_grid_ts=batch["second_per_grid_ts"],
            attention_mask=batch["attention_mask"],
        )
        video = batch["input_ids"][0] == processor.video_pad_id
        temporal = positions[0, 0, video].unique()
        assert len(temporal) == 3  # three chunks
        steps[fps] = (temporal[1] - temporal[0]).item()
    # tokens_per_second (2) × seconds per chunk (2 frames / fps)
    assert steps == {0.5: 8, 2.0: 2, 4.0: 1}


# --- training path ----------------------------------------------------------------------------------


def lora(model, pattern: str):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=pattern, lora_dropout=0.0))


def test_lora_pattern_adapts_every_language_projection_and_nothing_else(backend, vlmft_home):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(backend.resolve(backend.tiny_names()[0], vlmft_home))
    peft_model = lora(model, backend.lora_target_pattern())
    adapted = [
        name for name, module in peft_model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A) > 0
    ]
    layers = model.config.text_config.num_hidden_layers
    assert len(adapted) == len(DEFAULT_LORA_PROJECTIONS) * layers
    assert all(".language_model.layers." in name for name in adapted)
    for projection in DEFAULT_LORA_PROJECTIONS:
        assert sum(name.endswith("." + projection) for name in adapted) == layers
    assert not any(".visual." in name for name in adapted)
    if backend.name == "qwen2_5_vl":  # its vision blocks have same-named MLP projections, left alone
        assert [n for n, _ in model.named_modules() if n.startswith("model.visual.blocks.") and n.endswith("gate_proj")]


def test_lora_pattern_on_the_real_module_names(backend):
    (variant,) = backend.architecture_variants()
    model = meta_model(variant)
    pattern = re.compile(backend.lora_target_pattern())
    matched = [name for name, _ in model.named_modules() if pattern.fullmatch(name)]
    layers = PUBLISHED[variant]["text"]["num_hidden_layers"]  # 28 / 36
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert sorted(matched) == sorted(
        f"model.language_model.layers.{layer}.{'mlp' if p in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'}.{p}"
        for layer in range(layers)
        for p in projections
    )


def test_forward_loss_is_finite_and_lora_backward_reaches_only_adapters(backend, vlmft_home, processor):
    model = lora(
        backend.load(backend.tiny_names()[0], LoadOptions(precision="fp32"), vlmft_home).model,
        backend.lora_target_pattern(),
    )
    batch = backend.collate(
        [backend.encode(processor, make_frames(4), QA_TURNS), backend.encode(processor, make_frames(3), MULTI_TURNS)],
        processor.pad_token_id,
    )
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert any(p.grad.abs().sum() > 0 for name, p in trainable.items() if "lora_B" in name)


def test_the_video_reaches_the_model(backend, loaded, processor):
    """The loss depends on the frames' pixels (the video features are scattered into the sequence)."""
    losses = []
    for seed in (1, 2):
        batch = backend.collate(
            [backend.encode(processor, make_frames(4, seed=seed), QA_TURNS)], processor.pad_token_id
        )
        with torch.no_grad():
            losses.append(loaded.model(**batch).loss.item())
    assert losses[0] != losses[1]


def test_video_positions_and_frame_rate_reach_the_forward(backend, loaded, processor):
    """`mm_token_type_ids` switches on the 3-D rope positions (Qwen3-VL refuses to run without them), and
    the frame rate changes what the model computes (Qwen2.5-VL: rope spacing; Qwen3-VL: timestamp text)."""
    frames = make_frames(6)

    def loss(batch):
        with torch.no_grad():
            return loaded.model(**batch).loss.item()

    batch = backend.collate([backend.encode(processor, frames, QA_TURNS)], processor.pad_token_id)
    without_types = {key: value for key, value in batch.items() if key != "mm_token_type_ids"}
    if processor.family.timestamps:
        with pytest.raises(ValueError, match="mm_token_type_ids"):
            loss(without_types)
    else:
        assert loss(without_types) != pytest.approx(loss(batch), abs=1e-6)
    slow = backend.collate([backend.encode(processor, frames, QA_TURNS, fps=0.5)], processor.pad_token_id)
    assert loss(slow) != pytest.approx(loss(batch), abs=1e-6)


def test_attn_implementation_reaches_the_model_and_losses_agree(backend, vlmft_home, processor):
    batch = backend.collate([backend.encode(processor, make_frames(4), MULTI_TURNS)], processor.pad_token_id)
    losses = {}
    for implementation in ("sdpa", "eager"):
        model = backend.load(
            backend.tiny_names()[0], LoadOptions(precision="fp32", attn_implementation=implementation), vlmft_home
        ).model
        assert model.config.text_config._attn_implementation == implementation
        assert model.config.vision_config._attn_implementation == implementation
        with torch.no_grad():
            losses[implementation] = model(**batch).loss.item()
    assert losses["sdpa"] == pytest.approx(losses["eager"], abs=1e-5)


def test_left_padded_generation_matches_generating_alone(backend, loaded, processor):
    from vlmft_cli.evaluate.generation import generate_batch

    long = backend.encode_prompt(processor, make_frames(5), MULTI_TURNS[:3])
    short = backend.encode_prompt(processor, make_frames(2), MULTI_TURNS[:1])
    kwargs = {
        "pad_token_id": processor.pad_token_id,
        "stop_ids": [processor.im_end_id],
        "max_new_tokens": 4,
        "device": "cpu",
    }
    together = generate_batch(loaded.model, [long, short], **kwargs)
    assert together[1] == generate_batch(loaded.model, [short], **kwargs)[0]
    assert together[0] == generate_batch(loaded.model, [long], **kwargs)[0]


def test_precision_reaches_the_weights(backend, vlmft_home):
    model = backend.load(backend.tiny_names()[0], LoadOptions(precision="bf16"), vlmft_home).model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_4bit_quantizes_the_language_model_only(backend, vlmft_home, processor):
    model = backend.load(backend.tiny_names()[0], LoadOptions(quantization="4bit", device_map="cpu"), vlmft_home).model
    kinds = {
        name: type(module).__name__
        for name, module in model.named_modules()
        if name.endswith(("q_proj", "qkv", "linear_fc1", "gate_proj"))
    }
    assert {kind for name, kind in kinds.items() if ".language_model." in name} == {"Linear4bit"}
    assert {kind for name, kind in kinds.items() if ".visual." in name} == {"Linear"}
    batch = backend.collate([backend.encode(processor, make_frames(2), QA_TURNS)], processor.pad_token_id)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


# --- real checkpoints (layout only: nothing is downloaded) --------------------------------------------


def test_real_layout_processor_composes_without_torchvision(backend, processor, tmp_path):
    """A folder laid out like the hub checkpoint: its config, a fast-processor preprocessor config with a
    pixel range (no pinned size), so frames take the family's default size."""
    from transformers import Qwen2VLImageProcessorPil

    folder = tmp_path / backend.family.hub_ids[0].split("/")[1]
    (variant,) = backend.architecture_variants()
    backend.architecture_config(variant).save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": backend.family.patch_size,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": list(backend.family.image_mean),
        "image_std": list(backend.family.image_std),
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    assert backend.handles(str(folder))
    real = backend.load_processor(str(folder), tmp_path / "home")
    assert isinstance(real.image_processor, Qwen2VLImageProcessorPil)
    per_chunk, per_frame = {"qwen2_5_vl": (100, 50), "qwen3_vl": (81, 42)}[backend.name]  # 280/28, 288/32 → 10², 9²
    assert real.frame_size == backend.family.default_frame_size
    assert real.tokens_per_chunk == per_chunk and backend.tokens_per_frame(real) == per_frame
    sample = backend.encode(real, make_frames(4, size=288), QA_TURNS)
    side = real.frame_size // real.patch_size
    assert sample.extra["video_grid_thw"].tolist() == [[2, side, side]]
    assert int((sample.input_ids == real.video_pad_id).sum()) == 2 * per_chunk
    assert backend.conversation_lengths(real, 4, QA_TURNS) == [len(sample)]


def test_a_checkpoint_of_another_model_type_is_refused(backend, tmp_path):
    from vlmft_cli.errors import PluginError
    from vlmft_qwen_vl.loading import check_model_type

    other = {"qwen2_5_vl": "qwen3_vl", "qwen3_vl": "qwen2_5_vl"}[backend.name]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": other}))
    with pytest.raises(PluginError, match=f"not '{backend.family.model_type}'"):
        check_model_type(str(tmp_path), backend.family)


def test_quantization_keeps_the_vision_tower_and_head_unquantized(backend):
    from vlmft_cli.model_loading import from_pretrained_kwargs

    kwargs = from_pretrained_kwargs(LoadOptions(quantization="4bit"), backend.family.unquantized_modules)
    assert kwargs["quantization_config"].llm_int8_skip_modules == ["model.visual", "lm_head"]


# --- real architectures -------------------------------------------------------------------------------

#: The published architectures (MODELS.md, the hub configs), written out here: not read from the plugin.
PUBLISHED = {
    "Qwen2.5-VL-7B-Instruct": {
        "text": {
            "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
            "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
        },
        "rope": {"rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        "vision": {
            "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
            "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2, "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu", "tokens_per_second": 2,
        },
        "head_dim": 128,
    },
    "Qwen3-VL-8B-Instruct": {
        "text": {
            "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 262144,
            "attention_bias": False,
        },
        "rope": {"rope_theta": 5e6, "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        "vision": {
            "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "patch_size": 16,
            "temporal_patch_size": 2, "spatial_merge_size": 2, "num_position_embeddings": 2304,
            "out_hidden_size": 4096, "deepstack_visual_indexes": [8, 16, 24], "hidden_act": "gelu_pytorch_tanh",
        },
        "head_dim": 128,
    },
}  # fmt: skip
#: vision_start, vision_end, image pad, video pad (both families).
PUBLISHED_TOKEN_IDS = (151652, 151653, 151655, 151656)

_META_MODELS: dict[str, torch.nn.Module] = {}


def meta_model(variant: str) -> torch.nn.Module:
    """The variant's full model on the meta device (shapes only, no memory), built once per session."""
    from transformers import AutoModelForImageTextToText

    if variant not in _META_MODELS:
        backend = Qwen25VLBackend() if variant.startswith("Qwen2.5") else Qwen3VLBackend()
        with torch.device("meta"):
            _META_MODELS[variant] = AutoModelForImageTextToText.from_config(backend.architecture_config(variant))
    return _META_MODELS[variant]


@pytest.mark.parametrize(
    ("backend_class", "variant"),
    [(Qwen25VLBackend, "Qwen2.5-VL-7B-Instruct"), (Qwen3VLBackend, "Qwen3-VL-8B-Instruct")],
)
def test_config_carries_the_published_numbers(backend_class, variant):
    config = backend_class().architecture_config(variant)
    published = PUBLISHED[variant]
    text, vision = config.text_config, config.vision_config
    assert {key: getattr(text, key) for key in published["text"]} == published["text"]
    assert {key: text.rope_parameters[key] for key in published["rope"]} == published["rope"]
    vision_values = {key: getattr(vision, key) for key in published["vision"]}
    assert {key: list(v) if isinstance(v, tuple) else v for key, v in vision_values.items()} == published["vision"]
    assert not config.tie_word_embeddings
    ids = (config.vision_start_token_id, config.vision_end_token_id, config.image_token_id, config.video_token_id)
    assert ids == PUBLISHED_TOKEN_IDS


def test_a_backend_refuses_the_other_familys_variant():
    with pytest.raises(KeyError):
        Qwen25VLBackend().architecture_config("Qwen3-VL-8B-Instruct")
    with pytest.raises(KeyError):
        Qwen3VLBackend().architecture_config("Qwen2.5-VL-7B-Instruct")


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


def test_qwen2_5_vl_7b_builds_with_the_published_shapes():
    """The built modules, not only the config: a config key the model class ignores would show here."""
    model = meta_model("Qwen2.5-VL-7B-Instruct")
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    language, visual = model.model.language_model, model.model.visual
    assert len(language.layers) == 28 and len(visual.blocks) == 32
    assert tuple(language.embed_tokens.weight.shape) == tuple(model.lm_head.weight.shape) == (152064, 3584)
    assert model.lm_head.weight is not language.embed_tokens.weight  # untied
    # 28 query heads and 4 key/value heads of 128: q 28·128 = 3584 wide, k and v 4·128 = 512; q/k/v biases.
    assert _shapes(language.layers[0]) == {
        "self_attn.q_proj.weight": (3584, 3584), "self_attn.q_proj.bias": (3584,),
        "self_attn.k_proj.weight": (512, 3584), "self_attn.k_proj.bias": (512,),
        "self_attn.v_proj.weight": (512, 3584), "self_attn.v_proj.bias": (512,),
        "self_attn.o_proj.weight": (3584, 3584),
        "mlp.gate_proj.weight": (18944, 3584), "mlp.up_proj.weight": (18944, 3584), "mlp.down_proj.weight": (3584, 18944),
        "input_layernorm.weight": (3584,), "post_attention_layernorm.weight": (3584,),
    }  # fmt: skip
    assert language.layers[0].self_attn.head_dim == 128
    # Vision: 14-px patches over 2 frames, 16 heads of 80, gated MLP; the merger maps 2×2 patches to 3584.
    assert tuple(visual.patch_embed.proj.weight.shape) == (1280, 3, 2, 14, 14)
    assert _shapes(visual.blocks[0]) == {
        "norm1.weight": (1280,), "norm2.weight": (1280,),
        "attn.qkv.weight": (3840, 1280), "attn.qkv.bias": (3840,), "attn.proj.weight": (1280, 1280), "attn.proj.bias": (1280,),
        "mlp.gate_proj.weight": (3420, 1280), "mlp.gate_proj.bias": (3420,),
        "mlp.up_proj.weight": (3420, 1280), "mlp.up_proj.bias": (3420,),
        "mlp.down_proj.weight": (1280, 3420), "mlp.down_proj.bias": (1280,),
    }  # fmt: skip
    assert _shapes(visual.merger) == {
        "ln_q.weight": (1280,), "mlp.0.weight": (5120, 5120), "mlp.0.bias": (5120,),
        "mlp.2.weight": (3584, 5120), "mlp.2.bias": (3584,),
    }  # fmt: skip
    assert visual.window_size == 112 and list(visual.fullatt_block_indexes) == [7, 15, 23, 31]


def test_qwen3_vl_8b_builds_with_the_published_shapes():
    model = meta_model("Qwen3-VL-8B-Instruct")
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    language, visual = model.model.language_model, model.model.visual
    assert len(language.layers) == 36 and len(visual.blocks) == 27
    assert tuple(language.embed_tokens.weight.shape) == tuple(model.lm_head.weight.shape) == (151936, 4096)
    assert model.lm_head.weight is not language.embed_tokens.weight  # untied
    # 32 query heads and 8 key/value heads of 128 (q 4096, k/v 1024), no biases, q/k RMS norms per head.
    assert _shapes(language.layers[0]) == {
        "self_attn.q_proj.weight": (4096, 4096), "self_attn.k_proj.weight": (1024, 4096),
        "self_attn.v_proj.weight": (1024, 4096), "self_attn.o_proj.weight": (4096, 4096),
        "self_attn.q_norm.weight": (128,), "self_attn.k_norm.weight": (128,),
        "mlp.gate_proj.weight": (12288, 4096), "mlp.up_proj.weight": (12288, 4096), "mlp.down_proj.weight": (4096, 12288),
        "input_layernorm.weight": (4096,), "post_attention_layernorm.weight": (4096,),
    }  # fmt: skip
    # Vision: 16-px patches over 2 frames, 2304 = 48² learned positions, plain MLP; the merger and the three
    # deepstack mergers map 2×2 patches (4·1152 = 4608) to 4096.
    assert tuple(visual.patch_embed.proj.weight.shape) == (1152, 3, 2, 16, 16)
    assert tuple(visual.pos_embed.weight.shape) == (2304, 1152)
    assert _shapes(visual.blocks[0]) == {
        "norm1.weight": (1152,), "norm1.bias": (1152,), "norm2.weight": (1152,), "norm2.bias": (1152,),
        "attn.qkv.weight": (3456, 1152), "attn.qkv.bias": (3456,), "attn.proj.weight": (1152, 1152), "attn.proj.bias": (1152,),
        "mlp.linear_fc1.weight": (4304, 1152), "mlp.linear_fc1.bias": (4304,),
        "mlp.linear_fc2.weight": (1152, 4304), "mlp.linear_fc2.bias": (1152,),
    }  # fmt: skip
    assert tuple(visual.merger.linear_fc2.weight.shape) == (4096, 4608)
    assert len(visual.deepstack_merger_list) == 3 and list(visual.deepstack_visual_indexes) == [8, 16, 24]
    assert all(tuple(m.linear_fc2.weight.shape) == (4096, 4608) for m in visual.deepstack_merger_list)


#: Published parameter counts (the hub's safetensors totals, "8.29B" and "8.77B"), and the language
#: models' (Qwen2.5-7B "7.61B" and Qwen3-8B "8.19B"), derived by hand from the published numbers:
#: Qwen2.5-VL-7B language model: per layer q 3584² + 3584, k and v 3584·512 + 512 each, o 3584²,
#:   MLP 3·3584·18944, 2 norms 2·3584 → 233,057,792; × 28 = 6,525,618,176; + embeddings and head
#:   2·152064·3584 = 1,089,994,752; + final norm 3584 → 7,615,616,512.
#: Its vision tower: patch embedding 1176·1280 = 1,505,280; per block qkv 1280·3840 + 3840, proj
#:   1280² + 1280, gate and up 1280·3420 + 3420 each, down 3420·1280 + 1280, norms 2560 → 19,702,200;
#:   × 32 = 630,470,400; merger 1280 + (5120² + 5120) + (5120·3584 + 3584) = 44,574,464 → 676,550,144.
#: Qwen3-VL-8B language model: per layer q and o 4096² each, k and v 4096·1024 each, q/k norms 2·128,
#:   MLP 3·4096·12288, norms 2·4096 → 192,946,432; × 36 = 6,946,071,552; + 2·151936·4096 =
#:   1,244,659,712; + 4096 → 8,190,735,360.
#: Its vision tower: patch embedding 1536·1152 + 1152 = 1,770,624; positions 2304·1152 = 2,654,208;
#:   per block norms 4·1152, qkv 1152·3456 + 3456, proj 1152² + 1152, fc1 1152·4304 + 4304,
#:   fc2 4304·1152 + 1152 → 15,239,504; × 27 = 411,466,608; merger 2·1152 + (4608² + 4608) +
#:   (4608·4096 + 4096) = 40,119,040; 3 deepstack mergers with a 4608 norm: 3·40,125,952 = 120,377,856
#:   → 576,388,336.
PUBLISHED_PARAMETERS = {
    "Qwen2.5-VL-7B-Instruct": {"total": 8_292_166_656, "language": 7_615_616_512, "vision": 676_550_144},
    "Qwen3-VL-8B-Instruct": {"total": 8_767_123_696, "language": 8_190_735_360, "vision": 576_388_336},
}


@pytest.mark.parametrize("variant", ["Qwen2.5-VL-7B-Instruct", "Qwen3-VL-8B-Instruct"])
def test_architecture_parameter_counts_on_the_meta_device(variant):
    model = meta_model(variant)
    expected = PUBLISHED_PARAMETERS[variant]
    language = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    vision = sum(p.numel() for p in model.model.visual.parameters())
    assert (language, vision) == (expected["language"], expected["vision"])
    assert sum(p.numel() for p in model.parameters()) == expected["total"] == language + vision
    assert round(expected["total"] / 1e9, 2) == {"Qwen2.5-VL-7B-Instruct": 8.29, "Qwen3-VL-8B-Instruct": 8.77}[variant]
