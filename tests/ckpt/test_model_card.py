"""The model card survives awkward settings text and missing facts."""

from vlmft_cli.ckpt.model_card import CardFacts, render_model_card


def _facts(**changes):
    facts = {"run_name": "demo_1", "step": 7, "stage": None, "base_model": "org/Model-hf", "base_model_source": "org/Model-hf",
             "backend": "internvl3", "eval_loss": None}  # fmt: skip
    return CardFacts(**{**facts, **changes})


def test_missing_facts_are_said_plainly():
    card = render_model_card(_facts())
    for expected in ("| Eval loss | not recorded |", "| Curriculum stage | unknown |", "config.yaml was not found", "run.json was not found"):
        assert expected in card
    assert 'from_pretrained("org/Model-hf")' in card


def test_backticks_in_settings_cannot_close_the_code_block():
    card = render_model_card(_facts(config_text="note: ```\nrest: 1\n"))
    assert "````yaml\nnote: ```\nrest: 1\n````" in card
