"""Streaming reader: exact eval passes, equal train batches per rank, crops, seeds, errors, labels, tokens."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from muser.models.tokenizer import Tokenize
from muser.shards.reader import make_loader
from muser.shards.stages import ShardReadError
from tests.shards import shardkit

RATE = 8000
# lengths in seconds: some shorter than a 1-s crop, some not a multiple of it
SECONDS = [2.5, 0.4, 1.0, 3.2, 1.7]


def simulate(source, ranks: int, workers: int, **kw) -> dict[tuple[int, int], list[dict]]:
    """Batches of every (rank, worker) reader, run in this process."""
    out = {}
    for rank in range(ranks):
        loader = make_loader(source, rank=rank, world_size=ranks, num_workers=0, **kw)
        for worker in range(workers):
            out[rank, worker] = list(loader.iter_worker(worker, workers))
    return out


def audio_by_key(batches: list[dict]) -> dict[str, np.ndarray]:
    """Reassemble eval chunks into tracks (chunks of one key arrive consecutively)."""
    parts: dict[str, list[np.ndarray]] = {}
    for b in batches:
        for key, audio, length in zip(b["key"], b["audio"], b["length"], strict=True):
            parts.setdefault(key, []).append(audio[: int(length)].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


@pytest.fixture
def tracks():
    return shardkit.make_tracks(10, SECONDS, RATE)


@pytest.mark.parametrize("per_shard", [1, 4])  # 10 shards >= 2 x 2 readers, and 3 shards < 4 readers
def test_eval_every_track_once_over_ranks_and_workers(tmp_path, tracks, per_shard):
    folder = shardkit.write_folder(tmp_path / "s", tracks, per_shard=per_shard, sample_rate=RATE)
    runs = simulate(folder, 2, 2, mode="eval", batch_size=3, crop_seconds=1.0)
    seen = Counter()
    for batches in runs.values():
        for key in audio_by_key(batches):
            seen[key] += 1
    assert seen == Counter({t["key"]: 1 for t in tracks})
    # the chunks of each track cover it exactly, in order, padded with zeros only at the end
    every = [b for batches in runs.values() for b in batches]
    got = audio_by_key(every)
    for t in tracks:
        np.testing.assert_array_equal(got[t["key"]], t["audio"].astype(np.float32) / 32768)
        n_chunks = sum(k == t["key"] for b in every for k in b["key"])
        assert n_chunks == -(-len(t["audio"]) // RATE)
    for b in every:
        assert b["audio"].shape[1] == RATE and b["audio"].dtype == torch.float32
        for audio, length in zip(b["audio"], b["length"], strict=True):
            assert torch.all(audio[int(length) :] == 0)
    # deterministic: a second pass is identical
    again = simulate(folder, 2, 2, mode="eval", batch_size=3, crop_seconds=1.0)
    assert [b["key"] for b in again[1, 1]] == [b["key"] for b in runs[1, 1]]


def test_train_equal_batches_per_rank_with_fewer_shards_than_readers(tmp_path, tracks):
    folder = shardkit.write_folder(tmp_path / "s", tracks[:3], per_shard=3, sample_rate=RATE)  # one shard
    runs = simulate(folder, 2, 2, steps=5, batch_size=2, crop_seconds=0.5, shuffle_buffer=4)
    for rank in range(2):
        assert len(runs[rank, 0]) + len(runs[rank, 1]) == 5
    assert len(runs[0, 0]) == 3 and len(runs[0, 1]) == 2  # steps shared among workers
    for batches in runs.values():
        for b in batches:
            assert b["audio"].shape == (2, RATE // 2)
            assert b["caption_id"].dtype == torch.int64 and len(b["text"]) == 2
    # different readers draw different streams
    assert [b["key"] for b in runs[0, 0]] != [b["key"] for b in runs[1, 0]] or not torch.equal(
        runs[0, 0][0]["audio"], runs[1, 0][0]["audio"]
    )
    loader = make_loader(folder, steps=5, batch_size=2, num_workers=0)
    assert len(loader) == 5 and len(list(loader)) == 5
    # without steps: one pass worth of batches per rank from the manifest sample count
    assert len(make_loader(folder, batch_size=1, world_size=2, rank=0, num_workers=0)) == 1


def test_train_crops_pad_to_the_longest_crop_of_the_batch(tmp_path, tracks):
    folder = shardkit.write_folder(tmp_path / "s", tracks, sample_rate=RATE)
    loader = make_loader(folder, steps=6, batch_size=4, crop_seconds=2.0, num_workers=0, shuffle_buffer=8)
    originals = {t["key"]: t["audio"].astype(np.float32) / 32768 for t in tracks}
    widths = set()
    for b in loader:
        # padded to the batch's longest real crop, never below one second (the crop here is 2 s)
        assert b["audio"].shape == (4, max(int(b["length"].max()), RATE))
        widths.add(b["audio"].shape[1])
        for key, audio, length in zip(b["key"], b["audio"].numpy(), b["length"].tolist(), strict=True):
            full = originals[key]
            assert length == min(len(full), 2 * RATE)
            assert np.all(audio[length:] == 0)
            # the crop is a contiguous window of the original track (values repeat: try every match)
            starts = np.flatnonzero(full[: len(full) - length + 1] == audio[0])
            assert any(np.array_equal(audio[:length], full[s : s + length]) for s in starts)
    assert 2 * RATE in widths  # most batches hold a full-length crop


def test_a_crop_longer_than_every_track_costs_no_memory(tmp_path, tracks):
    folder = shardkit.write_folder(tmp_path / "s", tracks, sample_rate=RATE)
    # a 600-s crop of tracks of at most 3.2 s: batches are 3.2 s wide, not 600 s (4.8M samples)
    loader = make_loader(folder, steps=3, batch_size=4, crop_seconds=600.0, num_workers=0, shuffle_buffer=8)
    for b in loader:
        assert b["audio"].shape[1] <= int(3.2 * RATE)


def test_seeds_reproduce_and_differ(tmp_path, tracks):
    folder = shardkit.write_folder(tmp_path / "s", tracks, sample_rate=RATE)

    def run(seed, epoch=0):
        loader = make_loader(folder, steps=3, batch_size=4, num_workers=0, seed=seed, epoch=epoch)
        return [(b["key"], b["text"], b["audio"]) for b in loader]

    a, b, c, d = run(0), run(0), run(1), run(0, epoch=1)
    assert all(x[:2] == y[:2] and torch.equal(x[2], y[2]) for x, y in zip(a, b, strict=True))
    assert any(x[:2] != y[:2] or not torch.equal(x[2], y[2]) for x, y in zip(a, c, strict=True))
    assert any(x[:2] != y[:2] or not torch.equal(x[2], y[2]) for x, y in zip(a, d, strict=True))
    # each pass advances the epoch; set_epoch pins it
    loader = make_loader(folder, steps=3, batch_size=4, num_workers=0)
    first = [b["key"] for b in loader]
    second = [b["key"] for b in loader]
    loader.set_epoch(0)
    assert [b["key"] for b in loader] == first != second


def test_pcm_and_flac_give_the_same_crops(tmp_path, tracks):
    flac = shardkit.write_folder(tmp_path / "f", tracks, codec="flac", sample_rate=RATE)
    pcm = shardkit.write_folder(tmp_path / "p", tracks, codec="pcm", sample_rate=RATE)
    kw = dict(steps=3, batch_size=4, crop_seconds=0.7, num_workers=0, seed=3)
    for x, y in zip(make_loader(flac, **kw), make_loader(pcm, **kw), strict=True):
        assert x["key"] == y["key"]
        assert torch.equal(x["audio"], y["audio"]) and torch.equal(x["length"], y["length"])
    chunks = [make_loader(f, mode="eval", batch_size=5, crop_seconds=0.7, num_workers=0) for f in (flac, pcm)]
    for x, y in zip(*chunks, strict=True):
        assert torch.equal(x["audio"], y["audio"])


def test_corrupt_members_are_skipped_and_counted(tmp_path, tracks, caplog):
    folder = shardkit.write_folder(
        tmp_path / "s", tracks, per_shard=3, sample_rate=RATE, corrupt={"track_0007"}
    )
    # a shard that is not a tar at all, listed in the manifest like the others
    (folder / "train-000001.tar").write_bytes(b"\x00garbage" * 100)
    loader = make_loader(folder, mode="eval", batch_size=4, num_workers=0)
    keys = {k for b in loader for k in b["key"]}
    assert keys == {t["key"] for t in tracks} - {"track_0003", "track_0005", "track_0004", "track_0007"}
    assert loader.errors == 2
    assert "track_0007" in caplog.text and "train-000001.tar" in caplog.text
    # counted again on the next pass, accumulated by the loader
    list(loader)
    assert loader.errors == 4


def test_labels_single_and_multi(tmp_path, tracks):
    folder = shardkit.write_folder(tmp_path / "s", tracks, sample_rate=RATE)
    batch = next(iter(make_loader(folder, mode="eval", batch_size=30, crop_seconds=10.0, num_workers=0)))
    genres, tags = ["blues", "jazz", "rock"], ["drums", "guitar", "piano", "slow"]
    assert batch["labels"]["genre"].dtype == torch.int64
    assert batch["labels"]["tags"].shape == (10, 4) and batch["labels"]["tags"].dtype == torch.float32
    for meta, g, row in zip(batch["meta"], batch["labels"]["genre"], batch["labels"]["tags"], strict=True):
        want = meta["labels"].get("genre")
        assert int(g) == (genres.index(want) if want else -1)
        assert [tags[i] for i in torch.nonzero(row).flatten().tolist()] == sorted(meta["labels"]["tags"])


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = ["a song of rock jazz blues belongs to popular music whose style is guitar slow piano drums"]
    tok.train_from_iterator(
        words, trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[PAD]", "[UNK]"])
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def test_workers_tokenizer_and_error_count_travel_back(tmp_path, tracks):
    """The real thing once: 2 forkserver workers, tokenising in the workers, skips counted home."""
    folder = shardkit.write_folder(
        tmp_path / "s", tracks, per_shard=2, sample_rate=RATE, corrupt={"track_0001"}
    )
    tok = tiny_tokenizer()
    loader = make_loader(folder, steps=5, batch_size=3, num_workers=2, tokenize=Tokenize(tok, max_length=8))
    batches = list(loader)
    assert len(batches) == 5
    for b in batches:
        assert b["input_ids"].shape[0] == 3 and b["input_ids"].shape[1] <= 8
        assert b["attention_mask"].shape == b["input_ids"].shape
        assert "track_0001" not in b["key"]
    assert loader.errors > 0
    # eval with two workers gives the same tracks as the simulated workers
    ev = make_loader(folder, mode="eval", batch_size=4, num_workers=2)
    got = audio_by_key(list(ev))
    sim = audio_by_key([b for bs in simulate(folder, 1, 2, mode="eval", batch_size=4).values() for b in bs])
    assert sorted(got) == sorted(sim) == sorted(t["key"] for t in tracks if t["key"] != "track_0001")
    assert ev.errors == 1


def test_mixed_sources_weights_and_patterns(tmp_path, tracks):
    a = shardkit.write_folder(tmp_path / "a", tracks[:5], sample_rate=RATE)
    b_tracks = shardkit.make_tracks(3, 1.0, RATE, seed=1)
    for t in b_tracks:
        t["key"] = "other_" + t["key"]
    b = shardkit.write_folder(tmp_path / "b", b_tracks, sample_rate=RATE)
    keys = {k for batch in make_loader([a, b], weights=[0, 1], steps=3, num_workers=0) for k in batch["key"]}
    assert keys and all(k.startswith("other_") for k in keys)
    keys = {k for batch in make_loader([a, b], mode="eval", num_workers=0) for k in batch["key"]}
    assert len(keys) == 8
    # brace pattern of shard paths (no manifest: rate passed explicitly, no labels)
    pattern = str(tmp_path / "a" / "train-{000000..000001}.tar")
    batches = list(make_loader(pattern, mode="eval", sample_rate=RATE, num_workers=0))
    assert {k for x in batches for k in x["key"]} == {t["key"] for t in tracks[:5]}
    assert "labels" not in batches[0]


def test_user_errors(tmp_path, tracks):
    folder = shardkit.write_folder(tmp_path / "s", tracks, sample_rate=RATE)
    with pytest.raises(ValueError, match="no manifest.json"):
        make_loader(tmp_path, num_workers=0)
    with pytest.raises(ValueError, match="no shards for split 'valid'; its splits are: train"):
        make_loader(folder, split="valid", num_workers=0)
    with pytest.raises(ValueError, match="mode="):
        make_loader(folder, mode="test", num_workers=0)
    with pytest.raises(ValueError, match="does not exist"):
        make_loader(str(tmp_path / "nope-{0..1}.tar"), num_workers=0)
    with pytest.raises(ValueError, match="sample rates"):
        make_loader(folder, sample_rate=16000, num_workers=0)
    with pytest.raises(TypeError):
        len(make_loader(folder, mode="eval", num_workers=0))


def test_reads_writer_output(tmp_path):
    # Plain imports: when our own writer or corpus breaks, this test must fail, not skip.
    from muser import synth
    from muser.config import ShardConfig
    from muser.shards import writer

    src = synth.make_corpus(tmp_path / "gtzan", layout="gtzan", n_per_class=2, seconds=2.0)
    dst = tmp_path / "shards"
    writer.write_shards(ShardConfig(src=str(src), dst=str(dst), source="gtzan", workers=1))
    split = next(s for s in ("train", "all", "valid", "test") if list(Path(dst).glob(f"{s}-*.tar")))
    batches = list(make_loader(dst, split=split, mode="eval", batch_size=4, num_workers=0))
    assert batches and all(b["audio"].abs().max() <= 1.0 for b in batches)
    assert "genre" in batches[0]["labels"]


def test_on_error_raise_stops_at_the_first_bad_member(tmp_path, tracks):
    folder = shardkit.write_folder(tmp_path / "s", tracks, sample_rate=RATE, corrupt={"track_0002"})
    skipping = make_loader(folder, mode="eval", num_workers=0)
    keys = {k for b in skipping for k in b["key"]}
    assert "track_0002" not in keys and len(keys) == 9 and skipping.errors == 1
    with pytest.raises(ShardReadError, match="track_0002"):
        list(make_loader(folder, mode="eval", num_workers=0, on_error="raise"))
    with pytest.raises(ShardReadError, match="track_0002"):  # the same from a worker process
        list(make_loader(folder, mode="eval", num_workers=1, on_error="raise"))
    with pytest.raises(ValueError, match="on_error"):
        make_loader(folder, on_error="ignore")


def test_a_folder_with_only_an_all_split_reads_without_naming_it(tmp_path, tracks):
    folder = shardkit.write_folder(tmp_path / "mine", tracks, sample_rate=RATE, split="all")
    other = shardkit.write_folder(
        tmp_path / "fma", shardkit.make_tracks(4, 1.0, RATE, seed=3), sample_rate=RATE
    )
    batches = list(make_loader([folder, other], steps=4, batch_size=4, num_workers=0, crop_seconds=0.5))
    assert len(batches) == 4  # train from fma/, all from mine/: mixed without --split
    with pytest.raises(ValueError, match="no shards for split 'train'; its splits are: all"):
        make_loader(folder, split="train", num_workers=0)
