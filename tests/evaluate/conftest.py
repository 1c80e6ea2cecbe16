"""A tiny stage-1 run (two optimizer steps) to evaluate, trained once per session."""

import pytest

from vlmft_cli.settings import SettingsInput
from vlmft_cli.training.recipe import TrainRequest, train

TINY_RUN = {"global_batch_size": 4, "save_steps": 3, "max_steps": 2, "dataloader_workers": 0, "learning_rate": 1e-3}


@pytest.fixture(scope="session")
def stage1_run(processed_data, vlmft_home, tmp_path_factory):
    """(experiments folder, TrainResult) of a finished two-step stage-1 run with checkpoint-2."""
    out = tmp_path_factory.mktemp("eval-experiments")
    result = train(TrainRequest(settings=SettingsInput(stage=1, profile="cpu", flags={"data": processed_data, "out": out, "home": vlmft_home, **TINY_RUN}, environ={})))
    assert result.status == "finished" and result.last_checkpoint.name == "checkpoint-2"
    return out, result
