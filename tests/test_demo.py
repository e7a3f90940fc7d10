"""End-to-end smoke test of `muser demo`: the CLI entry point in-process, a tiny corpus, a few steps."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from muser import demo
from muser.cli import main

TINY = demo.DemoSize(n_per_class=5, seconds=4.0, steps=12, batch_size=12, seeds=1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One complete tiny demo run through the CLI, shared by the tests below."""
    out = tmp_path_factory.mktemp("demo")
    demo_sizes = (demo.FULL, demo.QUICK)
    demo.QUICK = TINY  # the CLI's --quick picks this preset
    try:
        result = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)])
    finally:
        demo.FULL, demo.QUICK = demo_sizes
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_runs_the_whole_loop(finished):
    out, output = finished
    summary = json.loads((out / "demo.json").read_text())
    for name in ("results.json", "confusion.png", "fewshot.png"):
        assert (out / "eval" / name).stat().st_size > 0
    assert (out / "run" / "model" / "model.safetensors").is_file()
    # every protocol of the demo is reported for the trained model and both baselines
    keys = set(summary["eval"])
    assert {"muser zeroshot accuracy", "muser probe-logistic accuracy", "random zeroshot accuracy"} <= keys
    assert "mfcc probe-logistic accuracy" in keys
    assert all(0.0 <= v <= 1.0 for v in summary["eval"].values())
    assert summary["pretrain"]["steps"] == TINY.steps
    assert "The same on real data" in output and "muser shard fma_small/" in output
    assert "get-real-corpus.sh" in output and "--probe logistic,marble" in output
    # it ends with the corpus as a catalogue, one text search over it and the command to serve it
    assert (out / "catalogue" / "index.faiss").is_file() and len(summary["search"]["results"]) == 5
    assert "muser serve" in output


def test_demo_does_what_it_says(finished):
    """What the demo prints: pretraining on the train split lowers the loss; the report is on held-out
    test tracks; every track of the corpus is in the catalogue; the search lists its best matches first."""
    from muser.shards.manifest import ShardFolder

    out, output = finished
    summary = json.loads((out / "demo.json").read_text())
    shards = ShardFolder.open(out / "shards")
    pre = summary["pretrain"]
    assert pre["last_loss"] < pre["first_loss"], pre  # "pretraining loss a -> b over N steps"
    assert f"{pre['first_loss']:.3f} -> {pre['last_loss']:.3f}" in output
    # trained on the train split only (a corpus with a train split never falls back to `all`)
    assert "training on its 'all' split" not in output and shards.samples("train") > 0
    # "held-out test tracks": the one fold is the shards' own split, scored on every test track
    report = json.loads((out / "eval" / "results.json").read_text())
    (fold,) = report["counts"]["folds"]
    assert fold["test"] == shards.samples("test") > 0 and fold["train"] == shards.samples("train")
    assert not set(shards.keys("test")) & set(shards.keys("train"))
    # "what text supervision bought": each number of the table is the report's, for all three models
    rows = {f"{r['model']} {r['protocol']} {r['metric']}": r["mean"] for r in report["results"]}
    assert summary["eval"] == {k: v for k, v in rows.items() if k in summary["eval"]} and summary["eval"]
    # "the corpus as a searchable catalogue": every track once, and the hits best first
    import pandas as pd

    table = pd.read_parquet(out / "catalogue" / "embeddings.parquet")
    assert len(table) == shards.samples() and table["key"].is_unique
    scores = [h["score"] for h in summary["search"]["results"]]
    assert scores == sorted(scores, reverse=True)
    assert {h["key"] for h in summary["search"]["results"]} <= set(table["key"])


def test_second_run_reuses_the_finished_run(finished):
    out, _ = finished
    before = (out / "run" / "model" / "model.safetensors").stat().st_mtime_ns
    summary = demo.run_demo(out, size=TINY)
    assert (out / "run" / "model" / "model.safetensors").stat().st_mtime_ns == before
    assert summary["pretrain"]["steps"] == TINY.steps


def test_an_interrupted_run_is_resumed_not_reused(finished, monkeypatch):
    out, _ = finished
    result = json.loads((out / "run" / "result.json").read_text())
    (out / "run" / "result.json").write_text(json.dumps({**result, "stopped": "SIGINT"}))
    calls = []

    def fake_pretrain(data, model, train):
        calls.append(train.resume)
        return {**result, "stopped": "SIGTERM", "steps": 3}

    monkeypatch.setattr("muser.train.pretrain", fake_pretrain)
    with pytest.raises(demo.DemoInterrupted, match="run the same command again"):
        demo.run_demo(out, size=TINY)
    assert calls == [True]  # resumed from last.pt instead of evaluating a half-trained model
