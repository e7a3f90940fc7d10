"""Parameter groups (decay only on matrices, lower lr for a pretrained text encoder) and the lr schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from muser.config import TrainConfig
from muser.train.optim import WarmupCosine, build_optimizer, build_scheduler


def _groups() -> dict[str, list[nn.Parameter]]:
    wave, text = nn.Linear(4, 3), nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4))
    return {"waveform": list(wave.parameters()), "text": list(text.parameters())}


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_zero():
    f = WarmupCosine(warmup=4, total=20)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(12) == pytest.approx(0.5)  # half way through the cosine
    assert f(20) == pytest.approx(0.0, abs=1e-12)
    decay = [f(s) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))


def test_scheduler_drives_the_optimiser_lr():
    p = nn.Parameter(torch.zeros(2, 2))
    opt = build_optimizer({"projections": [p]}, [], TrainConfig(lr=0.1, warmup=2, steps=10))
    sched = build_scheduler(opt, warmup=2, total=10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:3] == pytest.approx([0.05, 0.1, 0.1])
    assert seen[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_no_weight_decay_on_biases_norms_and_scales():
    scales = [nn.Parameter(torch.tensor(14.3))]
    opt = build_optimizer(_groups(), scales, TrainConfig(lr=1e-3, weight_decay=0.1))
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["waveform"]["weight_decay"] == 0.1
    assert all(p.ndim >= 2 for p in by_name["waveform"]["params"])
    assert by_name["waveform/no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim < 2 for p in by_name["text/no_decay"]["params"])
    assert by_name["logit_scales"]["weight_decay"] == 0.0 and by_name["logit_scales"]["params"] == scales


def test_pretrained_text_encoder_trains_at_a_tenth_of_the_lr_unless_told():
    opt = build_optimizer(_groups(), [], TrainConfig(lr=1e-3), text_pretrained=True)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["text"] == pytest.approx(1e-4) and lrs["waveform"] == pytest.approx(1e-3)
    opt = build_optimizer(_groups(), [], TrainConfig(lr=1e-3, text_lr=5e-4), text_pretrained=True)
    assert {g["name"]: g["lr"] for g in opt.param_groups}["text"] == pytest.approx(5e-4)


def test_shared_parameter_between_groups_is_an_error():
    p = nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="two groups"):
        build_optimizer({"waveform": [p], "text": [p]}, [], TrainConfig())
