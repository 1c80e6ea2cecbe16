"""An exported adapter loads with PeftModel.from_pretrained, carries a model card and no optimizer state."""

import pytest

from ckpt.fabricate import CONFIG_YAML, load_base, logits_of
from vlmft_cli.ckpt.export import export_checkpoint
from vlmft_cli.errors import CheckpointError


def test_export_loads_with_peft_and_matches(tmp_path, make_run, adapter_template):
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    run = make_run(tmp_path / "out", steps=(10, 20), eval_losses={20: 0.8765}, stage=2)
    checkpoint = run.checkpoints()[-1]
    destination = tmp_path / "export"
    result = export_checkpoint(checkpoint, destination, home=adapter_template.home)

    names = set(result.files)
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "tokenizer.json", "preprocessor_config.json"} <= names
    assert not names & {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "vlmft_checkpoint.json"}
    assert (destination / "adapter_model.safetensors").read_bytes() == (checkpoint.path / "adapter_model.safetensors").read_bytes()
    model = PeftModel.from_pretrained(load_base(adapter_template.home).model, str(destination))
    torch.testing.assert_close(logits_of(model, adapter_template.inputs), adapter_template.adapted_logits, atol=1e-4, rtol=1e-4)
    assert AutoTokenizer.from_pretrained(destination).convert_tokens_to_ids("<IMG_CONTEXT>") is not None

    card = (destination / "README.md").read_text()
    assert card.startswith('---\nbase_model: "tiny-internvl3"\nlibrary_name: peft\n')
    for expected in ("| Curriculum stage | 2 |", "| Step | 20 |", "| Eval loss | 0.8765 |", "| Backend | internvl3 |",
                     "r=4, alpha=8", run.name, CONFIG_YAML.strip(), '"base_model": ', "PeftModel.from_pretrained(base"):  # fmt: skip
        assert expected in card


def test_export_refuses_an_adapter_that_no_longer_matches_its_marker(tmp_path, make_run, adapter_template):
    checkpoint = make_run(tmp_path / "out", steps=(10,)).checkpoints()[0]
    (checkpoint.path / "adapter_config.json").write_text((checkpoint.path / "adapter_config.json").read_text().replace('"r": 4', '"r": 5'))
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        export_checkpoint(checkpoint, tmp_path / "export", home=adapter_template.home)
    assert not (tmp_path / "export").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
