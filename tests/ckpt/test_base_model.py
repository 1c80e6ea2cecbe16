"""The base model of a checkpoint comes from run.json, falling back past folders that are gone."""

import json

import pytest

from vlmft_cli.ckpt.base_model import base_model_for
from vlmft_cli.errors import CheckpointError


def test_prefers_the_recorded_local_folder(tmp_path, make_run, adapter_template):
    checkpoint = make_run(tmp_path, steps=(10,)).checkpoints()[0]
    base = base_model_for(checkpoint)
    assert (base.name, base.given_name, base.backend.name) == (adapter_template.source, "tiny-internvl3", "internvl3")


def test_falls_back_to_the_given_name_when_the_folder_is_gone(tmp_path, make_run):
    run = make_run(tmp_path, steps=(10,))
    run.update_record(base_model=str(tmp_path / "moved-away"), backend=None)
    base = base_model_for(run.checkpoints()[0])
    assert (base.name, base.backend.name) == ("tiny-internvl3", "internvl3")


def test_uses_the_adapter_config_when_run_json_says_nothing(tmp_path, make_run, adapter_template):
    run = make_run(tmp_path, steps=(10,))
    (run.path / "run.json").write_text("{}")
    checkpoint = run.checkpoints()[0]
    assert base_model_for(checkpoint).name == json.loads((checkpoint.path / "adapter_config.json").read_text())["base_model_name_or_path"]
    config = checkpoint.path / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": None}))
    with pytest.raises(CheckpointError, match="cannot tell the base model"):
        base_model_for(checkpoint)


def test_names_every_missing_source(tmp_path, make_run):
    run = make_run(tmp_path, steps=(10,))
    run.update_record(base_model=str(tmp_path / "a"), model=str(tmp_path / "b"))
    checkpoint = run.checkpoints()[0]
    config = checkpoint.path / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": str(tmp_path / "c")}))
    with pytest.raises(CheckpointError, match=r"is gone: .*/a, .*/b, .*/c not found"):
        base_model_for(checkpoint)
