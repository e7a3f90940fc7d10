"""The inference copy `muser embed` runs: the model's embeddings to float rounding, the model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from muser.models.inference import FFTMelSpectrogram, PlanarWaveform, _make_planar, inference_copy
from muser.models.muser import MUSER
from muser.models.pooling import zero_invalid
from muser.models.waveform import WaveformEncoder


def test_inference_copy_embeds_like_the_model_padded_or_not():
    torch.manual_seed(0)
    model = MUSER.from_preset("tiny").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fast = inference_copy(model)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's random stream is left alone
    assert isinstance(fast.spectrogram.frontend, FFTMelSpectrogram)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.spectrogram.stages.modules())
    convs = [m for m in fast.spectrogram.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # the waveform tower runs planar: no 1-D layer left, every convolution (1, k) and channels-last
    assert isinstance(fast.waveform, PlanarWaveform)
    assert not any(isinstance(m, (nn.Conv1d, nn.MaxPool1d)) for m in fast.waveform.modules())
    planar = [m for m in fast.waveform.modules() if isinstance(m, nn.Conv2d)]
    assert len(planar) == sum(isinstance(m, nn.Conv1d) for m in model.waveform.modules())
    assert all(
        c.kernel_size[0] == 1 and c.weight.is_contiguous(memory_format=torch.channels_last) for c in planar
    )
    wave = torch.randn(4, 16000) * 0.3
    length = torch.tensor([16000, 9000, 4000, 16000])
    wave[1, 9000:] = 0
    wave[2, 4000:] = 0
    with torch.no_grad():
        for which in ("waveform", "spectrogram", "both"):
            for lengths in (None, length):
                want = model.encode_audio(wave, which=which, length=lengths)
                got = fast.encode_audio(wave, which=which, length=lengths)
                assert (got - want).abs().max() < 1e-5, which
    # the model itself keeps its BatchNorms and its nnAudio front end
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not isinstance(model.spectrogram.frontend, FFTMelSpectrogram)


def test_a_trainable_front_end_keeps_its_convolution():
    model = MUSER.from_preset("tiny", trainable_filters=True).eval()
    assert not isinstance(inference_copy(model).spectrogram.frontend, FFTMelSpectrogram)


def test_masks_keep_the_channels_last_layout():
    """A padded batch must not fall back to contiguous tensors halfway through the tower (each layer after
    would copy): zero_invalid keeps x's layout where masked_fill with a broadcast mask does not."""
    x = torch.randn(2, 8, 1, 30).contiguous(memory_format=torch.channels_last)
    valid = (torch.arange(30) < torch.tensor([30, 12])[:, None]).view(2, 1, 1, 30)
    out = zero_invalid(x, valid)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, x.masked_fill(~valid, 0.0))
    tower = inference_copy(MUSER.from_preset("tiny").eval()).waveform
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append(o))
        for m in tower.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        tower(torch.randn(2, 16000) * 0.3, torch.tensor([16000, 7000]))
    for h in hooks:
        h.remove()
    assert seen and all(o.is_contiguous(memory_format=torch.channels_last) for o in seen)


def test_a_tower_with_a_layer_it_cannot_lift_is_refused():
    tower = WaveformEncoder()  # BatchNorms not folded: a BatchNorm1d would meet (B, C, 1, N) tensors
    with pytest.raises(TypeError, match="BatchNorm1d"):
        _make_planar(tower)
