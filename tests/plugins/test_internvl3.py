"""The InternVL3 backend: names, the tiny offline model, encoding, LoRA targeting, attention, configs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmft_cli.model_backend import DEFAULT_LORA_PROJECTIONS, IGNORE_INDEX, LoadOptions, ModelBackend, Turn
from vlmft_internvl3 import InternVL3Backend
from vlmft_internvl3 import tiny as tiny_module
from vlmft_internvl3.tokens import CHAT_TEMPLATE, IM_END, IMG_CONTEXT, IMG_END, IMG_START

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


def make_frames(count: int, size: int = 96) -> list[Image.Image]:
    rng = np.random.default_rng(count)
    return [Image.fromarray(rng.integers(0, 255, (size, size + 16, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture(scope="module")
def backend() -> InternVL3Backend:
    return InternVL3Backend()


@pytest.fixture(scope="module")
def loaded(backend, vlmft_home):
    return backend.load("tiny-internvl3", LoadOptions(precision="fp32", attn_implementation="sdpa"), vlmft_home)


@pytest.fixture(scope="module")
def processor(loaded):
    return loaded.processor


# --- names ------------------------------------------------------------------------------------------


def test_satisfies_the_protocol(backend):
    assert isinstance(backend, ModelBackend)
    assert backend.name == "internvl3"
    assert backend.tiny_names() == ["tiny-internvl3"]


def test_handles_tiny_hub_and_local_names(backend, tmp_path):
    assert backend.handles("tiny-internvl3")
    assert backend.handles("OpenGVLab/InternVL3-8B-hf")
    assert backend.handles("someone/my-INTERNVL-finetune")
    assert not backend.handles("Qwen/Qwen2.5-VL-7B-Instruct")
    ours = tmp_path / "checkpoint"
    ours.mkdir()
    (ours / "config.json").write_text(json.dumps({"model_type": "internvl"}))
    other = tmp_path / "internvl-named-but-qwen"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    assert backend.handles(str(ours))
    assert not backend.handles(str(other))


def test_resolve_keeps_hub_ids_and_absolutises_folders(backend, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # a hub that answers (offline: tests/test_plugins.py)
    monkeypatch.setattr("vlmft_cli.model_backend.hub_unreachable", lambda timeout_s=5.0: None)
    assert backend.resolve("OpenGVLab/InternVL3-8B-hf", tmp_path) == "OpenGVLab/InternVL3-8B-hf"
    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    assert backend.resolve("ckpt", tmp_path / "home") == str(tmp_path / "ckpt")


# --- the tiny model ---------------------------------------------------------------------------------


def test_tiny_model_is_written_under_home_and_reloads(backend, vlmft_home, loaded):
    from transformers import AutoModelForImageTextToText, InternVLForConditionalGeneration

    folder = Path(backend.resolve("tiny-internvl3", vlmft_home))
    assert folder == vlmft_home / "models" / "tiny-internvl3"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (folder / name).is_file()
    assert loaded.source == str(folder)
    assert isinstance(loaded.model, InternVLForConditionalGeneration)
    reloaded = AutoModelForImageTextToText.from_pretrained(folder)
    assert isinstance(reloaded, InternVLForConditionalGeneration)
    assert sum(p.numel() for p in reloaded.parameters()) < 1_000_000
    assert reloaded.config.image_token_id == loaded.processor.image_context_id
    assert reloaded.config.text_config.vocab_size == len(loaded.processor.tokenizer)
    assert not any(p.name.startswith(".tiny-internvl3") for p in folder.parent.iterdir())


def test_tiny_builds_are_byte_identical(tmp_path):
    first = tiny_module.ensure_tiny_model(tmp_path / "a")
    second = tiny_module.ensure_tiny_model(tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_failed_build_leaves_nothing_and_outdated_model_is_rebuilt(tmp_path, monkeypatch):
    def crash(directory: Path) -> None:
        (directory / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(tiny_module, "write_tiny_model", crash)
        with pytest.raises(RuntimeError):
            tiny_module.ensure_tiny_model(tmp_path)
    assert list((tmp_path / "models").iterdir()) == []

    folder = tiny_module.ensure_tiny_model(tmp_path)
    (folder / tiny_module.SPEC_FILE).write_text(json.dumps({"version": 0}))
    assert tiny_module.ensure_tiny_model(tmp_path) == folder
    assert tiny_module.is_current(folder)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny-internvl3"]


def test_tiny_tokenizer_knows_the_special_tokens(processor):
    tokenizer = processor.tokenizer
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", IMG_START, IMG_END, IMG_CONTEXT):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert ids == [processor.token_id(token)]
    rendered = "<|im_start|>user\nhi <img><IMG_CONTEXT></img><|im_end|>\n<|endoftext|>"
    assert tokenizer.decode(tokenizer(rendered)["input_ids"], skip_special_tokens=True) == "user\nhi \n"
    assert tokenizer.context_image_token == IMG_CONTEXT and tokenizer.start_image_token == IMG_START
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.chat_template == CHAT_TEMPLATE
    text = "place the packet on the table"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) < len(text.split()) * 2


# --- encoding ---------------------------------------------------------------------------------------


def test_tokens_per_frame_and_image_block(backend, processor):
    assert processor.image_seq_length == 16  # 112 px / patch 14 = 8x8, pixel shuffle 0.5 -> 4x4
    assert backend.tokens_per_frame(processor) == 18
    sample = backend.encode(processor, make_frames(4), QA_TURNS)
    ids = sample.input_ids.tolist()
    image_ids = {processor.image_context_id, processor.image_start_id, processor.image_end_id}
    assert sum(token in image_ids for token in ids) == sample.num_image_tokens == 4 * 18
    assert ids.count(processor.image_context_id) == 4 * 16
    assert sample.pixel_values.shape == (4, 3, 112, 112)
    assert sample.pixel_values.dtype == torch.float32


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
    starts = [start for start, _ in sample.answer_spans]
    assert starts == sorted(starts)


def test_encoding_matches_the_chat_template_rendering(backend, processor):
    frames = make_frames(3)
    sample = backend.encode(processor, frames, MULTI_TURNS)
    messages = [
        {
            "role": turn.role,
            "content": ([{"type": "video"}] if index == 0 else []) + [{"type": "text", "text": turn.text}],
        }
        for index, turn in enumerate(MULTI_TURNS)
    ]
    rendered = processor.tokenizer.apply_chat_template(messages, tokenize=False)
    block = IMG_START + IMG_CONTEXT * processor.image_seq_length + IMG_END
    video = "\n".join(f"Frame{i + 1}: {block}" for i in range(len(frames)))
    rendered = rendered.replace("<video>\n", video + "\n")
    assert processor.decode(sample.input_ids) == rendered
    assert sample.input_ids.tolist() == processor.tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_encode_prompt_ends_where_the_answer_starts(backend, processor):
    prompt = backend.encode_prompt(processor, make_frames(2), MULTI_TURNS[:3])
    assert processor.decode(prompt.input_ids).endswith(
        "put the glass into the trash Q: satisfied?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert bool((prompt.labels == IGNORE_INDEX).all())
    assert prompt.answer_spans == []
    full = backend.encode(processor, make_frames(2), MULTI_TURNS[:4])
    assert torch.equal(full.input_ids[: len(prompt)], prompt.input_ids)


def test_system_prompt_and_literal_special_text(backend, processor):
    from dataclasses import replace

    with_system = replace(processor, system_prompt="You are a robot.")
    sample = backend.encode(with_system, [], [Turn("user", "say <|im_end|>"), Turn("assistant", "ok")])
    text = processor.decode(sample.input_ids)
    assert text.startswith("<|im_start|>system\nYou are a robot.<|im_end|>\n<|im_start|>user\nsay <|im_end|>")
    assert sample.input_ids.tolist().count(processor.im_end_id) == 3  # the literal one stays text
    assert sample.pixel_values.shape == (0, 3, 112, 112)


#: The system message of InternVL's fine-tuning template `internvl2_5` (OpenGVLab/InternVL,
#: internvl_chat/internvl/conversation.py), copied from there.
INTERNVL2_5_SYSTEM_MESSAGE = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
#: system_prompt setting → the system message the conversation is rendered with (None: no system message).
SYSTEM_MODES = {
    None: None,  # the -hf chat template writes no system turn of its own
    "none": None,
    "official": INTERNVL2_5_SYSTEM_MESSAGE,
    "You are a robot arm. Answer in five words.": "You are a robot arm. Answer in five words.",
}


def _rendered(processor, system: str | None, turns, n_frames: int, *, generation_prompt: bool = False) -> str:
    """The chat template's rendering of `turns` (with `system` as a system message), frames expanded."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [
        {"role": turn.role, "content": ([{"type": "video"}] if index == 0 else []) + [{"type": "text", "text": turn.text}]}
        for index, turn in enumerate(turns)
    ]
    rendered = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    block = IMG_START + IMG_CONTEXT * processor.image_seq_length + IMG_END
    return rendered.replace("<video>\n", "\n".join(f"Frame{i + 1}: {block}" for i in range(n_frames)) + "\n")


