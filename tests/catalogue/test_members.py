"""Shard members as served files: byte ranges, the WAV wrapper of PCM members, locating members in tars."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import soundfile as sf

from muser.catalogue.members import RangeNotSatisfiable, locate, parse_range, wav_header


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-99", (0, 99)),
        ("bytes=10-", (10, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("BYTES=5-5", (5, 5)),
        ("items=0-5", None),  # another unit: the whole file
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("bytes=0-" + "9" * 5000, (0, 999)),  # a last byte past the end stops at the end (RFC 9110)
        ("bytes=-" + "9" * 5000, (0, 999)),  # a suffix longer than the file is the whole file
        ("bytes=" + "0" * 5000 + "7-8", (7, 8)),  # leading zeros are still the number
    ],
)
def test_ranges(header, expected):
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",
        "bytes=5-2",
        "bytes=-0",
        "bytes=-",
        "bytes=a-b",
        "bytes=1-2-3",
        "bytes=\u0663-",  # a digit, but not an ASCII one
        "bytes=" + "9" * 5000 + "-",  # thousands of digits: past the end, not an integer conversion error
        "bytes=" + "9" * 5000 + "-" + "9" * 5000,
    ],
)
def test_unsatisfiable_ranges(header):
    with pytest.raises(RangeNotSatisfiable) as err:
        parse_range(header, 1000)
    assert len(str(err.value)) < 200  # the message quotes a bounded part of the header


def _tar(tmp_path, members: dict[str, bytes]):
    path = tmp_path / "all-000000.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_pcm_member_is_served_as_a_wav_file_in_any_slices(tmp_path):
    pcm = (np.sin(np.arange(16000) / 7.0) * 20000).astype("<i2")
    shard = _tar(tmp_path, {"a.json": b"{}", "a.pcm": pcm.tobytes(), "b.json": b"{}"})
    member = locate(shard, "a.pcm", 16000)
    assert member.media_type == "audio/wav" and member.total == 44 + pcm.nbytes
    whole = b"".join(member.iter_bytes(0, member.total - 1))
    assert whole[:44] == wav_header(pcm.nbytes, 16000)
    x, rate = sf.read(io.BytesIO(whole), dtype="int16")
    assert rate == 16000 and np.array_equal(x, pcm)
    # any split into ranges (across the header boundary too) concatenates to the same bytes
    cuts = [0, 10, 44, 45, 1000, member.total]
    assert (
        b"".join(b"".join(member.iter_bytes(a, b - 1)) for a, b in zip(cuts, cuts[1:], strict=False)) == whole
    )


def test_a_flac_member_is_served_as_stored(tmp_path):
    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, dtype="int16"), 16000, format="FLAC", subtype="PCM_16")
    shard = _tar(tmp_path, {"k.flac": buf.getvalue(), "k.json": b"{}"})
    member = locate(shard, "k.flac", 16000)
    assert member.media_type == "audio/flac" and member.header == b""
    assert b"".join(member.iter_bytes(0, member.total - 1)) == buf.getvalue()
    with pytest.raises(FileNotFoundError, match="not in"):
        locate(shard, "other.flac", 16000)
    with pytest.raises(FileNotFoundError, match="gone"):
        locate(tmp_path / "missing.tar", "k.flac", 16000)
