"""The benchmark tiers and their rules, for `pytest benchmarks`.

- `--scale` (or `-m scale`): also run the hour-long cases marked `scale`; without it they skip, saying so.
- `--smoke` (or MUSER_BENCH_SMOKE=1): every benchmark at a reduced size, no load gate, results in a
  temporary folder: shows that each benchmark runs, judges nothing.
- A benchmark either judges a target through `benchmarks.common.entry(...).target(...)`, or is marked
  `measure_only` and says so in its name (`test_measure_...`); one that passes having judged no target
  fails here. The session ends with one verdict line per target.
"""

from __future__ import annotations

import os

import pytest

from benchmarks import common


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("muser benchmarks")
    group.addoption("--scale", action="store_true", help="also run the hour-long `scale` benchmarks")
    group.addoption(
        "--smoke", action="store_true", help="reduced sizes, no load gate, results in a temporary folder"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scale: hour-long benchmark case, run with --scale or -m scale")
    config.addinivalue_line("markers", "measure_only: a benchmark that records numbers and judges no target")
    if config.getoption("--smoke", default=False):
        os.environ[common.SMOKE_ENV] = "1"  # read by the benchmark modules as they are imported


def _scale_selected(config: pytest.Config) -> bool:
    expr = config.getoption("markexpr", default="") or ""
    return bool(config.getoption("--scale", default=False)) or ("scale" in expr and "not scale" not in expr)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_scale = _scale_selected(config)
    for item in items:
        if "benchmarks" not in item.path.parts:
            continue
        if item.get_closest_marker("scale") and not run_scale:
            item.add_marker(pytest.mark.skip(reason="scale tier (an hour or more): run with --scale"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or "benchmarks" not in item.path.parts or not report.passed:
        return
    marked = item.get_closest_marker("measure_only") is not None
    problem = None
    if ("measure" in item.name) != marked:
        problem = (
            "a measure-only benchmark is marked `measure_only` and named test_measure_...; this one has "
            + ("the name without the marker" if not marked else "the marker without the name")
        )
    elif not marked and not any(v.test == item.nodeid for v in common.VERDICTS):
        problem = (
            "this benchmark passed without judging a target: judge one with benchmarks.common.entry(...)"
            ".target(...) or mark it measure_only and name it test_measure_..."
        )
    if problem:
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid}: {problem}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not common.VERDICTS:
        return
    tr = terminalreporter
    tr.section("benchmark targets")
    for v in common.VERDICTS:
        tr.write_line(f"{v.outcome.upper():<8} {v.target}: {v.detail}   [{v.test}]")
    if common.smoke():
        tr.write_line(f"smoke run: nothing judged; rows written to {common.results_dir()}")