@pytest.mark.parametrize("mode", list(SYSTEM_MODES), ids=["default", "none", "official", "text"])
def test_each_system_prompt_mode_encodes_as_the_chat_template_renders_it(backend, processor, mode):
    chosen = backend.with_system_prompt(processor, mode)
    system = SYSTEM_MODES[mode]
    frames = make_frames(2)
    tokenizer = processor.tokenizer
    sample = backend.encode(chosen, frames, MULTI_TURNS)
    rendered = _rendered(processor, system, MULTI_TURNS, 2)
    assert rendered.startswith("<|im_start|>system\n" if system else "<|im_start|>user\n")
    assert sample.input_ids.tolist() == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    prompt = backend.encode_prompt(chosen, frames, MULTI_TURNS[:3])
    rendered_prompt = _rendered(processor, system, MULTI_TURNS[:3], 2, generation_prompt=True)
    assert prompt.input_ids.tolist() == tokenizer(rendered_prompt, add_special_tokens=False)["input_ids"]
    # Predicted lengths stay exact with the system turn, for every cut of the conversation.
    lengths = backend.conversation_lengths(chosen, 2, MULTI_TURNS)
    assert lengths == [len(backend.encode(chosen, frames, MULTI_TURNS[: 2 * (k + 1)])) for k in range(3)]
    assert lengths[-1] == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    # The label spans still cover exactly the answers.
    answers = [turn.text for turn in MULTI_TURNS if turn.role == "assistant"]
    assert [processor.decode(sample.labels[a:b]) for a, b in sample.answer_spans] == [a + IM_END for a in answers]
    # A second choice replaces the first, it does not stack on it.
    assert backend.with_system_prompt(chosen, None).system_prompt is None


