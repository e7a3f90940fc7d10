"""manifest.json: atomic rewrites, clear errors for non-shard folders, vocabularies, verification."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from muser.shards import manifest as mf
from muser.shards.errorlog import ERRORS
from muser.shards.manifest import ShardFolder


def _folder(tmp_path):
    """A two-shard folder with a manifest that lists both (bytes are arbitrary: only hashes matter here)."""
    m = mf.new_manifest(16000, "flac", ["gtzan"], {"codec": "flac"})
    for i, data in enumerate([b"a" * 100, b"b" * 300]):
        name = mf.shard_name("train", i)
        (tmp_path / name).write_bytes(data)
        entry = {
            "name": name,
            "samples": 2,
            "seconds": 1.5,
            "sha256": mf.sha256_file(tmp_path / name),
            "bytes": len(data),
            "keys": [f"k{i}a", f"k{i}b"],
        }
        mf.add_shard(m, "train", entry)
    mf.write_manifest(tmp_path, m)
    return m


def test_round_trip_totals_and_keys(tmp_path):
    m = _folder(tmp_path)
    back = mf.read_manifest(tmp_path)
    assert back == m
    assert back["splits"]["train"]["samples"] == 4 and back["splits"]["train"]["seconds"] == 3.0
    assert mf.committed_keys(back) == {"k0a", "k0b", "k1a", "k1b"}
    urls = mf.ShardFolder.open(tmp_path).urls("train")
    assert [Path(u).name for u in urls] == ["train-000000.tar", "train-000001.tar"]
    with pytest.raises(ValueError, match="no shards for split 'test'"):
        mf.ShardFolder.open(tmp_path).urls("test")


def test_splits_keep_the_canonical_order(tmp_path):
    m = mf.new_manifest(16000, "pcm", ["x"], {})
    for split in ("all", "test", "train", "valid"):
        mf.add_shard(
            m,
            split,
            {"name": mf.shard_name(split, 0), "samples": 1, "seconds": 1.0, "sha256": "", "bytes": 0},
        )
    assert list(m["splits"]) == ["train", "valid", "test", "all"]


def test_a_failed_rewrite_leaves_the_previous_manifest_intact(tmp_path, monkeypatch):
    m = _folder(tmp_path)
    before = (tmp_path / mf.MANIFEST).read_bytes()

    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_rename)
    m["complete"] = True
    with pytest.raises(OSError, match="disk full"):
        mf.write_manifest(tmp_path, m)
    assert (tmp_path / mf.MANIFEST).read_bytes() == before
    assert not mf.read_manifest(tmp_path)["complete"]


def test_not_a_shard_folder_is_one_clear_sentence(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        mf.read_manifest(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"not a shard folder: manifest.json is missing .*muser shard"):
        mf.read_manifest(tmp_path)
    (tmp_path / mf.MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        mf.read_manifest(tmp_path)
    (tmp_path / mf.MANIFEST).write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a MUSER shard manifest"):
        mf.read_manifest(tmp_path)
    (tmp_path / mf.MANIFEST).write_text(json.dumps({"format_version": 99, "splits": {}}))
    with pytest.raises(ValueError, match="format_version 99.*upgrade"):
        mf.read_manifest(tmp_path)


def test_label_vocab_is_sorted_with_counts():
    counts = {"tags": Counter({"slow": 2, "guitar": 5}), "genre": Counter({"rock": 1, "blues": 3})}
    vocab = mf.label_vocab(counts, {"tags": "multi"})
    assert list(vocab) == ["genre", "tags"]
    assert vocab["tags"] == {
        "type": "multi",
        "classes": ["guitar", "slow"],
        "counts": {"guitar": 5, "slow": 2},
    }
    assert vocab["genre"]["type"] == "single" and vocab["genre"]["classes"] == ["blues", "rock"]


def test_verify_reports_every_kind_of_mismatch(tmp_path):
    _folder(tmp_path)
    assert mf.verify(tmp_path) == []
    (tmp_path / "train-000000.tar").write_bytes(b"x" * 100)  # same size, other bytes
    (tmp_path / "train-000001.tar").write_bytes(b"b" * 299)
    (tmp_path / "valid-000000.tar").write_bytes(b"stray")
    problems = {p["name"]: p["reason"] for p in mf.verify(tmp_path)}
    assert problems["train-000000.tar"].startswith("sha256")
    assert problems["train-000001.tar"] == "size 299 bytes, manifest says 300"
    assert problems["valid-000000.tar"] == "not listed in the manifest"
    (tmp_path / "train-000001.tar").unlink()
    assert {"name": "train-000001.tar", "reason": "missing"} in mf.verify(tmp_path)


def _kit_folder(tmp_path: Path, split: str = "train") -> Path:
    from tests.shards import shardkit

    return shardkit.write_folder(tmp_path / "s", shardkit.make_tracks(5, 1.0), split=split)


def test_shard_folder_answers_from_one_reading(tmp_path):
    root = _kit_folder(tmp_path)
    folder = ShardFolder.open(root)
    assert folder.kind == "folder" and folder.root == root and folder.has_manifest and folder.complete
    assert folder.splits == ["train"] and folder.samples("train") == 5 and folder.samples() == 5
    assert folder.seconds("train") == 5.0 and folder.sample_rate == 8000 and folder.codec == "flac"
    assert set(folder.labels) == {"genre", "tags"} and folder.labels["tags"]["type"] == "multi"
    assert folder.urls("train") == [str(root / "train-000000.tar"), str(root / "train-000001.tar")]
    assert folder.has("train") and not folder.has("valid") and folder.choose_split(None) == "train"
    assert folder.fingerprint() == mf.sha256_file(root / mf.MANIFEST)
    with pytest.raises(ValueError, match="no 'valid' samples"):
        folder.choose_split("valid")


def test_a_manifest_path_is_the_same_kit_folder(tmp_path):
    root = _kit_folder(tmp_path)
    by_path = ShardFolder.open(root / "manifest.json")
    assert by_path.kind == "manifest" and by_path.root == root
    assert by_path.urls("train") == ShardFolder.open(root).urls("train")


def test_a_url_pattern_has_no_manifest(tmp_path):
    root = _kit_folder(tmp_path)
    pattern = str(root / "train-{000000..000001}.tar")
    folder = ShardFolder.open(pattern, sample_rate=22050)
    assert folder.kind == "urls" and not folder.has_manifest and folder.root is None
    assert folder.urls() == folder.urls("anything") == [str(root / f"train-00000{i}.tar") for i in (0, 1)]
    assert folder.samples() is None and folder.labels == {} and folder.sample_rate == 22050
    assert (
        ShardFolder.open("https://example.org/shards/train-{000000..000003}.tar").urls()[3].endswith("3.tar")
    )
    with pytest.raises(ValueError, match="does not exist"):
        ShardFolder.open(str(root / "train-{000005..000006}.tar"))


def test_a_folder_without_a_train_split_trains_on_all(tmp_path):
    folder = ShardFolder.open(_kit_folder(tmp_path, split="all"))
    assert folder.splits == ["all"] and folder.choose_split(None) == "all"
    assert folder.choose_split("all") == "all"


def test_only_valid_and_test_needs_an_explicit_split(tmp_path):
    folder = ShardFolder.open(_kit_folder(tmp_path, split="valid"))
    with pytest.raises(ValueError, match="neither a 'train' nor an 'all' split.*--split"):
        folder.choose_split(None)


@pytest.mark.parametrize("version", [99, 0, "1", None, True])
def test_an_unknown_format_version_is_the_same_error_everywhere(tmp_path, version):
    from muser.shards.reader import make_loader
    from muser.train.data import TrainSources

    root = _kit_folder(tmp_path)
    m = json.loads((root / mf.MANIFEST).read_text())
    m["format_version"] = version
    (root / mf.MANIFEST).write_text(json.dumps(m))
    for open_it in (ShardFolder.open, mf.read_manifest, lambda r: make_loader(r, num_workers=0)):
        with pytest.raises(ValueError, match=rf"format_version {version!r}.*upgrade muser"):
            open_it(root)
    with pytest.raises(ValueError, match=rf"--shards .*format_version {version!r}"):
        TrainSources.open([str(root)], None)


@pytest.mark.parametrize("name", ["../elsewhere.tar", "/etc/passwd", "sub/train-000000.tar", "train-1.tar"])
def test_shard_names_outside_the_folder_are_refused(tmp_path, name):
    root = _kit_folder(tmp_path)
    m = json.loads((root / mf.MANIFEST).read_text())
    m["splits"]["train"]["shards"][0]["name"] = name
    (root / mf.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="refusing a manifest that points elsewhere"):
        ShardFolder.open(root)


def test_errors_survive_a_torn_last_line(tmp_path):
    root = _kit_folder(tmp_path)
    (root / ERRORS).write_text('{"id": "a", "reason": "no audio"}\n{"id": "b", "rea')
    assert ShardFolder.open(root).errors() == [{"id": "a", "reason": "no audio"}]
