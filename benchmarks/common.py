"""The benchmark harness: where a result was measured (machine, load, code version), whether the machine
was quiet enough for a timing comparison, the alternating timing of two or more sides in one process, and
the result row that records pass/fail of its target in benchmarks/results/<name>.json.

A results file holds rows of one code version only: writing a row under another version replaces the
file. A row is written when it starts ("did not finish") and again when it ends, so an interrupted run
says so. Imported as `benchmarks.common` (the root conftest.py puts the repository root on sys.path).

    with entry("loader", "flac_vs_seek_decode") as row:      # a benchmark with a target
        quiet(row, rule=ONE_CORE)                            # skips, with the reason, on a loaded machine
        t = alternate({"loader": run_loader, "limit": run_limit}, repeats=5)
        row["timing"] = timings(t)
        row.target("FLAC loader / seek+decode limit", ratio(t, "loader", "limit", per=crops), at_least=0.6)

    with entry("model", "frontend", measure_only=True) as row: ...   # numbers only: no target, no verdict
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing as mp
import operator
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch

from muser.atomic import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SMOKE_ENV = "MUSER_BENCH_SMOKE"  # "1": reduced sizes, no load gate, results in a temporary folder


def smoke() -> bool:
    """True in a smoke run (`pytest benchmarks --smoke` or MUSER_BENCH_SMOKE=1): every benchmark at a
    reduced size, to show it runs; its numbers are not results and its targets are not judged."""
    return os.environ.get(SMOKE_ENV, "") not in ("", "0")


def sized(full: Any, reduced: Any) -> Any:
    """`full` in a real run, `reduced` in a smoke run."""
    return reduced if smoke() else full


def results_dir() -> Path:
    """benchmarks/results, or $MUSER_BENCH_RESULTS; a smoke run writes to a temporary folder instead, so
    its numbers never land beside real results."""
    if os.environ.get("MUSER_BENCH_RESULTS"):
        return Path(os.environ["MUSER_BENCH_RESULTS"])
    return Path(tempfile.gettempdir()) / "muser-bench-smoke" if smoke() else RESULTS


# ---- where it ran ------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux); elsewhere what `platform` knows, e.g. "x86_64"."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@functools.cache  # one code version per process: a benchmark session does not edit its own code
def code_version() -> str:
    """The last commit that changed muser/ or benchmarks/ (results aside), "+dirty.<hash of the diff>" when
    they have uncommitted changes (two dirty trees of one commit are different code), or "unknown" outside
    git. A commit of README, tests or results alone is the same code: rows measured before it still count."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout

    try:
        code = ("--", "muser", "benchmarks", ":!benchmarks/results")
        head = git("log", "-1", "--format=%H", *code).strip()[:12]
        diff = git("diff", "HEAD", *code)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty.{hashlib.sha256(diff.encode()).hexdigest()[:8]}" if diff else head


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on; the same keys in every results file. `load_average` and
    `torch_threads` are read at call time."""
    try:
        triton: str | None = metadata.version("triton")  # the version only: importing triton is slow
    except metadata.PackageNotFoundError:
        triton = None
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cpu = cpu_model()
    return {
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "triton": triton,
        "cuda_device": cuda,
        "device": cuda or f"cpu ({cpu})",
        "load_average": load_average(),
    }


# ---- is the machine quiet enough? ----------------------------------------------------------------------


def _burn(n: int) -> float:
    """A fixed pure-CPU loop; returns its own duration."""
    start, x = time.perf_counter(), 0
    for i in range(n):
        x += i * i
    return time.perf_counter() - start


def capacity(n: int = 3_000_000) -> float:
    """CPU capacity two processes get right now: 2 x (one loop alone) / (two loops at once, the slower);
    2.0 on two free cores, about 1.0 when another job holds one of them."""
    with mp.get_context("forkserver").Pool(2) as pool:
        pool.map(_burn, [1000, 1000])  # start both processes first
        alone = min(pool.apply(_burn, (n,)) for _ in range(2))
        pair = max(pool.map(_burn, [n, n], chunksize=1))
    return round(2 * alone / pair, 3)


def busy_cores(seconds: float = 2.0) -> float:
    """How many cores other jobs keep busy right now: the machine's non-idle CPU time over `seconds` while
    this process sleeps (/proc/stat), in cores. Unlike the 1-minute load average it does not count the
    benchmark that ran just before, nor the fixture that built our corpus. Elsewhere: the load average."""
    stat = Path("/proc/stat")
    if not stat.is_file():
        return os.getloadavg()[0]

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in stat.read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
    return round(busy * (os.cpu_count() or 1), 2)


@dataclass(frozen=True)
class Quiet:
    """When a timing comparison is valid: `free_cores` cores free of other jobs, read as the cores other
    jobs keep busy (`busy_cores`) below max(0.5, cores - free_cores), and the 2-process capacity at least
    `min_capacity` before and after."""

    name: str
    free_cores: int
    min_capacity: float

    @property
    def max_load(self) -> float:
        return max(0.5, (os.cpu_count() or 1) - self.free_cores)


# Two sides in one process, one at a time: one core must be free of other jobs (load < 1 on 2 cores).
ONE_CORE = Quiet("one free core", free_cores=1, min_capacity=1.5)
# Two processes against one, or a trainer with its loader worker: two free cores (load < 0.5 on 2 cores).
TWO_CORES = Quiet("two free cores", free_cores=2, min_capacity=1.8)


def quiet(row: Row, rule: Quiet = ONE_CORE) -> dict[str, Any]:
    """Check the machine before a timing comparison; on a loaded machine the row is recorded as skipped
    and the test SKIPS with the reason (in a smoke run the facts are recorded and nothing skips). Returns
    the facts; call `still_quiet` after the measurement."""
    busy = busy_cores()
    cap = capacity()
    facts = {
        "rule": rule.name,
        "busy_cores_before": busy,
        "load_average_before": load_average(),
        "capacity_2proc_before": cap,
    }
    row["quiet"] = facts
    if not smoke() and (busy >= rule.max_load or cap < rule.min_capacity):
        row.skip(
            f"machine too loaded for a valid comparison ({rule.name}): other jobs keep {busy:.2f} cores "
            f"busy (needs < {rule.max_load}), 2-process CPU capacity {cap} (needs >= {rule.min_capacity})"
        )
    return facts


def still_quiet(row: Row, rule: Quiet = ONE_CORE) -> float:
    """The capacity after the measurement; skips when another job arrived during the run. Returns the
    lower of the capacities before and after (what the run could count on)."""
    cap = capacity()
    row["quiet"]["capacity_2proc_after"] = cap
    row["quiet"]["load_average_after"] = load_average()
    if not smoke() and cap < rule.min_capacity:
        row.skip(
            f"machine became loaded during the run ({rule.name}): 2-process CPU capacity {cap} after "
            f"(needs >= {rule.min_capacity})"
        )
    return min(cap, row["quiet"]["capacity_2proc_before"])


# ---- timing --------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds of repeated runs of one side: min (the least disturbed run), median, and spread."""

    seconds: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median: 0.1 means the runs varied by 10% of the typical run."""
        return (max(self.seconds) - self.min) / self.median

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": [round(s, 4) for s in self.seconds],
            "min_s": round(self.min, 4),
            "median_s": round(self.median, 4),
            "spread": round(self.spread, 3),
        }


def alternate(
    sides: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True, sync: Callable | None = None
) -> dict[str, Timing]:
    """Time every side `repeats` times in this process, alternating (a, b, a, b, ...) so that a burst of
    outside load hits all sides alike; one untimed warm-up call each first. `sync` (e.g.
    torch.cuda.synchronize) is called before each clock read."""
    if warmup:
        for fn in sides.values():
            fn()
    out = {name: Timing() for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            if sync:
                sync()
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            out[name].seconds.append(time.perf_counter() - start)
    return out


def timings(t: dict[str, Timing]) -> dict[str, dict[str, Any]]:
    return {name: timing.as_dict() for name, timing in t.items()}


def speedup(t: dict[str, Timing], fast: str, slow: str) -> dict[str, float]:
    """How many times faster `fast` is than `slow`: by median and by min (both sides' best runs)."""
    return {
        "median": round(t[slow].median / t[fast].median, 3),
        "min": round(t[slow].min / t[fast].min, 3),
    }


# ---- result rows and targets ---------------------------------------------------------------------------

_OPS = {"at_least": (operator.ge, ">="), "at_most": (operator.le, "<="), "above": (operator.gt, ">")}


@dataclass
class Verdict:
    """One target's outcome, printed in the run's summary."""

    test: str  # the pytest node id it ran in
    target: str
    outcome: str  # "passed", "failed", "skipped", "not judged (smoke run)"
    detail: str


VERDICTS: list[Verdict] = []  # this session's, in order; the benchmarks conftest prints them


def current_test() -> str:
    """The running pytest node id (pytest sets PYTEST_CURRENT_TEST), "" outside pytest."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


class Row(dict):
    """One result row: numbers as dict items, plus the targets judged on them."""

    def __init__(self, bench: str, name: str, measure_only: bool):
        super().__init__()
        self.bench, self.name, self.measure_only = bench, name, measure_only
        self.targets: list[dict[str, Any]] = []

    def target(self, what: str, value: float, **bound: float) -> bool:
        """Judge `value` against one bound (at_least=, at_most= or above=); recorded in the row, failed
        targets fail the test when the row ends. In a smoke run the target is recorded, not judged."""
        if self.measure_only:
            raise RuntimeError(f"{self.bench}/{self.name} is measure-only: it has no target to judge")
        ((kind, limit),) = bound.items()
        op, sign = _OPS[kind]
        ok = bool(op(value, limit))
        outcome = "not judged (smoke run)" if smoke() else ("passed" if ok else "failed")
        self.targets.append(
            {"target": what, "value": round(value, 4), "bound": f"{sign} {limit:.4g}", "outcome": outcome}
        )
        VERDICTS.append(Verdict(current_test(), what, outcome, f"{value:.4g} (target {sign} {limit:.4g})"))
        return ok

    def skip(self, reason: str) -> None:
        pytest.skip(reason)


def _write(bench: str, row: Row, status: str) -> Path:
    """Put `row` into <results>/<bench>.json under the current code version, replacing a file written
    by another version, through a temporary file (an interrupted write never leaves half a file)."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bench}.json"
    version = code_version()
    data = json.loads(path.read_text()) if path.is_file() else {}
    if data.get("code_version") != version or data.get("smoke") != smoke():
        data = {"benchmark": bench, "code_version": version, "smoke": smoke(), "rows": {}}
    data["rows"][row.name] = {
        "status": status,
        "measure_only": row.measure_only,
        "targets": row.targets,
        **dict(row),
        "machine": machine_info(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(path, data, default=str)
    return path


@contextmanager
def entry(bench: str, name: str, measure_only: bool = False) -> Iterator[Row]:
    """One result row of benchmarks/results/<bench>.json, written as "did not finish" at once and with
    its status at the end: "passed"/"failed" (its targets), "measured" (measure-only), "skipped: why", or
    "error: ..." when the benchmark itself broke. A failed target fails the test, naming the target."""
    row = Row(bench, name, measure_only)
    row["started_load_average"] = load_average()
    _write(bench, row, "did not finish")
    try:
        yield row
    except pytest.skip.Exception as exc:
        VERDICTS.append(Verdict(current_test(), f"{bench}/{name}", "skipped", str(exc.msg)))
        _write(bench, row, f"skipped: {exc.msg}")
        raise
    except BaseException as exc:
        _write(bench, row, f"error: {type(exc).__name__}: {exc}"[:500])
        raise
    if not measure_only and not row.targets:
        _write(bench, row, "error: no target was judged")
        raise AssertionError(f"{bench}/{name} judged no target; judge one or make it measure-only")
    failed = [t for t in row.targets if t["outcome"] == "failed"]
    status = "measured" if measure_only else ("failed" if failed else "passed")
    if smoke():
        status = f"smoke run ({status if measure_only or failed else 'targets not judged'})"
    _write(bench, row, status)
    if failed:
        raise AssertionError(
            "target missed: "
            + "; ".join(f"{t['target']} = {t['value']} (needs {t['bound']})" for t in failed)
        )


code_version()  # read as the benchmarks are imported: the code that runs, whatever is edited meanwhile


# ---- the format before the harness (still used by benchmarks/test_catalogue.py until it moves over) ----


def read_result(name: str) -> dict[str, Any]:
    """<results>/<name>.json, or {} before the first run."""
    path = results_dir() / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write `data` to <results>/<name>.json through a temporary file."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    atomic_write_json(path, data)
    return path


def record(name: str, section: str, key: str, value: Any) -> dict[str, Any]:
    """Store `value` at data[section][key] in <name>.json, keeping every other entry, with this machine
    as the file's `machine` block; returns the file's new content."""
    data = read_result(name)
    data.setdefault(section, {})[key] = value
    data["machine"] = machine_info()
    write_result(name, data)
    return data
