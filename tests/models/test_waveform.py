"""The raw-waveform tower: shapes, minimum length, no hidden amplitude rescaling."""

from __future__ import annotations

import torch

from muser.models.waveform import WaveformEncoder


def test_shape_and_min_samples():
    enc = WaveformEncoder(channels=(8, 16, 16), filters=8).eval()
    assert enc.min_samples == 10 * 27
    out = enc(torch.rand(3, 16000) * 2 - 1)
    assert out.shape == (3, enc.out_dim) == (3, 32)
    assert enc(torch.zeros(1, enc.min_samples)).shape == (1, 32)


def test_frontend_frames_are_centred():
    # An impulse at sample n shows up in front-end frames around n / stride: the filterbank pads so its
    # frames line up with a centred STFT's, and one frame per hop covers the whole clip.
    enc = WaveformEncoder(channels=(8,), filters=8, kernel=40, stride=10)
    x = torch.zeros(1, 4000)
    x[0, 2005] = 1.0
    y = enc.frontend[0](x[:, None]).abs().sum(dim=1)[0]
    assert y.shape[0] == 4000 // 10
    hit = torch.nonzero(y > 0).flatten()
    assert hit.min() >= 198 and hit.max() <= 202


def test_batch_independent_in_eval():
    enc = WaveformEncoder(channels=(8, 16), filters=8).eval()
    x = torch.rand(4, 8000) * 2 - 1
    assert torch.allclose(enc(x)[1:2], enc(x[1:2]), atol=1e-5)
