"""Track features: pickle-free cache round trip, cache reuse, and MFCC statistics that ignore padding."""

from __future__ import annotations

import numpy as np
import torch

from muser.eval.baselines import MFCCStats, mfcc_finalize
from muser.eval.features import TrackSet, cached, load_trackset, save_trackset


def test_trackset_round_trip_without_pickle(tmp_path):
    ts = TrackSet(
        ["a", "b"],
        np.arange(6, dtype=np.float32).reshape(2, 3),
        ["all", "all"],
        [{"labels": {"genre": "rock"}}, {"title": "é"}],
    )
    path = save_trackset(ts, tmp_path / "f.npz")
    back = load_trackset(path)  # np.load(allow_pickle=False) inside
    assert back.keys == ts.keys and back.splits == ts.splits and back.meta == ts.meta
    np.testing.assert_array_equal(back.x, ts.x)


def test_cached_computes_once_and_recovers_from_garbage(tmp_path):
    calls = []

    def compute() -> TrackSet:
        calls.append(1)
        return TrackSet(["k"], np.ones((1, 2), dtype=np.float32), ["all"], [{}])

    path = tmp_path / "c.npz"
    assert cached(path, compute)[1] is False
    assert cached(path, compute)[1] is True
    path.write_bytes(b"not an npz")
    assert cached(path, compute)[1] is False
    assert len(calls) == 2


def test_mfcc_stats_ignore_zero_padding():
    sr = 16000
    torch.manual_seed(0)
    tone = 0.5 * torch.sin(2 * torch.pi * 440 * torch.arange(sr) / sr) + 0.01 * torch.randn(sr)
    padded = torch.cat([tone, torch.zeros(sr)])
    mfcc = MFCCStats(sr)
    a = mfcc(tone[None], torch.tensor([sr]))
    b = mfcc(padded[None], torch.tensor([sr]))
    assert a.shape == (1, 40)
    # Same valid audio, same statistics (up to the one frame that straddles the boundary).
    assert torch.allclose(a[:, :20], b[:, :20], rtol=0.1, atol=1.0)
    out = mfcc_finalize(a.numpy())
    assert out.shape == (1, 40) and (out[:, 20:] >= 0).all()
