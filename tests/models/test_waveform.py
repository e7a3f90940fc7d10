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


# Masked pooling. Tolerance 1e-5 on pooled features: zeroing padded frames before every conv reproduces
# the unpadded clip's own zero padding, so the two differ only by float summation order (measured ~1e-7).
PAD_ATOL = 1e-5


def _clip(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, n, generator=g) * 1.6 - 0.8


def _trained_stats(enc: WaveformEncoder) -> WaveformEncoder:
    # Non-trivial BatchNorm running statistics, so that a zero frame does not stay zero after BN.
    enc.train()
    with torch.no_grad():
        enc(torch.rand(4, 8000) * 2 - 1)
    return enc.eval()


def test_padded_clip_with_length_embeds_like_the_unpadded_clip():
    enc = _trained_stats(WaveformEncoder(channels=(8, 16, 16), filters=8))
    for n in (4000, 4123, 2701):  # whole frames, a partial frame, a partial pool window
        clip = _clip(n)
        padded = torch.cat([clip, torch.zeros(1, n)], dim=1)
        ref = enc(clip)
        assert torch.allclose(enc(padded, torch.tensor([n])), ref, atol=PAD_ATOL), n
        assert not torch.allclose(enc(padded), ref, atol=1e-3)  # the silence did dilute it before


def test_full_length_is_bit_identical_to_no_length():
    enc = _trained_stats(WaveformEncoder(channels=(8, 16), filters=8))
    x = torch.rand(3, 5000) * 2 - 1
    assert torch.equal(enc(x, torch.full((3,), 5000)), enc(x))
    counts = enc.valid_frames(torch.tensor([5000]), 500)
    assert [int(c) for c in counts] == [500, 166, 55]  # the frames each stage really has


def test_mixed_lengths_in_a_batch_and_tiny_lengths():
    enc = _trained_stats(WaveformEncoder(channels=(8, 16), filters=8))
    lengths = torch.tensor([6000, 3000, 1, 0])
    x = torch.rand(4, 6000) * 2 - 1
    x[torch.arange(6000)[None, :] >= lengths[:, None]] = 0.0
    out = enc(x, lengths)
    assert out.shape == (4, enc.out_dim) and torch.isfinite(out).all()
    assert torch.allclose(out[0], enc(x[:1])[0], atol=PAD_ATOL)
    assert torch.allclose(out[1], enc(x[1:2, :3000])[0], atol=PAD_ATOL)
    # Below one frame (1 or 0 samples) a row still pools its first frame rather than nothing.
    assert [int(n) for n in enc.valid_frames(lengths, 600)[-1]] == [66, 33, 1, 1]
