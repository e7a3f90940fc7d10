"""The benchmark harness (benchmarks/common.py, benchmarks/conftest.py) and README's benchmark tables: a
missed target fails naming it, a loaded machine skips with the reason, a recorder named like a test fails,
results files hold one code version, and README's tables are what benchmarks/results says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import common, report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MUSER_BENCH_RESULTS", str(tmp_path))
    monkeypatch.delenv(common.SMOKE_ENV, raising=False)
    monkeypatch.setattr(common, "code_version", lambda: "v1")
    return tmp_path


def _rows(results: Path, bench: str = "b") -> dict:
    return json.loads((results / f"{bench}.json").read_text())["rows"]


def test_the_readme_tables_are_rendered_from_the_results_files():
    text = (ROOT / "README.md").read_text()
    assert "<!-- bench:targets -->" in text and "<!-- bench:timing -->" in text
    assert report.render(text, report.load()) == text, "README is stale: run python -m benchmarks.report"


def test_a_missed_target_fails_naming_it_and_the_row_says_failed(results):
    with pytest.raises(AssertionError, match="target missed: speed-up = 1.2 \\(needs >= 1.8\\)"):
        with common.entry("b", "r") as row:
            assert _rows(results)["r"]["status"] == "did not finish"  # written before the work
            row.target("speed-up", 1.2, at_least=1.8)
            row.target("memory", 0.3, at_most=0.5)
    row = _rows(results)["r"]
    assert row["status"] == "failed"
    assert [t["outcome"] for t in row["targets"]] == ["failed", "passed"]
    assert row["machine"]["cpu_count"] == os.cpu_count()


def test_a_row_that_judges_nothing_fails_unless_measure_only(results):
    with pytest.raises(AssertionError, match="judged no target"):
        with common.entry("b", "recorder"):
            pass
    with common.entry("b", "numbers", measure_only=True) as row:
        row["x"] = 1
        with pytest.raises(RuntimeError, match="measure-only"):
            row.target("anything", 1.0, above=0.0)
    rows = _rows(results)
    assert rows["recorder"]["status"].startswith("error") and rows["numbers"]["status"] == "measured"


def test_a_broken_benchmark_leaves_an_error_row(results):
    with pytest.raises(ZeroDivisionError):
        with common.entry("b", "r"):
            1 / 0  # noqa: B018
    assert _rows(results)["r"]["status"].startswith("error: ZeroDivisionError")


def test_a_loaded_machine_skips_with_the_reason(results, monkeypatch):
    monkeypatch.setattr(common, "capacity", lambda: 1.1)
    monkeypatch.setattr(common, "busy_cores", lambda: 1.5)
    with pytest.raises(pytest.skip.Exception, match="too loaded.*keep 1.50 cores busy.*capacity 1.1"):
        with common.entry("b", "r") as row:
            common.quiet(row, common.TWO_CORES)
            raise AssertionError("the comparison ran on a loaded machine")
    row = _rows(results)["r"]
    assert row["status"].startswith("skipped: machine too loaded") and row["targets"] == []
    assert common.VERDICTS[-1].outcome == "skipped"


def test_load_rising_during_the_run_skips(results, monkeypatch):
    caps = iter([1.95, 1.2])
    monkeypatch.setattr(common, "capacity", lambda: next(caps))
    monkeypatch.setattr(common, "busy_cores", lambda: 0.1)
    with pytest.raises(pytest.skip.Exception, match="became loaded during the run"):
        with common.entry("b", "r") as row:
            common.quiet(row, common.TWO_CORES)
            common.still_quiet(row, common.TWO_CORES)


def test_a_new_code_version_replaces_the_file(results, monkeypatch):
    with common.entry("b", "old", measure_only=True):
        pass
    monkeypatch.setattr(common, "code_version", lambda: "v2")
    with common.entry("b", "new", measure_only=True):
        pass
    data = json.loads((results / "b.json").read_text())
    assert data["code_version"] == "v2" and list(data["rows"]) == ["new"]


def test_the_code_version_is_the_last_commit_of_the_code(tmp_path, monkeypatch):
    """Committing README or results keeps the version (rows measured before still count); a change to
    muser/ or benchmarks/ is a new version, dirty before its commit."""

    def git(*args: str) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
        env["GIT_COMMITTER_EMAIL"] = "t@t"
        done = subprocess.run(["git", *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def version() -> str:
        return common.code_version.__wrapped__()  # not the per-process cache

    monkeypatch.setattr(common, "ROOT", tmp_path)
    git("init", "-q")
    for name in ("muser/a.py", "benchmarks/results/x.json", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1\n")
    git("add", "-A")
    git("commit", "-qm", "code")
    first = version()
    assert first == git("rev-parse", "--short=12", "HEAD")
    for name in ("README.md", "benchmarks/results/x.json"):
        (tmp_path / name).write_text("2\n")
        git("commit", "-qam", "not code")
        assert version() == first
    (tmp_path / "muser/a.py").write_text("2\n")
    dirty = version()
    assert dirty.startswith(first + "+dirty.")
    git("commit", "-qam", "code again")
    assert version() == git("rev-parse", "--short=12", "HEAD") != first


def test_a_smoke_run_judges_nothing(results, monkeypatch):
    monkeypatch.setenv(common.SMOKE_ENV, "1")
    with common.entry("b", "r") as row:
        row.target("speed-up", 0.1, at_least=1.8)
    row = _rows(results)["r"]
    assert row["status"] == "smoke run (targets not judged)"
    assert row["targets"][0]["outcome"] == "not judged (smoke run)"
    assert common.sized(100, 3) == 3


def test_busy_cores_sees_a_busy_core():
    """A child process spinning for the whole sample shows as (at least most of) one busy core."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert common.busy_cores(1.0) >= 0.7
    finally:
        spinner.kill()
        spinner.wait()


