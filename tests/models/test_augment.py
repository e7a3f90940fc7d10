"""Waveform augmentations: identity when off (no random numbers drawn) and in eval mode; shift, mix and
gain keep each row's zero padding; the model applies them in training mode only."""

from __future__ import annotations

import pytest
import torch

from muser.models.augment import WaveAugment
from tests.models.small import small_model


def _batch(b: int = 4, t: int = 1600) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    wave = torch.rand(b, t, generator=g) * 1.6 - 0.8
    length = torch.tensor([t, t // 2, t // 3, 7])[:b]
    wave[torch.arange(t)[None, :] >= length[:, None]] = 0.0
    return wave, length


def test_off_or_eval_is_identity_and_draws_nothing():
    wave, length = _batch()
    state = torch.get_rng_state()
    assert WaveAugment().train()(wave, length) is wave
    on = WaveAugment(6.0, True, 0.3).eval()
    assert on(wave, length) is wave
    assert torch.equal(torch.get_rng_state(), state)


def test_shift_is_a_rotation_within_the_valid_samples():
    wave, length = _batch()
    torch.manual_seed(1)
    out = WaveAugment(shift=True).train()(wave, length)
    for row, n in enumerate(length.tolist()):
        valid, shifted = wave[row, :n], out[row, :n]
        # Some rotation of the valid part reproduces it exactly; the padding stays zero.
        assert any(torch.equal(torch.roll(valid, -k), shifted) for k in range(n))
        assert not out[row, n:].any()


def test_mix_adds_another_row_at_a_bounded_weight_and_keeps_padding():
    wave, length = _batch()
    torch.manual_seed(2)
    out = WaveAugment(mix=0.3).train()(wave, length)
    inside = torch.arange(wave.shape[1])[None, :] < length[:, None]
    assert not out[~inside].any()
    residual = out - wave
    for row in range(wave.shape[0]):
        # The residual is w * (some other row), w in [0, 0.3]: it matches one other row up to a scale.
        r = residual[row][inside[row]]
        fits = []
        for other in range(wave.shape[0]):
            o = wave[other][inside[row]]
            if other == row or not o.any():
                continue
            w = float((r * o).sum() / (o * o).sum())
            fits.append(0.0 <= w <= 0.3 + 1e-6 and torch.allclose(r, w * o, atol=1e-6))
        assert any(fits), row


def test_gain_scales_each_row_within_its_range():
    wave, length = _batch()
    torch.manual_seed(3)
    out = WaveAugment(gain_db=6.0).train()(wave, length)
    ratio = out[:, 0] / wave[:, 0]
    db = 20 * torch.log10(ratio)
    assert torch.all(db.abs() <= 6.0 + 1e-4)
    assert torch.allclose(out, wave * ratio[:, None], atol=1e-6)
    assert len(set(ratio.tolist())) == wave.shape[0]  # drawn per example


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="--wave-gain-db must be >= 0"):
        WaveAugment(gain_db=-1.0)
    with pytest.raises(ValueError, match=r"--wave-mix in \[0, 1\]"):
        WaveAugment(mix=1.5)


def test_model_augments_in_training_only():
    wave, length = _batch(2, 16000)
    model = small_model(wave_gain_db=6.0, wave_shift=True, wave_mix=0.3)
    plain = small_model()
    plain.load_state_dict(model.state_dict())  # the augmentation adds no parameters or buffers
    model.eval(), plain.eval()
    with torch.no_grad():
        a = model({"audio": wave, "length": length})["audio"]
        b = plain({"audio": wave, "length": length})["audio"]
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        first = model.wave_augment(wave, length)
    assert not torch.equal(first, wave)
