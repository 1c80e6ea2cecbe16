"""Exported adapters and merged models carry what vLLM reads, with the fields computed from the checkpoint.

vLLM (not installed here) serves InternVL3-hf through `InternS1ForConditionalGeneration`, whose weight
mapper takes `model.language_model.` to its language model, and applies LoRA to the language model's
linear layers, matching each adapted module by its last name (q_proj … down_proj; it packs q/k/v and
gate/up itself). It builds the processor with `AutoProcessor` from config.json, the tokenizer files, the
chat template, preprocessor_config.json and processor_config.json (`image_seq_length`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image
from safetensors import safe_open

from vlmft_cli.ckpt.export import export_checkpoint
from vlmft_cli.ckpt.merge import merge_checkpoint

LANGUAGE_MODEL_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
PROCESSOR_FILES = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json", "processor_config.json"}


def tensor_names(path):
    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def context_tokens_per_frame(home) -> int:
    """<IMG_CONTEXT> tokens one frame takes, counted in a real encoding."""
    from vlmft_cli.backends import backend_for
    from vlmft_cli.model_backend import Turn

    backend = backend_for("tiny-internvl3")
    processor = backend.load_processor("tiny-internvl3", home)
    sample = backend.encode_prompt(processor, [Image.new("RGB", (64, 64))], [Turn("user", "q")])
    return int((sample.input_ids == processor.image_context_id).sum())


def check_processor_files(folder, base_folder, home):
    from transformers import AutoImageProcessor, AutoTokenizer

    names = {p.name for p in folder.iterdir()}
    assert names >= PROCESSOR_FILES
    assert (folder / "chat_template.jinja").read_text() == AutoTokenizer.from_pretrained(base_folder).chat_template
    assert json.loads((folder / "processor_config.json").read_text())["image_seq_length"] == context_tokens_per_frame(home)
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    base_preprocessor = json.loads((base_folder / "preprocessor_config.json").read_text())
    # the backend-neutral class name: PIL here, the torchvision one where vLLM runs
    assert preprocessor["image_processor_type"] == base_preprocessor["image_processor_type"] == "GotOcr2ImageProcessor"
    assert preprocessor["crop_to_patches"] is False and preprocessor["size"] == base_preprocessor["size"]
    assert type(AutoImageProcessor.from_pretrained(folder)).__name__.endswith("Pil")  # no torchvision needed


def test_exported_adapter_has_what_vllm_reads(tmp_path, make_run, adapter_template):
    from peft import PeftModel

    from ckpt.fabricate import load_base

    checkpoint = make_run(tmp_path / "out", steps=(10,)).checkpoints()[0]
    destination = tmp_path / "export"
    export_checkpoint(checkpoint, destination, home=adapter_template.home)

    config = json.loads((destination / "adapter_config.json").read_text())
    original = json.loads((checkpoint.path / "adapter_config.json").read_text())
    held = sorted({key.removeprefix("base_model.model.").split(".lora_")[0] for key in tensor_names(checkpoint.path / "adapter_model.safetensors")})
    assert config["target_modules"] == held
    assert all(module.startswith("model.language_model.") and module.rsplit(".", 1)[1] in LANGUAGE_MODEL_LINEARS for module in held)
    assert isinstance(original["target_modules"], str)  # training's anchored regex, which vLLM cannot read
    assert config["base_model_name_or_path"] == adapter_template.source  # the tiny model's own folder
    base_config = json.loads((Path(adapter_template.source) / "config.json").read_text())
    assert base_config["architectures"] == ["InternVLForConditionalGeneration"]
    assert (config["r"], config["lora_alpha"], config["bias"], config["use_dora"]) == (original["r"], original["lora_alpha"], "none", False)
    # the list adapts exactly the modules the regex adapted
    model = PeftModel.from_pretrained(load_base(adapter_template.home).model, str(destination))
    wrapped = sorted(name.removeprefix("base_model.model.").removesuffix(".lora_A") for name, _ in model.named_modules() if name.endswith(".lora_A"))
    assert wrapped == held
    check_processor_files(destination, Path(adapter_template.source), adapter_template.home)
    card = (destination / "README.md").read_text()
    # r = 4: vLLM's smallest --max-lora-rank that holds it is 8
    assert f"vllm serve {adapter_template.source} --enable-lora --lora-modules " in card and "--max-lora-rank 8 " in card


def test_merged_folder_has_what_vllm_reads_and_merging_is_quiet(tmp_path, make_run, adapter_template, capfd):
    checkpoint = make_run(tmp_path / "out", steps=(10,)).checkpoints()[0]
    destination = tmp_path / "merged"
    capfd.readouterr()
    merge_checkpoint(checkpoint, destination, home=adapter_template.home, precision="bf16")
    captured = capfd.readouterr()
    for noise in ("kernels", "Writing model shards", "is_gradient_checkpointing"):
        assert noise not in captured.err + captured.out
    assert logging.getLogger("bitsandbytes").getEffectiveLevel() >= logging.ERROR

    config = json.loads((destination / "config.json").read_text())
    assert config["architectures"] == ["InternVLForConditionalGeneration"] and config["model_type"] == "internvl"
    names = tensor_names(destination / "model.safetensors")
    assert not [n for n in names if "lora" in n]
    # vLLM's InternS1ForConditionalGeneration.hf_to_vllm_mapper, then its module tree
    mapper = {"lm_head.": "language_model.lm_head.", "model.language_model.": "language_model.model.", "model.vision_tower.": "vision_tower.", "model.multi_modal_projector.": "multi_modal_projector."}
    mapped = [next((new + n[len(old) :] for old, new in mapper.items() if n.startswith(old)), n) for n in names]
    assert all(n.startswith(("language_model.model.", "language_model.lm_head.", "vision_tower.", "multi_modal_projector.")) for n in mapped), sorted(set(mapped))[:5]
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in mapped
    check_processor_files(destination, Path(adapter_template.source), adapter_template.home)


@pytest.mark.parametrize("given, tiny, expected", [("OpenGVLab/InternVL3-8B-hf", False, "OpenGVLab/InternVL3-8B-hf"), ("tiny-internvl3", True, "/built/here")])
def test_base_model_name_is_the_hub_id_or_the_tiny_folder(given, tiny, expected):
    from vlmft_cli.ckpt.export import served_base_name

    assert served_base_name(given, "/built/here" if tiny else "/hf/cache/snapshot", ["tiny-internvl3"]) == expected
