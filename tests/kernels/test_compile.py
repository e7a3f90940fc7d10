"""The fused kernels compile for GPUs this machine does not have (tools.kernel_aot): every tile config the
autotuner keeps fits the architecture's shared and tensor memory, the pruning estimate bounds what the
compiler allocates, and at least two kept configs per (kernel, arch, D, dtype) compile without spilling.

The default tier compiles the heaviest variant of each kernel for sm_90 in bf16 and fp32 (widths 128, 512
and 1024 need only the clamped configs on top: the kernels no longer depend on D); the full grid (sm_80,
sm_90, sm_100; D 64 .. 1024; fp16, bf16, fp32; every variant the host code launches) is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

tiling = pytest.importorskip("muser.kernels.tiling", reason="Triton is not installed", exc_type=ImportError)
aot = pytest.importorskip("tools.kernel_aot", reason="Triton is not installed", exc_type=ImportError)

pytestmark = pytest.mark.skipif(aot.toolchain_missing() is not None, reason=str(aot.toolchain_missing()))

REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "kernel_compile.json"


def test_default_tier_compiles_spill_free_within_limits():
    rows = aot.run(**aot.DEFAULT_TIER)
    assert len(rows) == len(aot.DEFAULT_TIER["only"]) * 3 * 2
    assert aot.problems(rows) == []


@pytest.mark.slow
def test_full_grid_compiles_spill_free_within_limits():
    rows = aot.run()
    assert len({row["kernel"] for row in rows}) == 7  # every variant the host code launches
    assert aot.problems(rows) == []


def test_host_code_launches_are_recorded_per_variant():
    import torch

    kernels = {
        (launch.kernel.rsplit(".", 2)[1], launch.kind, launch.host)
        for launch in aot.host_launches(torch.float16)
    }
    assert kernels == {
        ("contrastive_triton", "forward", (("SYMMETRIC", True),)),
        ("contrastive_triton", "forward", (("SYMMETRIC", False),)),
        ("contrastive_triton", "backward", (("A_TERM", True), ("B_TERM", True))),
        ("contrastive_triton", "backward", (("A_TERM", True), ("B_TERM", False))),
        ("contrastive_triton", "backward", (("A_TERM", False), ("B_TERM", True))),
        ("sigmoid_triton", "forward", ()),
        ("sigmoid_triton", "backward", ()),
    }


def test_pruning_clamps_to_the_width_and_drops_what_does_not_fit():
    configs = [tiling.config(s) for s in tiling.BACKWARD_SHAPES[2]]
    # D = 12: BLOCK_K and BLOCK_DV become 16, and configs that then coincide are kept once.
    narrow = tiling.fit_configs(configs, 12, 2, shared_limit=232448, arch=90)
    assert all(c.kwargs["BLOCK_K"] == 16 and c.kwargs["BLOCK_DV"] == 16 for c in narrow)
    assert len({(tuple(c.kwargs.items()), c.num_warps, c.num_stages) for c in narrow}) == len(narrow)
    assert len(narrow) < len(configs)
    # A 64 KB part (sm_75) keeps only configs whose estimate fits.
    small = tiling.fit_configs(configs, 1024, 2, shared_limit=65536, arch=75)
    assert small and len(small) < len(configs)
    assert all(tiling.shared_memory_bytes(c, 2) <= 65536 for c in small)
    # sm_100: s (BLOCK_N columns) and dA (BLOCK_DV columns) must share 512 columns of tensor memory.
    blackwell = tiling.fit_configs(configs, 1024, 2, shared_limit=232448, arch=100)
    assert all(c.kwargs["BLOCK_N"] + c.kwargs["BLOCK_DV"] <= tiling.TMEM_COLUMNS for c in blackwell)
    assert any(c.kwargs["BLOCK_N"] + c.kwargs["BLOCK_DV"] > tiling.TMEM_COLUMNS for c in configs)


def _row(**config):
    base = {"shape": [64, 64, 32, 4, 3], "chosen": True, "shared_estimate": 40000, "registers": 128}
    base.update(
        {"spill_stores": 0, "spill_loads": 0, "shared_bytes": 30000, "tmem_columns": 0, "trap": False}
    )
    return base | config


def test_problems_names_each_failure():
    rows = [
        {"kernel": "k", "arch": "sm_90", "d": 512, "dtype": "bfloat16", "configs": [_row(), _row()]},
        {
            "kernel": "k",
            "arch": "sm_80",
            "d": 512,
            "dtype": "bfloat16",
            "configs": [_row(), _row(spill_stores=8)],
        },
        {
            "kernel": "k",
            "arch": "sm_90",
            "d": 64,
            "dtype": "float32",
            "configs": [_row(shared_bytes=50000), _row()],
        },
        {
            "kernel": "k",
            "arch": "sm_100",
            "d": 64,
            "dtype": "float16",
            "configs": [_row(trap=True), _row(), _row()],
        },
        {
            "kernel": "k",
            "arch": "sm_90",
            "d": 128,
            "dtype": "float16",
            "configs": [_row(error="PTXASError: x")],
        },
    ]
    found = aot.problems(rows)
    assert len(found) == 5
    assert "k sm_80 D=512 bfloat16: only 1 chosen configs compile without spilling" in found
    assert any("sm_90 D=64 float32" in p and "above the pruning estimate" in p for p in found)
    assert any("sm_100 D=64 float16" in p and "over the hardware limits" in p for p in found)
    assert any("sm_90 D=128 float16" in p and "does not compile" in p for p in found)


def test_committed_report_matches_the_current_kernels():
    # benchmarks/results/kernel_compile.json is the compile check of the kernel sources it names by hash:
    # regenerate it (python -m tools.kernel_aot) whenever a kernel or a tile shape changes, or re-verify
    # it with --stamp after an edit that cannot change the compiled code.
    report = json.loads(REPORT.read_text())
    assert report.get("kernel_sources_sha256") == aot.source_hash(), (
        "the kernel sources changed since benchmarks/results/kernel_compile.json was written: run "
        "`python -m tools.kernel_aot` (or `python -m tools.kernel_aot --stamp` for an edit that cannot "
        "change the compiled code)"
    )
    # The verdict is recomputed from the rows, not read from the report's own `problems` field.
    assert aot.problems(report["rows"]) == report["problems"] == []
    assert aot.grid_mismatches(report["rows"]) == []


def _report_rows() -> list[dict]:
    return json.loads(REPORT.read_text())["rows"]


def test_an_edited_report_is_caught():
    rows = _report_rows()
    spilled = [dict(r, configs=[dict(c, spill_stores=64) for c in r["configs"]]) for r in rows[:1]]
    assert aot.problems(spilled + rows[1:]) != []  # an edited row is recomputed into a problem
    flipped = dict(rows[0], configs=[dict(c, chosen=not c["chosen"]) for c in rows[0]["configs"]])
    assert any("chosen configs differ" in p for p in aot.grid_mismatches([flipped, *rows[1:]]))
    reshaped = dict(rows[0], configs=rows[0]["configs"][1:])
    assert any("not the current candidates" in p for p in aot.grid_mismatches([reshaped, *rows[1:]]))
    assert any("rows, the full grid has" in p for p in aot.grid_mismatches(rows[1:]))


def test_stamp_refuses_a_report_with_problems_and_leaves_it_alone(tmp_path):
    report = json.loads(REPORT.read_text())
    report.pop("kernel_sources_sha256", None)
    report["rows"][0]["configs"] = [dict(c, error="PTXASError: x") for c in report["rows"][0]["configs"]]
    path = tmp_path / "kernel_compile.json"
    path.write_text(json.dumps(report))
    before = path.read_bytes()
    found = aot.stamp(path)  # fails before compiling anything: the rows already show a problem
    assert any("does not compile" in p for p in found) and path.read_bytes() == before


def test_source_hash_follows_the_kernel_files(tmp_path, monkeypatch):
    first = aot.source_hash()
    assert first == aot.source_hash() and len(first) == 64
    for name in aot.KERNEL_SOURCES:
        (tmp_path / name).write_bytes((aot.KERNELS_DIR / name).read_bytes())
    monkeypatch.setattr(aot, "KERNELS_DIR", tmp_path)
    assert aot.source_hash() == first
    (tmp_path / "tiling.py").write_text((tmp_path / "tiling.py").read_text() + "\n# edited\n")
    assert aot.source_hash() != first