def test_packed_sequences_stay_exact_with_the_official_system_prompt(backend, processor):
    official = backend.with_system_prompt(processor, "official")
    frames = make_frames(2)
    prefix = backend.packed_prefix_length(official, 2)
    system_turn = len(processor.tokenizer(f"<|im_start|>system\n{INTERNVL2_5_SYSTEM_MESSAGE}<|im_end|>\n")["input_ids"])
    assert prefix == backend.packed_prefix_length(processor, 2) + system_turn
    packed = backend.encode_packed(official, frames, MULTI_TURNS)
    singles = [backend.encode(official, frames, MULTI_TURNS[i : i + 2]) for i in (0, 2, 4)]
    assert len(packed) == packed.packed.length == prefix + sum(len(single) - prefix for single in singles)
    assert torch.equal(packed.input_ids[:prefix], singles[0].input_ids[:prefix])
    for (start, end), single in zip(packed.answer_spans, singles, strict=True):
        (single_start, single_end) = single.answer_spans[0]
        assert torch.equal(packed.labels[start:end], single.labels[single_start:single_end])


@pytest.mark.parametrize(
    "turns",
    [[], [Turn("assistant", "yes")], [Turn("user", "a"), Turn("user", "b")], [Turn("user", "a")]],
    ids=["empty", "assistant-first", "not-alternating", "no-answer"],
)
def test_encode_rejects_malformed_conversations(backend, processor, turns):
    with pytest.raises(ValueError):
        backend.encode(processor, make_frames(1), turns)


def test_collate_pads_right_and_concatenates_frames(backend, processor):
    short = backend.encode(processor, make_frames(2), QA_TURNS)
    long = backend.encode(processor, make_frames(3), MULTI_TURNS)
    short.extra["token_type"] = torch.ones(len(short), dtype=torch.long)
    long.extra["token_type"] = torch.ones(len(long), dtype=torch.long)
    batch = backend.collate([short, long], pad_token_id=processor.pad_token_id)
    width = len(long)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, width)
    assert batch["pixel_values"].shape == (5, 3, 112, 112)
    assert torch.equal(batch["pixel_values"][:2], short.pixel_values)
    pad = slice(len(short), width)
    assert bool((batch["input_ids"][0, pad] == processor.pad_token_id).all())
    assert bool((batch["labels"][0, pad] == IGNORE_INDEX).all())
    assert batch["attention_mask"][0].tolist() == [1] * len(short) + [0] * (width - len(short))
    assert batch["token_type"][0].tolist() == [1] * len(short) + [0] * (width - len(short))
    assert torch.equal(batch["input_ids"][1], long.input_ids)


