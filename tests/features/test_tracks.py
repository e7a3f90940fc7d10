"""Track features: pickle-free cache round trip, cache reuse, and MFCC statistics that ignore padding."""

from __future__ import annotations

import numpy as np
import torch

from muser.eval.baselines import MFCCStats, mfcc_finalize
from muser.features.tracks import (
    PART_ROWS,
    TrackSet,
    cached,
    load_trackset,
    model_chunk_fn,
    pool_chunks,
    row_parallel,
    save_trackset,
)
from muser.models.inference import inference_copy
from muser.models.muser import MUSER


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


def _batch(chunks: list[tuple[str, list[float], int]]) -> tuple[str, dict]:
    return "valid", {
        "audio": torch.tensor([audio for _, audio, _ in chunks]),
        "length": torch.tensor([length for _, _, length in chunks]),
        "key": [key for key, _, _ in chunks],
        "meta": [{"id": key} for key, _, _ in chunks],
    }


def test_pool_chunks_weights_by_valid_length_and_stops_at_max_tracks():
    drawn = []

    def batches():
        # track a: a full chunk pointing at x, then a mostly padded one (1 of 4 samples) pointing at y
        for split, batch in (
            _batch([("a", [1.0, 0.0, 0.0, 0.0], 4), ("a", [0.0, 1.0, 0.0, 0.0], 1)]),
            _batch([("b", [0.0, 1.0, 0.0, 0.0], 4), ("c", [1.0, 0.0, 0.0, 0.0], 4)]),
            _batch([("d", [1.0, 0.0, 0.0, 0.0], 4)]),
        ):
            drawn.append(batch["key"])
            yield split, batch

    def first_two(audio: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return audio[:, :2]

    ts = pool_chunks(batches(), first_two, max_tracks=2)
    assert ts.keys == ["a", "b"] and ts.splits == ["valid", "valid"] and ts.meta == [{"id": "a"}, {"id": "b"}]
    np.testing.assert_allclose(ts.x[0], [4 / 5, 1 / 5])  # length-weighted, not the equal-weight [1/2, 1/2]
    assert drawn == [["a", "a"], ["b", "c"]]  # the batch after the first chunk of track 3 is never read
    assert pool_chunks(iter(()), first_two).keys == []


def test_a_truncated_cache_is_recomputed(tmp_path):
    calls = []

    def compute() -> TrackSet:
        calls.append(1)
        return TrackSet(["k", "l"], np.ones((2, 64), dtype=np.float32), ["all", "all"], [{}, {}])

    path = tmp_path / "c.npz"
    cached(path, compute)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a disk that filled mid-write
    ts, was_cached = cached(path, compute)
    assert not was_cached and ts.keys == ["k", "l"] and len(calls) == 2
    assert cached(path, compute)[1] is True  # and the rewritten file reads back


def test_row_parallel_gives_the_same_bits_on_any_thread_count():
    """`muser embed` on the CPU cuts each batch into PART_ROWS-row parts run across threads: every thread
    count gives the bits of running those parts one by one, each row is its own chunk's embedding, and the
    intra-op thread count is back after each batch."""
    torch.manual_seed(0)
    fast = inference_copy(MUSER.from_preset("tiny").eval())
    fn = model_chunk_fn(fast, torch.device("cpu"))
    rows = PART_ROWS + 5  # two parts, the second one short
    audio = (torch.randn(rows, 16000) * 0.3).clamp(-1, 1)
    length = torch.full((rows,), 16000)
    length[3], length[-1] = 9000, 5000
    audio[3, 9000:], audio[-1, 5000:] = 0, 0
    threads = torch.get_num_threads()
    got = {}
    for n in (1, 2, 3):
        with torch.no_grad(), row_parallel(fn, n) as run:
            got[n] = run(audio, length)
            assert torch.get_num_threads() == threads
    assert torch.equal(got[1], got[2]) and torch.equal(got[1], got[3])
    with torch.no_grad():
        alone = torch.cat([fn(audio[i : i + 1], length[i : i + 1]) for i in (0, 3, rows - 1)])
    assert (got[2][[0, 3, rows - 1]] - alone).abs().max() < 1e-5
