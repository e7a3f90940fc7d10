"""A user's own music, end to end from the CLI on real files: shard a plain folder (its only split is
`all`), pretrain a few steps and evaluate, never naming a split."""

from __future__ import annotations

import json

from click.testing import CliRunner

from muser.cli import main


def test_shard_pretrain_eval_a_real_folder_without_naming_a_split(real_audio_dir, tmp_path):
    runner = CliRunner()
    shards, run, out = tmp_path / "shards", tmp_path / "run", tmp_path / "eval"
    done = runner.invoke(main, ["shard", str(real_audio_dir / "music"), str(shards), "--workers", "1", "-q"])
    assert done.exit_code == 0, done.output
    assert json.loads((shards / "manifest.json").read_text())["splits"].keys() == {"all"}

    args = ["pretrain", "--shards", str(shards), "--output", str(run), "--steps", "3", "--batch-size", "4"]
    done = runner.invoke(main, [*args, "--crop-seconds", "2", "--workers", "0", "--warmup", "1"])
    assert done.exit_code == 0, done.output
    assert "has no 'train' split: training on its 'all' split" in done.output  # the one-line note
    result = json.loads(done.output.strip().splitlines()[-1])
    assert result["steps"] == 3 and result["last_loss"] == result["last_loss"]  # finite, not NaN
    assert (run / "model" / "model.safetensors").is_file()

    args = ["eval", "shards", "--data", str(shards), "--checkpoint", str(run), "--output", str(out)]
    done = runner.invoke(main, [*args, "--protocol", "zeroshot,retrieval", "--folds", "2", "--seeds", "1"])
    assert done.exit_code == 0, done.output
    report = json.loads((out / "results.json").read_text())
    assert report["split_scheme"] == "2-fold stratified" and report["counts"]["tracks"] >= 2
    assert {r["protocol"] for r in report["results"]} == {"zeroshot", "retrieval"}
