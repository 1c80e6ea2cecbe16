"""The `system_prompt` setting: it reaches every processor a run encodes with (the plan's, which predicts
lengths, the trained model's and evaluation's), a resume refuses to change it, and a backend that cannot
set one says so. How each backend encodes each mode: tests/plugins/test_internvl3.py, test_qwen_vl.py."""

from __future__ import annotations

import pytest

from vlmft_cli.chat_pieces import apply_system_prompt
from vlmft_cli.errors import ConfigError
from vlmft_cli.model_backend import Turn
from vlmft_cli.reporting import NullReporter
from vlmft_cli.settings import StoredSettings, resolve_settings

#: InternVL's `internvl2_5` fine-tuning system message (OpenGVLab/InternVL, internvl_chat/internvl/conversation.py).
OFFICIAL = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


def _resolved(data, home, out, **flags):
    cli = {"model": "tiny-internvl3", "data": data, "home": home, "out": out, "max_frames": 2, **flags}
    return resolve_settings(stage=1, cli=cli, environ={})


def test_the_setting_reaches_planning_training_and_evaluation(processed_data, vlmft_home, tmp_path):
    from vlmft_cli.evaluate.runner import load_model
    from vlmft_cli.evaluate.target import EvalTarget
    from vlmft_cli.lora_model import build_model
    from vlmft_cli.pipeline.dataset import ExampleDataset
    from vlmft_cli.training.plan import plan_run

    resolved = _resolved(processed_data, vlmft_home, tmp_path, system_prompt="official")
    plan = plan_run(resolved, NullReporter())
    assert plan.processor.system_prompt == OFFICIAL
    default = plan_run(_resolved(processed_data, vlmft_home, tmp_path), NullReporter())
    assert default.processor.system_prompt is None
    # Lengths are predicted with the system turn: exactly what encoding gives, one system turn longer.
    system_turn = len(plan.processor.tokenizer(f"<|im_start|>system\n{OFFICIAL}<|im_end|>\n")["input_ids"])
    dataset = ExampleDataset(plan.train_examples[:3], processed_data, plan.backend, plan.processor)
    for index, (example, plain) in enumerate(zip(plan.train_examples[:3], default.train_examples[:3], strict=True)):
        assert example.id == plain.id and example.length == plain.length + system_turn
        assert len(dataset[index]) == example.length
        text = plan.processor.decode(dataset[index].input_ids)
        assert text.startswith(f"<|im_start|>system\n{OFFICIAL}<|im_end|>\n<|im_start|>user\nFrame1: <img>")
    packing = plan.packing  # stage 1 packs on InternVL3 with sdpa: the shared prefix holds the system turn
    assert packing is not None and packing.prefix_lengths[0] == default.packing.prefix_lengths[0] + system_turn

    _, loaded = build_model(resolved.settings, plan.backend, plan.attention, device="cpu")
    assert loaded.processor.system_prompt == OFFICIAL
    evaluated = load_model(EvalTarget(resolved.settings, resolved.profile, None, tmp_path / "eval"), NullReporter())
    assert evaluated.processor.system_prompt == OFFICIAL
    turns = [Turn("user", "Q: satisfied?")]
    prompt = evaluated.backend.encode_prompt(evaluated.processor, [], turns)
    assert evaluated.processor.decode(prompt.input_ids) == (
        f"<|im_start|>system\n{OFFICIAL}<|im_end|>\n<|im_start|>user\nQ: satisfied?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_resume_refuses_a_new_system_prompt_and_a_run_from_before_keeps_the_default(tmp_path):
    from vlmft_cli.training.reconcile import reconcile

    before = {"model": "tiny-internvl3", "stage": 1}  # a config.yaml written before the setting existed
    stored = StoredSettings(values=before, sources={}, origin="run stage1_x")
    same = resolve_settings(cli={}, environ={}, stored=stored)
    assert same.settings.system_prompt is None
    assert reconcile(stored, same, step=1, force=False).applied == []
    changed = resolve_settings(cli={"system_prompt": "official"}, environ={}, stored=stored)
    with pytest.raises(ConfigError, match="system_prompt"):
        reconcile(stored, changed, step=1, force=False)
    forced = reconcile(stored, changed, step=1, force=True)
    assert [(c.key, c.old, c.new) for c in forced.forced] == [("system_prompt", None, "official")]


def test_an_empty_system_prompt_is_refused():
    with pytest.raises(ConfigError, match="system_prompt"):
        resolve_settings(cli={"system_prompt": ""}, environ={})


def test_a_backend_without_with_system_prompt_takes_only_the_default():
    class Plain:
        name = "plain"

    processor = object()
    assert apply_system_prompt(Plain(), processor, None) is processor
    with pytest.raises(ConfigError, match="model backend plain cannot set a system prompt"):
        apply_system_prompt(Plain(), processor, "official")