def test_alternate_interleaves_the_sides_and_reports_min_median_spread():
    calls: list[str] = []
    t = common.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up each, then a, b, a, b, a, b
    assert len(t["a"].seconds) == 3
    timing = common.Timing([1.0, 2.0, 4.0])
    assert (timing.min, timing.median, timing.spread) == (1.0, 2.0, 1.5)
    both = {"fast": common.Timing([1.0, 1.0]), "slow": common.Timing([2.0, 3.0])}
    assert common.speedup(both, "fast", "slow") == {"median": 2.5, "min": 2.0}


def test_the_render_shows_verdicts_and_valid_timings_only(results):
    with common.entry("b", "ok") as row:
        row["timing"] = common.timings({"x": common.Timing([1.0, 3.0])})
        row.target("ratio", 2.0, at_least=1.5)
    with pytest.raises(pytest.skip.Exception):
        with common.entry("b", "loaded") as row:
            row["timing"] = common.timings({"y": common.Timing([9.0])})
            row.skip("too loaded")
    files = report.load(results)
    targets, timing = report.targets_table(files), report.timing_table(files)
    assert "| b / ok | ratio | 2 | >= 1.5 | passed | v1," in targets
    assert "| b / loaded | | | | skipped: too loaded |" in targets
    assert "| b / ok | x | 2 | 1 | 1.00 | 2 | passed |" in timing and "b / loaded" not in timing
    # A row joined from another code version (GPU rows of one lease beside CPU rows) shows its own.
    files["b"]["rows"]["ok"]["code_version"] = "gpu1"
    assert "| b / ok | ratio | 2 | >= 1.5 | passed | gpu1," in report.targets_table(files)


CONFTEST = "from benchmarks.conftest import *  # noqa: F403\n"
BENCH = """
import pytest
from benchmarks.common import entry

def test_records_numbers_only():
    entry_row = {"x": 1}

@pytest.mark.measure_only
def test_measure_numbers():
    with entry("b", "m", measure_only=True) as row:
        row["x"] = 1

def test_judges_a_target():
    with entry("b", "t") as row:
        row.target("t", 2.0, at_least=1.0)

@pytest.mark.scale
def test_hour_long():
    raise AssertionError("ran without --scale")
"""


def test_conftest_fails_a_recorder_named_like_a_test_and_gates_the_scale_tier(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "conftest.py").write_text(CONFTEST)
    (bench / "test_x.py").write_text(BENCH)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUSER_BENCH_RESULTS": str(tmp_path / "out")}
    env.pop(common.SMOKE_ENV, None)
    (tmp_path / "cwd").mkdir()  # not tmp_path: there `import benchmarks` would find the folder above
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(bench)],
        cwd=tmp_path / "cwd",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert "1 failed, 2 passed, 1 skipped" in out, out
    assert "test_records_numbers_only: this benchmark passed without judging a target" in out
    assert "scale tier" in out and "PASSED   t: 2 (target >= 1)" in out
