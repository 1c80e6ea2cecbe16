"""Realistic checkpoints without training: a LoRA adapter on the tiny InternVL3, real optimizer state.

Shared by tests/ckpt (through its conftest) and tests/cli/test_ckpt_cli.py (by import).
`adapter_template` (built once per session, whichever of them asks first) loads `tiny-internvl3` through its backend, wraps it with LoRA on
the backend's language-model pattern, perturbs the LoRA B weights so the adapter changes the outputs,
and saves what a training checkpoint holds: the adapter, AdamW and scheduler state, Trainer-style RNG
state and trainer_state.json. It also keeps model inputs and the logits with and without the adapter.
`make_run` lays runs out with `vlmft_cli.runs` (run.json, config.yaml, checkpoints with markers).
"""

from __future__ import annotations

import functools
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vlmft_cli.runs import CHECKPOINTS_DIR, Checkpoint, Run, write_marker

MODEL = "tiny-internvl3"
CONFIG_YAML = "# effective settings with their sources\nstage: 1  # command line\nlora_r: 4  # config file\nlearning_rate: 4.0e-05  # stage 1 default\n"


@dataclass
class AdapterTemplate:
    """Files of one checkpoint, and what the model computes with them."""

    folder: Path
    home: Path
    source: str
    inputs: dict[str, Any]
    adapted_logits: Any
    base_logits: Any


def load_base(home: Path):
    """A fresh fp32 tiny InternVL3 (model and processor) through its backend."""
    from vlmft_cli.backends import backend_for
    from vlmft_cli.model_backend import LoadOptions

    return backend_for(MODEL).load(MODEL, LoadOptions(precision="fp32"), home)


def _model_inputs(home: Path) -> dict[str, Any]:
    from PIL import Image

    from vlmft_cli.backends import backend_for
    from vlmft_cli.model_backend import Turn

    backend = backend_for(MODEL)
    processor = backend.load_processor(MODEL, home)
    frames = [Image.new("RGB", (112, 112), (40 * i, 200 - 30 * i, 90)) for i in range(2)]
    turns = [Turn("user", "what is the robot doing?"), Turn("assistant", "picking up a cup")]
    sample = backend.encode(processor, frames, turns)
    return backend.collate([sample], processor.pad_token_id)


def logits_of(model: Any, inputs: dict[str, Any]) -> Any:
    import torch

    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture(scope="session")
def adapter_template(vlmft_home) -> AdapterTemplate:
    return build_template(vlmft_home)


@functools.cache
def build_template(home: Path) -> AdapterTemplate:
    """The template checkpoint under `home`; cached so the fixture imported in two places builds once."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_cosine_schedule_with_warmup

    from vlmft_cli.backends import backend_for

    torch.manual_seed(0)
    loaded = load_base(home)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=backend_for(MODEL).lora_target_pattern())
    model = get_peft_model(loaded.model, config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.2)
    folder = home / "adapter-template"
    model.save_pretrained(str(folder))

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=4e-5)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
    for parameter in trainable:
        parameter.grad = torch.randn_like(parameter) * 1e-3
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    torch.save(rng, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 1, "log_history": []}))

    inputs = _model_inputs(home)
    adapted = logits_of(model, inputs)
    with model.disable_adapter():
        base = logits_of(model, inputs)
    assert (adapted - base).abs().max() > 1e-2, "the perturbed adapter must change the outputs"
    return AdapterTemplate(folder, home, loaded.source, inputs, adapted, base)


RunFactory = Callable[..., Run]


@pytest.fixture
def make_run(adapter_template) -> RunFactory:
    """Build a run folder: `make_run(out, steps=(10, 20), eval_losses={10: 1.5}, stage=1, status="finished")`."""

    def build(
        out: Path,
        experiment: str = "demo",
        steps: tuple[int, ...] = (10, 20, 30),
        eval_losses: dict[int, float] | None = None,
        *,
        stage: int = 1,
        status: str = "finished",
        stamp: str = "20260101-120000",
    ) -> Run:
        run = Run(out / f"{experiment}_{stamp}")
        (run.path / CHECKPOINTS_DIR).mkdir(parents=True)
        run.update_record(
            name=experiment,
            created=f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z",
            status=status,
            stage=stage,
            model=MODEL,
            base_model=adapter_template.source,
            backend="internvl3",
            parent_run=None,
        )
        (run.path / "config.yaml").write_text(CONFIG_YAML)
        for step in steps:
            add_checkpoint(run, step, adapter_template.folder, eval_loss=(eval_losses or {}).get(step))
        return run

    return build


def add_checkpoint(run: Run, step: int, template: Path, *, eval_loss: float | None = None, marker: bool = True) -> Checkpoint:
    """Copy the template files into `checkpoint-{step}` and, unless told not to, write its marker."""
    path = run.checkpoints_dir / f"checkpoint-{step}"
    shutil.copytree(template, path)
    if marker:
        write_marker(path, step, {"eval_loss": eval_loss, "stage": run.stage} if eval_loss is not None else {"stage": run.stage})
    return Checkpoint(path, step)
