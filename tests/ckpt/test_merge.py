"""A merged checkpoint loads with plain transformers and computes what the PEFT model computes."""

import pytest

from ckpt.fabricate import logits_of
from vlmft_cli.ckpt.merge import MERGE_INFO, merge_checkpoint
from vlmft_cli.errors import CheckpointError
from vlmft_cli.reporting import RecordingReporter


def test_merged_model_matches_the_adapted_model(tmp_path, make_run, adapter_template):
    import torch
    from transformers import AutoModelForImageTextToText

    from vlmft_cli.backends import backend_for

    checkpoint = make_run(tmp_path / "out", steps=(10,)).checkpoints()[0]
    destination = tmp_path / "merged"
    reporter = RecordingReporter()
    result = merge_checkpoint(checkpoint, destination, home=adapter_template.home, precision="fp32", reporter=reporter)

    assert result.destination == destination and result.backend == "internvl3" and result.size_bytes > 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", MERGE_INFO} <= {p.name for p in destination.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left
    model = AutoModelForImageTextToText.from_pretrained(destination)
    assert not any("lora" in name for name, _ in model.named_parameters())
    logits = logits_of(model, adapter_template.inputs)
    assert model.dtype == torch.float32
    torch.testing.assert_close(logits, adapter_template.adapted_logits, atol=1e-4, rtol=1e-4)
    assert (logits - adapter_template.base_logits).abs().max() > 1e-2
    processor = backend_for("tiny-internvl3").load_processor(str(destination), adapter_template.home)
    assert processor.image_seq_length > 0
    assert any("Loading base model" in line for line in reporter.infos)


def test_refuses_a_non_empty_destination_unless_forced(tmp_path, make_run, adapter_template):
    checkpoint = make_run(tmp_path / "out", steps=(10,)).checkpoints()[0]
    destination = tmp_path / "merged"
    destination.mkdir()
    (destination / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="is not empty") as caught:
        merge_checkpoint(checkpoint, destination, home=adapter_template.home, precision="fp32")
    assert caught.value.hint == "pass --force to replace it"
    assert (destination / "keep.txt").read_text() == "mine"
    merge_checkpoint(checkpoint, destination, home=adapter_template.home, precision="fp16", force=True)
    assert not (destination / "keep.txt").exists() and (destination / "model.safetensors").is_file()
    assert '"precision": "fp16"' in (destination / MERGE_INFO).read_text()
    with pytest.raises(CheckpointError, match="choose another output folder"):
        merge_checkpoint(checkpoint, checkpoint.run_dir, home=adapter_template.home, force=True)