@pytest.mark.parametrize("frames", [0, 4, 10])
def test_conversation_lengths_match_encoding_cut_after_each_answer(backend, processor, frames):
    lengths = backend.conversation_lengths(processor, frames, MULTI_TURNS)
    images = make_frames(frames)
    expected = [len(backend.encode(processor, images, MULTI_TURNS[: 2 * (k + 1)])) for k in range(3)]
    assert lengths == expected
    with pytest.raises(ValueError):
        backend.conversation_lengths(processor, frames, MULTI_TURNS[:3])


def test_processor_survives_pickling_for_data_workers(backend, processor):
    import pickle

    copy = pickle.loads(pickle.dumps(processor))
    frames = make_frames(2)
    assert torch.equal(
        backend.encode(copy, frames, QA_TURNS).input_ids, backend.encode(processor, frames, QA_TURNS).input_ids
    )


def test_sample_lengths_for_the_curriculum_stages(backend, processor):
    stage1 = backend.encode(processor, make_frames(4), QA_TURNS)
    stage2 = backend.encode(processor, make_frames(10), MULTI_TURNS)
    assert 90 <= len(stage1) <= 160
    assert 200 <= len(stage2) <= 400


# --- training path ----------------------------------------------------------------------------------


def lora(model, pattern: str):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=pattern, lora_dropout=0.0))


def test_lora_pattern_adapts_every_language_projection_and_nothing_else(backend, vlmft_home):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(backend.resolve("tiny-internvl3", vlmft_home))
    peft_model = lora(model, backend.lora_target_pattern())
    adapted = [
        name for name, module in peft_model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A) > 0
    ]
    layers = model.config.text_config.num_hidden_layers
    assert len(adapted) == len(DEFAULT_LORA_PROJECTIONS) * layers
    assert all("language_model" in name for name in adapted)
    for projection in DEFAULT_LORA_PROJECTIONS:
        assert sum(name.endswith("." + projection) for name in adapted) == layers
    vision_projections = [
        n for n, _ in model.named_modules() if "vision_tower" in n and n.endswith(("q_proj", "k_proj", "v_proj"))
    ]
    assert vision_projections  # the vision tower has same-named layers, and they stay untouched


def test_lora_pattern_on_the_real_8b_module_names(backend):
    from transformers import InternVLForConditionalGeneration

    with torch.device("meta"):
        model = InternVLForConditionalGeneration(backend.architecture_config("InternVL3-8B"))
    pattern = re.compile(backend.lora_target_pattern(("q_proj", "down_proj")))
    matched = [name for name, _ in model.named_modules() if pattern.fullmatch(name)]
    assert len(matched) == 2 * 28
    assert all(name.startswith("model.language_model.layers.") for name in matched)


def test_forward_loss_is_finite_and_lora_backward_reaches_only_adapters(backend, vlmft_home, processor):
    loaded = backend.load("tiny-internvl3", LoadOptions(precision="fp32"), vlmft_home)
    model = lora(loaded.model, backend.lora_target_pattern())
    batch = backend.collate(
        [backend.encode(processor, make_frames(4), QA_TURNS), backend.encode(processor, make_frames(3), MULTI_TURNS)],
        processor.pad_token_id,
    )
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for name, p in trainable.items() if "lora_B" in name)
    assert any(p.grad.abs().sum() > 0 for name, p in trainable.items() if "lora_B" in name)


def test_attn_implementation_reaches_the_model_and_losses_agree(backend, vlmft_home, processor):
    batch = backend.collate([backend.encode(processor, make_frames(4), MULTI_TURNS)], processor.pad_token_id)
    losses = {}
    for implementation in ("sdpa", "eager"):
        model = backend.load(
            "tiny-internvl3", LoadOptions(precision="fp32", attn_implementation=implementation), vlmft_home
        ).model
        assert model.config._attn_implementation == implementation
        assert model.model.language_model.config._attn_implementation == implementation
        with torch.no_grad():
            losses[implementation] = model(**batch).loss.item()
    assert losses["sdpa"] == pytest.approx(losses["eager"], abs=1e-5)


def test_precision_reaches_the_weights(backend, vlmft_home):
    model = backend.load("tiny-internvl3", LoadOptions(precision="bf16"), vlmft_home).model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_quantization_options_build_bitsandbytes_configs():
    from vlmft_internvl3.loading import from_pretrained_kwargs

    four = from_pretrained_kwargs(LoadOptions(quantization="4bit", device_map="auto"))
    config = four["quantization_config"]
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert four["dtype"] == torch.bfloat16 and four["device_map"] == "auto" and four["attn_implementation"] == "sdpa"
    assert from_pretrained_kwargs(LoadOptions(quantization="8bit"))["quantization_config"].load_in_8bit
    plain = from_pretrained_kwargs(LoadOptions(precision="fp16", attn_implementation="eager"))
    assert plain == {"dtype": torch.float16, "attn_implementation": "eager"}


