"""The per-track job and its tar framing: the bytes equal tarfile's, clipping is counted."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from muser.shards.sample import Sample, encode_track, member, tar_end
from muser.shards.sources.base import Track


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 20 * 512 - 1, 70_000])
@pytest.mark.parametrize("name", ["k.flac", "a" * 99 + ".json", "b" * 140 + ".flac"])
def test_member_and_end_bytes_equal_tarfiles(name, size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ref = io.BytesIO()
    with tarfile.open(fileobj=ref, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o444
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))
    ours = member(name, data)
    assert ours + tar_end(len(ours)) == ref.getvalue()


def test_encode_track_counts_clipped_samples(tmp_path):
    x = np.array([0.5, 1.0, 1.25, -1.0, -3.0, 0.0] * 100, np.float32)
    sf.write(tmp_path / "loud.wav", x, 8000, subtype="FLOAT")
    track = Track("loud", tmp_path / "loud.wav", "test", "all", {"title": "Loud", "year": float("nan")})
    sample = encode_track(track, 8000, "pcm")
    assert isinstance(sample, Sample) and sample.clipped == 200 and sample.num_samples == 600
    with tarfile.open(fileobj=io.BytesIO(sample.blob + tar_end(len(sample.blob)))) as tar:
        audio, meta = (tar.extractfile(m).read() for m in tar.getmembers())
    assert json.loads(meta)["extra"] == {"clipped_samples": 200} and "year" not in json.loads(meta)
    pcm = np.frombuffer(audio, "<i2")
    assert pcm[2] == 32767 and pcm[4] == -32768 and pcm[1] == 32767 and pcm[3] == -32768


def test_encode_track_returns_the_reason_for_a_bad_file(tmp_path):
    (tmp_path / "bad.wav").write_text("not audio")
    reason = encode_track(Track("bad", tmp_path / "bad.wav", "test", "all", {}), 8000, "flac")
    assert isinstance(reason, str) and reason.startswith("not readable as audio")
