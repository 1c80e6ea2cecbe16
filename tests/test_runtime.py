"""The process runtime: one precision → dtype map, shared by model loading and the packed block mask."""

import pytest
import torch

from vlmft_cli.runtime import PRECISIONS, dtype_for
from vlmft_cli.settings import Precision, Settings


def test_one_precision_map_for_every_user():
    from vlmft_cli.model_loading import DTYPES

    assert {name: dtype_for(name) for name in PRECISIONS} == {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    assert {name: dtype_for(name) for name in PRECISIONS} == DTYPES
    assert dtype_for(Precision.FP16) is torch.float16  # the setting's enum, as settings carry it
    assert dtype_for(Settings(precision="fp32").precision) is torch.float32
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        dtype_for("int4")
