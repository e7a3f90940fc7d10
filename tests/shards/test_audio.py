"""Decoding, downmixing, resampling and encoding of shard audio (muser.shards.audio)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from muser.shards import decode as shard_decode
from muser.shards.audio import (
    AudioError,
    decode,
    encode,
    load,
    resample,
    resampler_name,
    to_int16,
)


def _tone(rate: int, seconds: float = 1.0, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    "name,fmt,subtype,rate,channels",
    [
        ("a.wav", "WAV", "PCM_16", 44100, 2),
        ("b.wav", "WAVEX", "PCM_24", 48000, 6),  # WAVE_FORMAT_EXTENSIBLE, surround
        ("c.flac", "FLAC", "PCM_16", 22050, 1),
        ("d.ogg", "OGG", "VORBIS", 44100, 2),
        ("e.opus", "OGG", "OPUS", 48000, 2),
        ("f.mp3", "MP3", "MPEG_LAYER_III", 44100, 2),
        ("g.wav", "WAV", "FLOAT", 8000, 1),
    ],
)
def test_decodes_every_format_to_mono_float32_at_the_target_rate(
    tmp_path, name, fmt, subtype, rate, channels
):
    path = tmp_path / name
    sf.write(path, _tone(rate, channels=channels), rate, format=fmt, subtype=subtype)
    y = decode(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 0.02 * 16000  # lossy codecs pad a little
    assert np.abs(y).max() <= 1.0
    # downmix is the channel mean: channel c carries (c + 1) / channels of the tone
    expected_peak = 0.5 * np.mean([(c + 1) / channels for c in range(channels)])
    assert np.abs(y[2000:-2000]).max() == pytest.approx(expected_peak, rel=0.1)


@pytest.mark.parametrize("resampler,min_snr", [("soxr", 100), ("torchaudio", 90)])
def test_resample_keeps_a_tone_clean(resampler, min_snr):
    # 1 kHz at 44.1 kHz -> 16 kHz: compare the middle with the analytic tone at the new rate
    x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(44100) / 44100)).astype(np.float32)
    y = resample(x, 44100, 16000, resampler=resampler)
    assert len(y) == 16000 and y.dtype == np.float32
    ref = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    err = y[500:-500] - ref[500:-500]
    snr = 10 * np.log10(np.sum(ref[500:-500] ** 2) / np.sum(err**2))
    assert snr > min_snr


def test_resample_removes_a_tone_above_the_new_nyquist():
    # 9 kHz cannot exist at 16 kHz: whatever is left after resampling is aliasing (folded to 7 kHz)
    x = (0.5 * np.sin(2 * np.pi * 9000 * np.arange(44100) / 44100)).astype(np.float32)
    y = resample(x, 44100, 16000)[500:-500]
    assert 10 * np.log10(0.125 / np.mean(y.astype(np.float64) ** 2)) > 100


def test_soxr_output_length_is_the_rounded_ratio():
    for n, orig in [(11025, 22050), (44101, 44100), (7, 22050), (3, 8000)]:
        assert len(resample(np.zeros(n, np.float32), orig, 16000)) == round(n * 16000 / orig)


def test_resample_is_identity_at_the_same_rate():
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    assert resample(x, 16000, 16000) is x


def test_unknown_resampler_is_a_clear_error():
    with pytest.raises(ValueError, match="resampler 'sinc'.*soxr, torchaudio"):
        resample(np.zeros(10, np.float32), 16000, 16000, resampler="sinc")
    assert resampler_name() == "soxr-HQ"


def test_a_file_without_read_permission_says_permission_denied(tmp_path, monkeypatch):
    """Root (CI) reads a chmod-000 file anyway, so the refused open is simulated at the open call; the real
    chmod case is in tests/shards/test_writer.py (skipped as root)."""
    import builtins
    import errno

    from muser.shards import audio
    from muser.shards.sample import encode_track
    from muser.shards.sources.base import Track

    path = tmp_path / "locked.wav"
    sf.write(path, _tone(16000), 16000)
    real_open = builtins.open

    def refusing(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(audio, "open", refusing, raising=False)
    with pytest.raises(AudioError, match="permission denied"):
        decode(path, 16000)
    reason = encode_track(Track("locked", path, "test", "all", {}), 16000, "flac")
    assert isinstance(reason, str) and reason.startswith("permission denied") and "System error" not in reason


def test_unicode_path(tmp_path):
    path = tmp_path / "Ünïcødé — 音楽.wav"
    sf.write(path, _tone(16000), 16000)
    assert len(decode(path, 16000)) == 16000


@pytest.mark.parametrize("codec", ["flac", "pcm"])
def test_encode_round_trips_the_int16_samples_and_clips(codec):
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -3.0], dtype=np.float32)
    data = encode(x, 16000, codec)
    track = shard_decode.Track(data, codec, 16000, expected_rate=16000)  # the reader's own decode
    y = shard_decode.to_float(track.read(0, track.frames))
    track.close()
    np.testing.assert_array_equal(to_int16(y), to_int16(x))
    assert y.max() == 32767 / 32768 and y.min() == -1.0  # clipped, not wrapped around
    if codec == "pcm":
        assert len(data) == 2 * len(x)
    else:
        info = sf.info(io.BytesIO(data))
        assert (info.format, info.subtype, info.channels) == ("FLAC", "PCM_16", 1)


def test_int16_scale_is_32768_both_ways():
    ints = np.arange(-32768, 32768, dtype=np.int16)  # every int16
    floats = shard_decode.to_float(ints)  # the reader's conversion
    assert floats[0] == -1.0 and floats[-1] == 32767 / 32768 and floats[32768] == 0.0
    np.testing.assert_array_equal(to_int16(floats), ints)
    np.testing.assert_array_equal(
        to_int16(np.array([1.0, 2.0, -2.0, 0.5, -0.5], np.float32)), [32767, 32767, -32768, 16384, -16384]
    )


@pytest.mark.parametrize("codec", ["flac", "pcm"])
def test_known_int16_values_round_trip_exactly_through_the_reader(codec):
    ints = np.array([-32768, -32767, -12345, -1, 0, 1, 777, 16384, 32766, 32767], dtype=np.int16)
    x = shard_decode.to_float(ints)  # what training sees for these integers
    track = shard_decode.Track(encode(x, 16000, codec), codec, 16000, expected_rate=16000)
    got = track.read(0, track.frames)
    track.close()
    np.testing.assert_array_equal(got, ints)
    np.testing.assert_array_equal(shard_decode.to_float(got), x)
    assert shard_decode.to_float(got)[0] == -1.0


def test_encode_is_deterministic():
    x = np.random.default_rng(0).uniform(-1, 1, 5000).astype(np.float32)
    assert encode(x, 16000, "flac") == encode(x.copy(), 16000, "flac")


def test_unknown_codec_is_a_clear_error():
    with pytest.raises(ValueError, match="codec"):
        encode(np.zeros(10, np.float32), 16000, "mp3")


def _bad_file(tmp_path, kind: str):
    """A file of one bad kind: empty, not audio, missing, or the first half of a valid file."""
    if kind == "empty":
        (tmp_path / "empty.wav").write_bytes(b"")
        return tmp_path / "empty.wav"
    if kind == "text":
        (tmp_path / "text.mp3").write_text("hello, not audio " * 20)
        return tmp_path / "text.mp3"
    if kind == "missing":
        return tmp_path / "missing.wav"
    fmt, subtype, ext = {
        "wav": ("WAV", "PCM_16", "wav"),
        "flac": ("FLAC", "PCM_16", "flac"),
        "mp3": ("MP3", "MPEG_LAYER_III", "mp3"),
        "ogg": ("OGG", "VORBIS", "ogg"),
    }[kind]
    path = tmp_path / f"half.{ext}"
    sf.write(path, _tone(44100, seconds=2.0), 44100, format=fmt, subtype=subtype)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("empty", "empty file"),
        ("text", "not readable"),
        ("missing", "no such file"),
        ("wav", "truncated"),
        ("flac", "not readable"),
        ("mp3", "truncated"),
        ("ogg", "not readable"),
    ],
)
def test_bad_input_raises_audio_error_with_the_reason(tmp_path, kind, reason):
    with pytest.raises(AudioError, match=reason):
        load(_bad_file(tmp_path, kind))


def test_zero_length_and_non_finite_audio(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        load(tmp_path / "zero.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load(tmp_path / "nan.wav")


def test_audio_error_is_a_value_error():
    assert issubclass(AudioError, ValueError)


def test_an_mp3_cut_before_its_first_frame_is_named_truncated_not_a_pipe(tmp_path):
    path = tmp_path / "cut.mp3"
    sf.write(path, _tone(44100, seconds=2.0), 44100, format="MP3", subtype="MPEG_LAYER_III")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(AudioError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "truncated or corrupt" in message and "pipe" not in message


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    import os
    import signal

    os.mkfifo(tmp_path / "pipe.wav")

    def hung(*_):
        raise AssertionError("load() opened the FIFO and waited for a writer")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        with pytest.raises(AudioError, match="not a regular file"):
            load(tmp_path / "pipe.wav")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
