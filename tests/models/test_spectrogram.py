"""The nnAudio front end (Slaney mel like torchaudio's, full band, CQT), SpecAugment, the 2-D tower."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio

from muser.config import ModelConfig
from muser.models.spectrogram import SpecAugment, SpectrogramEncoder, make_frontend

SR = 16000


def _signal(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(SR * seconds)) / SR
    x = 0.5 * torch.sin(2 * math.pi * 440 * t) + 0.2 * torch.sin(2 * math.pi * 55 * t)
    return (x + 0.05 * torch.randn(t.shape, generator=g)).clamp(-1, 1)[None]


@pytest.mark.parametrize(
    "n_fft,hop,n_mels,fmin,fmax", [(1024, 256, 64, 0.0, None), (512, 160, 40, 30.0, 7000.0)]
)
def test_mel_matches_torchaudio_slaney(n_fft, hop, n_mels, fmin, fmax):
    # Tolerance: log-mel within 1e-3 nats everywhere (measured ~1e-5: both are fp32 DFTs of the same
    # periodic Hann frames, nnAudio's by conv1d, torchaudio's by FFT).
    x = _signal()
    ours = make_frontend("mel", SR, n_fft, hop, n_mels, fmin, fmax, trainable=False)(x)
    ref = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR,
        n_fft=n_fft,
        hop_length=hop,
        n_mels=n_mels,
        f_min=fmin,
        f_max=fmax,
        power=2.0,
        norm="slaney",
        mel_scale="slaney",
        center=True,
        pad_mode="constant",
    )(x)
    assert ours.shape == ref.shape
    assert torch.allclose(torch.log(ours + 1e-6), torch.log(ref + 1e-6), atol=1e-3, rtol=0)
    assert (ours - ref).abs().max() <= 1e-4 * ref.max()


def test_full_band_reaches_nyquist():
    # fmax=None must mean Nyquist: a tone at 7.5 kHz lands in the top mel bands (no low-pass, no crop).
    t = torch.arange(SR) / SR
    x = (0.5 * torch.sin(2 * math.pi * 7500 * t))[None]
    mel = make_frontend("mel", SR, 1024, 256, 64, 0.0, None, trainable=False)(x)
    assert mel.mean(dim=-1).argmax().item() >= 60


def test_bad_band_is_a_clear_error():
    with pytest.raises(ValueError, match="Nyquist"):
        make_frontend("mel", SR, 1024, 256, 64, 0.0, 12000.0, trainable=False)
    with pytest.raises(ValueError, match="spec_kind"):
        make_frontend("stft", SR, 1024, 256, 64, 0.0, None, trainable=False)


def test_encoder_keeps_whole_clip_and_band():
    enc = SpectrogramEncoder(sample_rate=SR, n_mels=48, hop_length=256).eval()
    spec = enc.log_spectrogram(_signal(3.0))
    assert spec.shape == (1, 48, 3 * SR // 256 + 1)  # every frame, every band: no resize, no crop
    assert torch.isfinite(spec).all()
    assert enc(_signal(3.0)).shape == (1, enc.out_dim)


def test_cqt_option_and_trainable_filters():
    enc = SpectrogramEncoder(sample_rate=SR, kind="cqt", hop_length=512, n_mels=84, channels=(4, 8))
    assert enc.n_bins == 84
    assert enc(_signal(1.0).repeat(2, 1)).shape == (2, 16)
    trainable = SpectrogramEncoder(sample_rate=SR, n_fft=256, trainable_filters=True, channels=(4,))
    frontend_params = [n for n, _ in trainable.frontend.named_parameters()]
    assert "mel_basis" in frontend_params and any("stft" in n for n in frontend_params)
    assert not list(SpectrogramEncoder(sample_rate=SR, n_fft=256, channels=(4,)).frontend.parameters())


def test_frontend_stays_fp32_under_autocast():
    enc = SpectrogramEncoder(sample_rate=SR, n_fft=256, channels=(4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert enc.log_spectrogram(_signal(0.5)).dtype == torch.float32


def test_specaugment_only_in_training():
    aug = SpecAugment(masks=2, freq_width=8, time_width=20)
    x = torch.randn(8, 64, 100) + 5.0  # no natural zeros, so masked cells are exactly the zeros
    aug.eval()
    assert torch.equal(aug(x), x)
    aug.train()
    torch.manual_seed(0)
    y = aug(x)
    masked = y == 0
    assert masked.any()
    # A mask spans whole rows (frequency) or whole columns (time), never isolated cells.
    rows, cols = masked.all(dim=2), masked.all(dim=1)
    assert torch.equal(masked, rows[:, :, None] | cols[:, None, :])
    assert rows.sum(dim=1).max() <= 2 * 8 and cols.sum(dim=1).max() <= 2 * 20


def test_encoder_specaugment_changes_output_only_in_train():
    enc = SpectrogramEncoder(sample_rate=SR, n_fft=256, channels=(4, 8), specaugment=True)
    x = _signal(1.0).repeat(4, 1)
    enc.eval()
    assert torch.equal(enc(x), enc(x))
    enc.train()
    torch.manual_seed(1)
    a = enc(x)
    torch.manual_seed(2)
    assert not torch.equal(a, enc(x))


def test_encoder_defaults_are_the_model_config():
    # The building block and MUSER's config are one recipe: SpecAugment off unless asked for (README).
    enc = SpectrogramEncoder(sample_rate=SR, n_fft=256, channels=(4,)).train()
    assert enc.specaugment.masks == (ModelConfig.specaug_masks if ModelConfig.specaugment else 0)
    assert not ModelConfig.specaugment  # the measured default (README "Real music"): no masks in train
    x = _signal(1.0).repeat(4, 1)
    torch.manual_seed(1)
    a = enc(x)
    torch.manual_seed(2)
    assert torch.equal(a, enc(x))


# Masked pooling. Tolerance 1e-5 on pooled features: the centred transform's frames of the valid
# samples are the unpadded clip's frames exactly, and zeroing padded frames before every conv and
# ceil-mode pool reproduces the unpadded clip's zero padding, so only float summation order differs.
PAD_ATOL = 1e-5


def _tower(kind: str) -> SpectrogramEncoder:
    enc = SpectrogramEncoder(
        sample_rate=SR, kind=kind, n_fft=512, hop_length=160, n_mels=32, fmin=100.0, channels=(4, 8)
    )
    enc.train()  # non-trivial BatchNorm running statistics: a zero frame does not stay zero after BN
    with torch.no_grad():
        enc(torch.rand(4, SR // 2) * 2 - 1)
    return enc.eval()


@pytest.mark.parametrize("kind", ["mel", "cqt"])
def test_padded_clip_with_length_embeds_like_the_unpadded_clip(kind):
    enc = _tower(kind)
    for n in (8000, 8123, 4960):  # whole hops, a partial hop, an odd frame count at a pool
        clip = _signal(n / SR, seed=n)
        padded = torch.cat([clip, torch.zeros(1, n)], dim=1)
        ref = enc(clip)
        assert torch.allclose(enc(padded, torch.tensor([n])), ref, atol=PAD_ATOL), n
        assert not torch.allclose(enc(padded), ref, atol=1e-3)  # the silence did dilute it before


def test_full_length_is_bit_identical_and_counts_match_the_layers():
    enc = _tower("mel")
    x = _signal(0.5).repeat(2, 1)
    assert torch.equal(enc(x, torch.full((2,), x.shape[1])), enc(x))
    frames = enc.log_spectrogram(x).shape[-1]
    assert frames == x.shape[1] // 160 + 1
    counts = enc.valid_frames(torch.tensor([x.shape[1]]), frames)
    assert [int(c) for c in counts] == [51, 26, 13, 7]  # spectrogram, stem pool, two ceil-mode stages


def test_mixed_lengths_in_a_batch_and_a_single_sample():
    enc = _tower("mel")
    lengths = torch.tensor([8000, 3000, 1])
    x = _signal(0.5).repeat(3, 1)
    x[torch.arange(8000)[None, :] >= lengths[:, None]] = 0.0
    out = enc(x, lengths)
    assert out.shape == (3, enc.out_dim) and torch.isfinite(out).all()
    assert torch.allclose(out[1], enc(x[1:2, :3000])[0], atol=PAD_ATOL)
    assert torch.allclose(out[2], enc(x[2:3, :1])[0], atol=PAD_ATOL)  # one sample: one centred frame


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["mel", "cqt"])
def test_frontend_on_the_gpu_equals_the_cpu(kind):
    # The spectrogram is computed on the GPU inside the model during training and on the CPU in tests:
    # both must give the same log spectrogram (cuFFT vs pocketfft, fp32) and the same tower output.
    torch.manual_seed(0)
    enc = SpectrogramEncoder(sample_rate=SR, kind=kind, n_mels=48 if kind == "mel" else 84, hop_length=512)
    enc = enc.eval()
    wave = torch.cat([_signal(2.0, seed=1), _signal(2.0, seed=2)])
    cpu = enc.log_spectrogram(wave)
    gpu = enc.cuda().log_spectrogram(wave.cuda()).cpu()
    assert gpu.shape == cpu.shape and torch.isfinite(gpu).all()
    # log magnitudes: an absolute bound (in log units) over the whole band
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-3 * cpu.abs().max().item())
    with torch.no_grad():
        want = enc.cpu()(wave)
        # The tower alone, on the CPU's spectrogram, without TF32 convolutions (cuDNN's default on
        # Ampere and later): the same function to fp32 rounding.
        enc.cuda().log_spectrogram = lambda w: cpu.to(w.device)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            torch.testing.assert_close(enc(wave.cuda()).cpu(), want, rtol=1e-3, atol=1e-4)
        del enc.log_spectrogram
        # End to end with the defaults: the front end's differences (bounded above) and TF32 propagate
        # through the tower. On an H200 the outputs differed by at most 2.3e-4 (mel) and 7.2e-4 (CQT) on
        # values of order 1, which the 1e-4 bound above had failed.
        torch.testing.assert_close(enc(wave.cuda()).cpu(), want, rtol=1e-2, atol=2e-3)
