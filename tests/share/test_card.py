"""The model card holds the run's own numbers (manifest tracks and hours, steps, losses, parameters, the
eval table) under front matter the hub parses, and leaves out what the run does not know."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from huggingface_hub import ModelCard

from muser.cli import main
from muser.models.muser import MUSER
from muser.share.card import parameter_counts
from muser.share.push import make_card


def test_card_shows_the_runs_real_numbers(trained_run, share_shards):
    res = CliRunner().invoke(main, ["card", str(trained_run), "--license", "cc-by-4.0"])
    assert res.exit_code == 0, res.output
    card = (trained_run / "model" / "README.md").read_text()
    meta = ModelCard(card).data.to_dict()
    assert meta["library_name"] == "muser" and meta["license"] == "cc-by-4.0"
    assert meta["pipeline_tag"] == "feature-extraction" and "muser" in meta["tags"]
    assert "datasets" not in meta  # no hub dataset id was given: none is invented

    manifest = json.loads((share_shards / "manifest.json").read_text())
    split = "train" if "train" in manifest["splits"] else "all"
    body = manifest["splits"][split]
    assert f"| {share_shards} | gtzan | {split} | {body['samples']} | {body['seconds'] / 3600:.2f} |" in card
    result = json.loads((trained_run / "result.json").read_text())
    assert f"steps: {result['steps']}" in card and "global batch: 8" in card
    assert f"{result['first_loss']:.4f} (first step) -> {result['last_loss']:.4f} (last step)" in card
    last = json.loads((trained_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"loss_at {last['loss_at']:.4g}" in card and "hardware: CPU, world size 1" in card
    total = sum(p.numel() for p in MUSER.from_pretrained(trained_run / "model").state_dict().values())
    assert parameter_counts(trained_run / "model" / "model.safetensors")["total"] == total
    assert f"| parameters | {total:,} (" in card

    evaluated = json.loads((trained_run / "eval" / "results.json").read_text())
    row = evaluated["results"][0]
    assert "## Evaluation" in card and f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}" in card


def test_a_bare_model_folder_card_has_no_training_section(tmp_path):
    folder = MUSER.from_preset("tiny").save_pretrained(tmp_path / "m")
    _, card = make_card(str(folder), repo_id="org/m", datasets=["org/my-data"])
    assert "## Training" not in card and "## Evaluation" not in card and "license" not in card
    assert ModelCard(card).data.to_dict()["datasets"] == ["org/my-data"]


def test_eval_of_another_checkpoint_is_refused(trained_run, tmp_path):
    other = json.loads((trained_run / "eval" / "results.json").read_text())
    other["checkpoint"]["path"] = str(tmp_path / "elsewhere")
    (tmp_path / "results.json").write_text(json.dumps(other))
    res = CliRunner().invoke(main, ["card", str(trained_run), "--eval", str(tmp_path / "results.json")])
    assert res.exit_code == 2 and "not this model" in res.output


@pytest.mark.parametrize("repo", ["org/name@main", "not an id"])
def test_push_names_a_wrong_repo_id(trained_run, repo):
    res = CliRunner().invoke(main, ["push", str(trained_run), repo])
    assert res.exit_code == 2 and "is not a hub repository id" in res.output
