"""The inference copy `muser embed` runs: the model's embeddings to float rounding, the model untouched."""

from __future__ import annotations

import torch

from muser.models.inference import FFTMelSpectrogram, inference_copy
from muser.models.muser import MUSER


def test_inference_copy_embeds_like_the_model_padded_or_not():
    torch.manual_seed(0)
    model = MUSER.from_preset("tiny").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_copy(model)
    assert isinstance(fast.spectrogram.frontend, FFTMelSpectrogram)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.spectrogram.stages.modules())
    convs = [m for m in fast.spectrogram.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
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
