"""The real-corpus report (benchmarks/real_corpus_lib.py) without the corpus: joining the results files of
separate processes keeps one value per (row, seed) and refuses mixed step budgets, the recipe table pairs
a row with PT at the same seeds, and recipe rows change only their own field."""

from __future__ import annotations

import json

import pytest

from benchmarks import common
from benchmarks import real_corpus_lib as lib
from muser.shards import manifest as mf

LOGISTIC, ZS = "probe-logistic@1/accuracy", "zeroshot/accuracy"


def _part(steps: int, runs: list[tuple[str, int, float, float]]) -> dict:
    """A results file: runs of (row, seed, logistic, zero-shot); a pt run brings random and ptft rows."""
    rows: dict = {}
    for row, seed, probe, zs in runs:
        rows.setdefault(row, {"per_seed": [], "pretrain_s": []})
        rows[row]["per_seed"].append({LOGISTIC: probe, ZS: zs})
        rows[row]["pretrain_s"].append(60.0 + seed)
        if row == "pt":
            rows.setdefault("random", {"per_seed": []})["per_seed"].append({LOGISTIC: 0.3 + seed / 100})
            rows.setdefault("ptft", {"per_seed": []})["per_seed"].append({"finetune@1/accuracy": zs})
    for row in rows.values():
        row["cells"], row["n"] = lib.summarise(row["per_seed"]), len(row["per_seed"])
    return {
        "setup": {"steps": steps, "text": ""},
        "rows": rows,
        "runs": [{"row": r, "seed": s, "pretrain": {"samples_per_s": 10.0}} for r, s, _, _ in runs],
    }


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSER_BENCH_RESULTS", str(tmp_path))

    def put(name: str, data: dict) -> None:
        (tmp_path / f"{name}.json").write_text(json.dumps(data))

    return put


def test_merge_keeps_one_value_per_row_and_seed(results):
    results("a", _part(800, [("pt", 0, 0.50, 0.30), ("pt", 1, 0.52, 0.34)]))
    # b reruns pt seed 0 (a determinism check, slightly different) and adds a recipe row at seed 0.
    results("b", _part(800, [("sigmoid", 0, 0.40, 0.20), ("pt", 0, 0.99, 0.99)]))
    out = lib.merge(["a", "b"], into="joined")
    assert out["rows"]["pt"]["cells"][LOGISTIC]["values"] == [0.50, 0.52]
    assert out["rows"]["pt"]["pretrain_s"] == [60.0, 61.0]
    assert out["rows"]["random"]["n"] == 2 and out["rows"]["ptft"]["n"] == 2
    assert out["rows"]["sigmoid"]["n"] == 1
    assert out["duplicates"] == [{"file": "b", "row": "pt", "seed": 0, "identical": False}]
    assert "pt seed 0 from b, values differ" in (common.results_dir() / "joined.md").read_text()
    assert [(r["row"], r["seed"]) for r in out["runs"]] == [("pt", 0), ("pt", 1), ("sigmoid", 0)]
    assert json.loads((common.results_dir() / "joined.json").read_text())["rows"]["pt"]["n"] == 2


def test_an_identical_rerun_is_recorded_as_such(results):
    results("a", _part(800, [("pt", 0, 0.50, 0.30)]))
    results("b", _part(800, [("pt", 0, 0.50, 0.30)]))
    out = lib.merge(["a", "b"], into="joined")
    assert out["duplicates"] == [{"file": "b", "row": "pt", "seed": 0, "identical": True}]
    assert out["rows"]["pt"]["n"] == 1


def test_a_merged_report_says_which_machine_ran_which_runs(results):
    """A file's "machine" is the machine that wrote it; runs joined from another machine keep their own,
    and the report names both (a file without per-run machines lends its runs the file's)."""
    amd = _part(800, [("pt", 0, 0.5, 0.3), ("pt", 1, 0.5, 0.3)])
    amd["machine"] = {"device": "cpu (AMD EPYC)"}
    intel = _part(800, [("nospec", 0, 0.4, 0.3)])
    intel["machine"] = {"device": "cpu (Intel Xeon)"}
    results("amd", amd)
    results("intel", intel)
    out = lib.merge(["amd", "intel"], into="joined")
    assert [r["machine"] for r in out["runs"]] == ["cpu (AMD EPYC)"] * 2 + ["cpu (Intel Xeon)"]
    text = (common.results_dir() / "joined.md").read_text()
    assert "cpu (AMD EPYC): pt seeds [0, 1]; cpu (Intel Xeon): nospec seeds [0]." in text
    assert "Written by a merge on: " in text and "\nMachine: " not in text
    # Processes that ran side by side: the report gives the longest one, not a "whole run" it never timed.
    assert "Longest of the merged processes: " in text and "Whole run so far" not in text
    # Re-merging the joined file keeps each run's machine, not the machine doing the merge.
    again = lib.merge(["joined"], into="again")
    assert [r["machine"] for r in again["runs"]] == [r["machine"] for r in out["runs"]]
    # A rerun of a seed on the other machine is listed with that machine.
    rerun = _part(800, [("pt", 0, 0.45, 0.35)]) | {"machine": {"device": "cpu (Intel Xeon)"}}
    results("rerun", rerun)
    lib.merge(["amd", "intel", "rerun"], into="reruns")
    assert (
        "pt seed 0 from rerun (run on cpu (Intel Xeon)), values differ"
        in (common.results_dir() / "reruns.md").read_text()
    )
    results("amd2", _part(800, [("sigmoid", 0, 0.4, 0.3)]) | {"machine": {"device": "cpu (AMD EPYC)"}})
    assert "Runs by machine" not in lib.markdown(lib.merge(["amd", "amd2"], into="one"))


