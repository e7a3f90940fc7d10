"""Pretraining on a CUDA GPU only (marker `gpu`; `make gpu-check` runs them): bf16 autocast and fp16 with
the loss scaler train the tiny preset with a falling loss, the spectrograms on the GPU, and the run folder
records that the fused Triton loss computed it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from muser.config import preset
from muser.train import pretrain
from tests.train.conftest import small_run

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_train_with_the_fused_loss(shards, tmp_path, precision):
    run = tmp_path / "run"
    data, train = small_run(shards, run, gpus=1, precision=precision, steps=24, warmup=3, log_every=1)
    result = pretrain(data, preset("tiny"), train)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert result["steps"] == 24 and len(losses) == 24 and all(map(math.isfinite, losses))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3, losses
    assert result["loss_impl"] == "triton"  # auto chose the fused kernels, and the run folder says so
    assert json.loads((run / "result.json").read_text())["loss_impl"] == "triton"
    scaler = torch.load(run / "last.pt", weights_only=True)["scaler"]
    if precision == "fp16":
        # The scaler was live: it holds a scale, and the step counter of growth since the last overflow.
        assert scaler["scale"] > 0 and "_growth_tracker" in scaler
    else:
        assert scaler == {}  # bf16 needs no loss scaling: the disabled scaler stores nothing
