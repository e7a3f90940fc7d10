"""README's benchmark tables, rendered from benchmarks/results/*.json (the harness's row format): every
target with its verdict, the timed sides of each comparison, and the downstream accuracy table.

    python -m benchmarks.report          # rewrite README.md between its `<!-- bench:NAME -->` markers
    python -m benchmarks.report --check  # exit 1 when README.md differs from what the results say

tests/test_benchmarks.py runs the check, so a README number always comes from a committed results file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from benchmarks import downstream_lib as lib

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"


def load(results: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """name -> content of every results file in the harness's format (files of other formats, such as
    the catalogue's until it moves over, are left to their own README text)."""
    out = {}
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data.get("rows"), dict) and "code_version" in data:
            out[path.stem] = data
    return out


def _when(row: dict[str, Any]) -> str:
    load = (row.get("machine") or {}).get("load_average") or []
    return f"{row.get('written', '?')[:10]}, load {load[0] if load else '?'}"


def targets_table(files: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| benchmark / row | target | value | needs | verdict | code version, date, 1-min load |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for name, data in files.items():
        for key, row in data["rows"].items():
            # A row joined from a run of other code (the GPU rows of one lease beside the CPU rows) keeps
            # its own version.
            where = f"{row.get('code_version', data['code_version'])}, {_when(row)}"
            if row.get("measure_only"):
                lines.append(f"| {name} / {key} | (measure-only) | | | {row['status']} | {where} |")
            elif not row.get("targets"):
                lines.append(f"| {name} / {key} | | | | {row['status']} | {where} |")
            for t in row.get("targets", []):
                lines.append(
                    f"| {name} / {key} | {t['target']} | {t['value']:.4g} | {t['bound']} | {t['outcome']} "
                    f"| {where} |"
                )
    for module in sorted((ROOT / "benchmarks").glob("test_*.py")):
        name = module.stem.removeprefix("test_")
        if name in files:
            continue
        run = f"`pytest {module.relative_to(ROOT)}`"
        if (RESULTS / f"{name}.json").is_file():  # written outside the harness: numbers, no verdict
            own = f"(no verdict: results/{name}.json is in its own format; see its section)"
            lines.append(f"| {name} | {own} | | | | |")
        else:  # a benchmark whose targets have no recorded verdict at all
            lines.append(f"| {name} | (none recorded: {run} on a quiet machine) | | | | |")
    return "\n".join(lines)


def timing_table(files: dict[str, dict[str, Any]]) -> str:
    """Every timed side of every row that finished: median and min seconds over the alternating runs,
    and their spread ((max - min) / median)."""
    lines = [
        "| benchmark / row | side | median s | min s | spread | runs | status |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, data in files.items():
        for key, row in data["rows"].items():
            if row["status"] not in ("passed", "failed", "measured"):
                continue  # a skipped row's numbers (load rose during the run) are not results
            for block, sides in row.items():
                if not (block.startswith("timing") and isinstance(sides, dict)):
                    continue
                sides = {block: sides} if "median_s" in sides else sides  # one side stored flat
                for side, t in sides.items():
                    lines.append(
                        f"| {name} / {key} | {side} | {t['median_s']:.4g} | {t['min_s']:.4g} | "
                        f"{t['spread']:.2f} | {len(t['seconds'])} | {row['status']} |"
                    )
    if len(lines) == 2:
        lines.append("| (no timed row recorded at a valid load yet) | | | | | | |")
    return "\n".join(lines)


def downstream_table(files: dict[str, dict[str, Any]]) -> str:
    """The paper-ablation replica: one column per corpus, one row per variant, logistic / MLP / zero-shot
    accuracy in % (mean ± std over folds x probe seeds)."""
    rows = {k: r for k, r in files.get("downstream", {}).get("rows", {}).items() if "rows" in r}
    if not rows:
        return "(no downstream row recorded yet)"
    head = "| variant | " + " | ".join(f"{r['title']}: {' / '.join(_protocols(r))}" for r in rows.values())
    lines = [head + " |", "| --- |" + " --- |" * len(rows)]
    for variant in [v.name for v in lib.VARIANTS] + [lib.RANDOM, lib.MFCC]:
        cells = [" / ".join(lib._cell(r["rows"], variant, p) for p in _protocols(r)) for r in rows.values()]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    for r in rows.values():  # the reading is computed from the numbers by downstream_lib.reading
        lines += ["", f"*{r['title']}* ({r['status']}): {r['reading']}"]
    return "\n".join(lines)


def _protocols(row: dict[str, Any]) -> list[str]:
    return [p for p in lib.PROTOCOLS if any(r["protocol"] == p for r in row["rows"])]


BLOCKS = {"targets": targets_table, "timing": timing_table, "downstream": downstream_table}
MARK = re.compile(r"(<!-- bench:(\w+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)


def render(text: str, files: dict[str, dict[str, Any]]) -> str:
    """`text` with every `<!-- bench:NAME -->...<!-- /bench:NAME -->` block rewritten from `files`."""

    def block(m: re.Match) -> str:
        if m.group(2) not in BLOCKS:
            raise ValueError(f"README marker bench:{m.group(2)} names no table (known: {', '.join(BLOCKS)})")
        return m.group(1) + BLOCKS[m.group(2)](files) + "\n" + m.group(4)

    return MARK.sub(block, text)


def main(argv: list[str]) -> int:
    text = README.read_text()
    new = render(text, load())
    if "--check" in argv:
        if new != text:
            print(
                "README.md's benchmark tables differ from benchmarks/results: run python -m benchmarks.report"
            )
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