def test_merge_refuses_different_budgets(results):
    results("a", _part(800, [("pt", 0, 0.5, 0.3)]))
    results("c", _part(2000, [("pt", 1, 0.5, 0.3)]))
    with pytest.raises(ValueError, match="different budgets or recipes"):
        lib.merge(["a", "c"], into="joined")


def test_merge_refuses_probes_of_different_features_and_the_report_says_which(results):
    old = _part(800, [("pt", 0, 0.5, 0.3)])  # written before the probes read the towers: no field
    towers = _part(800, [("pt", 1, 0.6, 0.3)])
    towers["setup"]["probe_features"] = "towers"
    towers["rows"]["pt"]["per_seed"][0][f"{lib.EMBEDDING_PROBE}@1/accuracy"] = 0.55
    towers["rows"]["pt"]["cells"] = lib.summarise(towers["rows"]["pt"]["per_seed"])
    results("old", old)
    results("towers", towers)
    with pytest.raises(ValueError, match="probe_features"):
        lib.merge(["old", "towers"], into="joined")
    assert "read both audio towers" in lib.markdown(towers) and "logistic on the embedding" in lib.markdown(
        towers
    )
    # The embedding-probe column shows only where some row has it.
    assert "read the shared text-audio embedding" in lib.markdown(old)
    assert "logistic on the embedding" not in "\n".join(lib.table(old["rows"]))


def test_merge_refuses_different_caption_templates_and_the_report_says_which(results):
    old = _part(800, [("pt", 0, 0.5, 0.3)])  # written before the captions were recorded: built-in templates
    new = _part(800, [("pt", 1, 0.6, 0.3)])
    new["setup"]["captions"] = "d1b6706f"  # the genre-rich templates tried on 2026-12-04
    results("old", old)
    results("new", new)
    with pytest.raises(ValueError, match="captions"):
        lib.merge(["old", "new"], into="joined")
    # Changing the templates means saying in words what changed: the current fingerprint must be described.
    assert lib.captions_id() in lib.CAPTION_WORDS
    assert "built-in templates" in lib.markdown(old) and "four genre-only" in lib.markdown(new)
    assert lib.setup_value(old, "captions") == lib.captions_id()


def test_the_recipe_table_pairs_rows_with_pt_at_the_same_seeds(results):
    results("a", _part(800, [("pt", 0, 0.50, 0.30), ("pt", 1, 0.60, 0.40), ("pt", 2, 0.55, 0.35)]))
    results("b", _part(800, [("nodrop", 2, 0.45, 0.45), ("nodrop", 1, 0.62, 0.50)]))
    out = lib.merge(["a", "b"], into="joined")
    assert lib.paired_vs_pt(out, "nodrop", LOGISTIC) == "-4.0 ± 6.0 (seeds [1, 2])"
    assert lib.paired_vs_pt(out, "nodrop", ZS) == "+10.0 ± 0.0 (seeds [1, 2])"
    table = "\n".join(lib.recipe_table(out))
    assert "PT, no field dropout (0.2 -> 0)" in table and "-4.0 ± 6.0 (seeds [1, 2])" in table
    assert "## The recipe study" in (common.results_dir() / "joined.md").read_text()


def test_the_reading_pairs_rows_of_different_seed_counts_at_the_seeds_both_ran(results):
    # PT gained seeds 3-5 in a later batch; w/o spec has 0-2 (in another order): the reading still pairs.
    results("a", _part(800, [("pt", s, 0.50 + s / 100, 0.40) for s in range(3)]))
    results("b", _part(800, [("nospec", s, 0.40, 0.30) for s in (2, 0, 1)]))
    results("c", _part(800, [("pt", s, 0.70, 0.50) for s in (3, 4, 5)]))
    out = lib.merge(["a", "b", "c"], into="joined")
    words = lib.reading(out)
    # seeds 0, 1, 2: +10, +11, +12 points; PT's seeds 3-5 (70 %) would push the mean up if they counted
    assert (
        "(PT vs w/o spec): +11.0 ± 0.8 points, ahead in 3 of 3 seeds (the seeds both ran: [0, 1, 2])" in words
    )
    assert "pretraining over the same network with random weights: " in words  # PT and random: all six seeds
    assert "ahead in 6 of 6 seeds." in words
    assert "PT+FT: +0.0 ± 0.0 points, ahead in 0 of 6 seeds" in words
    assert words in (common.results_dir() / "joined.md").read_text()


