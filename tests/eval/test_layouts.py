"""`muser eval` on raw datasets in the other real layouts: GTZAN with fault-filtered split lists (found or
given), MagnaTagATune (multi-label: macro ROC-AUC / PR-AUC) and FMA (top genres)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from muser.cli import main
from muser.config import EvalConfig
from muser.eval.runner import run_eval


@pytest.fixture(scope="module")
def gtzan_lists(tmp_path_factory) -> Path:
    from muser.synth import make_corpus

    root = tmp_path_factory.mktemp("data") / "gtzan"
    return make_corpus(root, layout="gtzan", n_per_class=3, seconds=2.0, split_lists=True)


def _valid(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


def test_gtzan_split_lists_in_the_data_root_give_the_standard_split(gtzan_lists, tmp_path):
    console = Console(record=True, width=200)
    cfg = EvalConfig(
        task="gtzan", data=str(gtzan_lists), protocol="zeroshot", seeds=1, output=str(tmp_path / "out")
    )
    result = run_eval(cfg, console)
    assert "fault-filtered split lists" in console.export_text()  # says which lists it picked up
    assert result["split_scheme"] == "standard"
    assert result["data"]["split_dir"] == str(gtzan_lists.resolve()) and result["data"]["split_dir_found"]
    (fold,) = result["counts"]["folds"]
    assert fold["train"] and fold["valid"] and fold["test"]
    # make_corpus leaves the last clip of the first genre out of every list: it is excluded and named.
    assert result["counts"]["tracks"] == 6 * 3 - 1
    assert [e["reason"] for e in result["excluded"]] == ["in no fault-filtered split list"]
    assert result["excluded"][0]["key"].endswith(".00002.au")

    # Other lists via --split-dir: a different sharding in the cache (the lists are part of its key).
    other = tmp_path / "lists"
    other.mkdir()
    for name in ("train_filtered.txt", "valid_filtered.txt"):
        shutil.copy(gtzan_lists / name, other / name)
    test_lines = (gtzan_lists / "test_filtered.txt").read_text().splitlines()
    (other / "test_filtered.txt").write_text("".join(f"{x}\n" for x in test_lines[1:]))
    out = tmp_path / "given"
    args = ["eval", "gtzan", "--data", str(gtzan_lists), "--protocol", "zeroshot", "--output", str(out)]
    extra = ["--split-dir", str(other), "--cache-dir", str(tmp_path / ".muser_cache")]
    res = CliRunner().invoke(main, [*args, *extra, "--seed", "3", "--finetune-lr", "5e-5"])
    assert res.exit_code == 0, res.output
    given = json.loads((out / "results.json").read_text())
    assert given["split_scheme"] == "standard" and not given["data"]["split_dir_found"]
    assert given["config"]["seed"] == 3 and given["config"]["finetune_lr"] == 5e-5
    assert given["counts"]["tracks"] == result["counts"]["tracks"] - 1
    assert given["counts"]["folds"][0]["test"] == fold["test"] - 1
    assert len(list((tmp_path / ".muser_cache" / "shards").iterdir())) == 2


def test_split_dir_misuse_is_one_clear_sentence(gtzan_lists, tmp_path):
    runner = CliRunner()
    base = ["eval", "--split-dir", str(gtzan_lists), "--output", str(tmp_path / "o")]
    res = runner.invoke(main, [*base, "mtt", "--data", str(gtzan_lists)])
    assert res.exit_code == 2 and "--split-dir only applies to the gtzan task" in res.output
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "manifest.json").write_text("{}")
    res = runner.invoke(main, [*base, "gtzan", "--data", str(sharded)])
    assert res.exit_code == 2 and "already sharded" in res.output and "Traceback" not in res.output


def test_mtt_multilabel_end_to_end(tmp_path):
    from muser.synth import make_corpus

    data = make_corpus(tmp_path / "mtt", layout="mtt", n_per_class=4, seconds=3.0)
    out = tmp_path / "out"
    cfg = EvalConfig(
        task="mtt", data=str(data), protocol="probe,zeroshot,retrieval", seeds=1, output=str(out)
    )
    result = run_eval(cfg)
    assert result["type"] == "multi" and result["label_task"] == "tags" and len(result["classes"]) > 2
    assert result["split_scheme"] == "standard"  # MTT's split by folder
    for protocol in ("probe-logistic", "probe-mlp", "zeroshot"):
        for metric in ("roc_auc", "pr_auc"):
            rows = [r for r in result["results"] if (r["protocol"], r["metric"]) == (protocol, metric)]
            assert len(rows) == 1 and all(_valid(v) for v in rows[0]["values"]), (protocol, metric, rows)
    assert not any(r["metric"] == "accuracy" for r in result["results"])
    assert _valid(next(r for r in result["results"] if r["metric"] == "mAP")["mean"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["results"] == result["results"]
    assert (out / "confusion.png").stat().st_size > 1000 and (out / "fewshot.png").stat().st_size > 1000


def test_fma_end_to_end(tmp_path):
    from muser.synth import make_corpus

    data = make_corpus(tmp_path / "fma", layout="fma", n_per_class=3, seconds=2.0)
    out = tmp_path / "out"
    result = run_eval(EvalConfig(task="fma", data=str(data), protocol="zeroshot", output=str(out)))
    assert result["label_task"] == "genre_top" and result["type"] == "single"
    assert 2 <= len(result["classes"]) <= 8 and result["split_scheme"] == "standard"  # tracks.csv split
    (row,) = result["results"]
    assert row["metric"] == "accuracy" and _valid(row["mean"])
    assert (out / "results.json").is_file() and (out / "confusion.png").is_file()
