"""Checkpoints: atomic writes, weights_only loads, RNG states that replay the same random numbers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from muser.train import checkpoint as ckpt


def _state() -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {
        "step": 7,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": [ckpt.rng_state()],
        "config": {"train": {"lr": 0.1, "loss_terms": ["at", "st"]}},
    }


def test_round_trip_loads_with_weights_only(tmp_path):
    state = _state()
    path = ckpt.save_checkpoint(state, tmp_path, 7, keep_step=True)
    assert path == tmp_path / "last.pt" and (tmp_path / "step-0000007.pt").is_file()
    loaded = torch.load(path, weights_only=True)  # would raise on any pickled object
    assert loaded["step"] == 7 and loaded["config"] == state["config"]
    torch.testing.assert_close(loaded["model"]["weight"], state["model"]["weight"])
    assert (
        ckpt.read_state(tmp_path)["optimizer"]["state"][0]["step"] == state["optimizer"]["state"][0]["step"]
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    ckpt.save_checkpoint({"step": 1}, tmp_path, 1)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"step": 2}, tmp_path, 2)
    assert ckpt.read_state(tmp_path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checksums.json", "last.pt"]


def test_rng_state_replays_torch_python_and_numpy(tmp_path):
    ckpt.save_checkpoint({"rng": [ckpt.rng_state()]}, tmp_path, 0)
    first = (torch.rand(3), random.random(), np.random.rand(2))
    ckpt.set_rng_state(ckpt.read_state(tmp_path)["rng"][0])
    again = (torch.rand(3), random.random(), np.random.rand(2))
    torch.testing.assert_close(first[0], again[0])
    assert first[1] == again[1] and np.array_equal(first[2], again[2])


def test_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume"):
        ckpt.read_state(tmp_path)
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint"):
        ckpt.read_state(tmp_path / "last.pt")