def test_recipe_rows_are_pt_with_one_choice_changed():
    pt = next(v for v in lib.VARIANTS if v.key == "pt")
    for row in lib.RECIPE:
        assert (row.loss_terms, row.audio_embedding) == (pt.loss_terms, pt.audio_embedding)
        # The one choice may be the text tower (MiniLM, locked), never a text encoder other than MiniLM.
        assert row.text_encoder in (pt.text_encoder, str(lib.MINILM)), row.key
        changed = len(row.model) + len(row.data) + len(row.train) + (row.text_encoder != pt.text_encoder)
        assert changed >= 1, row.key
    keys = [v.key for v in lib.VARIANTS]
    assert len(keys) == len(set(keys))


def test_a_shard_cache_counts_only_when_its_manifest_says_complete(tmp_path):
    """The writer saves a manifest when it starts: a folder an interrupted sharding left behind must be
    sharded again (resumed), not pretrained on with its music missing."""
    folder = tmp_path / "soundtracks-0123"
    assert not lib.shards_complete(folder)
    folder.mkdir()
    manifest = mf.new_manifest(16000, "flac", [str(tmp_path / "music")], {})
    mf.write_manifest(folder, manifest)
    assert not lib.shards_complete(folder)
    mf.write_manifest(folder, manifest | {"complete": True})
    assert lib.shards_complete(folder)
    # A torn or hand-edited manifest is refused with the folder's name and the fix, not raw JSON.
    (folder / "manifest.json").write_text('{"complete": tru')
    with pytest.raises(ValueError, match="soundtracks-0123.*--overwrite"):
        lib.shards_complete(folder)


def test_a_run_stopped_before_its_budget_is_not_recorded():
    """SIGTERM makes the trainer save and return normally: the benchmark must not evaluate that model as a
    full-budget row (killed runs at step ~570 of 2,000 had been written as 2,000-step rows)."""
    lib.check_pretrained({"steps": 2000, "stopped": None}, 2000, "pt-s0")
    with pytest.raises(RuntimeError, match="pt-s1: pretraining ran 568 of 2000 steps .stopped: SIGTERM"):
        lib.check_pretrained({"steps": 568, "stopped": "SIGTERM"}, 2000, "pt-s1")
    with pytest.raises(RuntimeError, match="ran 1999 of 2000"):
        lib.check_pretrained({"steps": 1999}, 2000, "pt-s2")


def test_the_target_section_measures_each_tried_row_against_mfcc_plus_ten(results):
    part = _part(2000, [("pt", 0, 0.58, 0.44), ("pt", 1, 0.60, 0.46), ("minilmlocked", 0, 0.62, 0.52)])
    part["rows"]["mfcc"] = {"per_seed": [{LOGISTIC: 0.5}], "n": 1}
    part["rows"]["mfcc"]["cells"] = lib.summarise(part["rows"]["mfcc"]["per_seed"])
    results("a", part)
    lib.merge(["a"], into="joined")
    lines = lib.target_lines(common.read_result("joined")["rows"])
    assert "= 60.0 %" in lines[0]
    assert "| PT: L(A,T)+L(S,T) | 2 | -1.0 | -5.0 | no |" in lines
    assert "| PT, MiniLM-L6 text encoder locked (LiT) | 1 | +2.0 | +2.0 | yes |" in lines
    assert (common.results_dir() / "joined_tried.png").stat().st_size > 0
    assert "![What was tried](joined_tried.png)" in (common.results_dir() / "joined.md").read_text()


def test_no_target_curve_without_mfcc_and_a_stale_one_is_removed(results):
    (common.results_dir() / "joined_tried.png").write_bytes(b"stale")
    results("a", _part(2000, [("pt", 0, 0.58, 0.44)]))
    out = lib.merge(["a"], into="joined")
    assert lib.target_lines(out["rows"]) == []
    assert not (common.results_dir() / "joined_tried.png").exists()
    assert "## The target" not in (common.results_dir() / "joined.md").read_text()


def test_merge_refuses_runs_with_and_without_specaugment_in_the_base_recipe(results):
    old = _part(2000, [("pt", 0, 0.5, 0.3)])  # written before the field: SpecAugment was on
    new = _part(2000, [("pt", 1, 0.6, 0.4)])
    new["setup"]["specaugment"] = False
    results("old", old)
    results("new", new)
    with pytest.raises(ValueError, match="specaugment"):
        lib.merge(["old", "new"], into="joined")
    assert "SpecAugment on in the base recipe" in lib.markdown(old)
    assert "SpecAugment off in the base recipe" in lib.markdown(new)
