"""What every benchmark writes besides its numbers: the `machine` block describing where it ran, and the
atomic JSON write (or merge) into benchmarks/results/<name>.json.

Imported as `benchmarks.common`: benchmarks/ is not a package, but the root conftest.py puts the
repository root on sys.path, as it does for `tests.shards`.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux); elsewhere what `platform` knows, e.g. "x86_64"."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on; the same keys in every results file.

    `torch_threads` and `load_average` are read at call time: record them when the numbers are written,
    since a shared CPU's load explains most run-to-run differences.
    """
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
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def read_result(name: str) -> dict[str, Any]:
    """benchmarks/results/<name>.json, or {} before the first run."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write `data` to benchmarks/results/<name>.json through a temporary file, so an interrupted run
    never leaves half a file for the next merge to choke on."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def record(name: str, section: str, key: str, value: Any) -> dict[str, Any]:
    """Store `value` at data[section][key] in <name>.json, keeping every other entry (a GPU run adds to a
    CPU run), with this machine as the file's `machine` block; returns the file's new content."""
    data = read_result(name)
    data.setdefault(section, {})[key] = value
    data["machine"] = machine_info()
    write_result(name, data)
    return data