def test_4bit_loads_the_language_model_quantized_on_cpu(backend, vlmft_home, processor):
    model = backend.load("tiny-internvl3", LoadOptions(quantization="4bit", device_map="cpu"), vlmft_home).model
    kinds = {name: type(module).__name__ for name, module in model.named_modules() if name.endswith("q_proj")}
    assert {kind for name, kind in kinds.items() if "language_model" in name} == {"Linear4bit"}
    assert {kind for name, kind in kinds.items() if "vision_tower" in name} == {"Linear"}
    batch = backend.collate([backend.encode(processor, make_frames(2), QA_TURNS)], processor.pad_token_id)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


# --- real checkpoints (layout only: nothing is downloaded) --------------------------------------------


def test_real_layout_processor_composes_without_torchvision(backend, processor, tmp_path):
    """A folder laid out like OpenGVLab/InternVL3-1B-hf (its config, a fast-processor preprocessor config)."""
    from transformers import GotOcr2ImageProcessorPil

    folder = tmp_path / "InternVL3-1B-hf"
    backend.architecture_config("InternVL3-1B").save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    preprocessor = {
        "image_processor_type": "GotOcr2ImageProcessorFast",
        "crop_to_patches": True,
        "size": {"height": 448, "width": 448},
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    assert backend.handles(str(folder))
    real = backend.load_processor(str(folder), tmp_path / "home")
    assert isinstance(real.image_processor, GotOcr2ImageProcessorPil)
    assert real.image_seq_length == 256 and backend.tokens_per_frame(real) == 258
    sample = backend.encode(real, make_frames(2), QA_TURNS)
    assert sample.pixel_values.shape == (2, 3, 448, 448)
    assert sample.input_ids.tolist().count(real.image_context_id) == 2 * 256


def test_non_native_checkpoint_is_refused_with_a_hint(tmp_path):
    from vlmft_cli.errors import PluginError
    from vlmft_internvl3.loading import check_native_checkpoint

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(PluginError):
        check_native_checkpoint(str(tmp_path))


# --- real architectures -------------------------------------------------------------------------------


def test_architecture_configs_carry_the_published_numbers(backend):
    assert backend.architecture_variants() == ["InternVL3-1B", "InternVL3-2B", "InternVL3-8B"]
    config = backend.architecture_config("InternVL3-8B")
    vision, text = config.vision_config, config.text_config
    assert vision.hidden_size == 1024 and vision.intermediate_size == 4096
    assert vision.num_hidden_layers == 24 and vision.num_attention_heads == 16
    assert vision.attention_bias and not vision.use_qk_norm
    assert vision.use_mean_pooling and vision.use_absolute_position_embeddings
    assert tuple(vision.image_size) == (448, 448) and tuple(vision.patch_size) == (14, 14)
    assert vision.layer_norm_eps == 1e-6
    assert (config.model_type, config.image_token_id, config.image_seq_length) == ("internvl", 151667, 256)
    assert config.downsample_ratio == 0.5
    assert (text.model_type, text.vocab_size, text.bos_token_id, text.eos_token_id) == ("qwen2", 151674, 151643, 151645)
    shapes = {
        "InternVL3-8B": (3584, 18944, 28, 28, 4, 128),
        "InternVL3-1B": (896, 4864, 24, 14, 2, 64),
        "InternVL3-2B": (1536, 8960, 28, 12, 2, 128),
    }
    for variant, shape in shapes.items():
        t = backend.architecture_config(variant).text_config
        got = (t.hidden_size, t.intermediate_size, t.num_hidden_layers)
        got += (t.num_attention_heads, t.num_key_value_heads, t.head_dim)
        assert got == shape
        assert t.rope_parameters["rope_theta"] == 1e6 and t.max_position_embeddings == 32768 and t.rms_norm_eps == 1e-6
    with pytest.raises(KeyError):
        backend.architecture_config("InternVL3-78B")


@pytest.mark.parametrize(
    ("variant", "billions"), [("InternVL3-1B", 0.94), ("InternVL3-2B", 2.09), ("InternVL3-8B", 7.94)]
)
def test_architecture_parameter_counts_on_the_meta_device(backend, variant, billions):
    from transformers import InternVLForConditionalGeneration

    with torch.device("meta"):
        model = InternVLForConditionalGeneration(backend.architecture_config(variant))
    count = sum(p.numel() for p in model.parameters())
    assert count / 1e9 == pytest.approx(billions, abs=0.01)
    assert model.model.language_model.layers[0].self_attn.q_proj.bias is not None  # Qwen2 qkv bias
