"""Tables printed into a log file, CI or a pipe are whole: no column cut at rich's 80-column default."""

from __future__ import annotations

import ast
import io
import sys
from pathlib import Path

import muser
from muser.console import make_console
from muser.eval.report import print_table

ROOT = Path(muser.__file__).resolve().parent


def _eval_result() -> dict:
    row = {
        "model": "runs/pretrain-fma-mtt-gtzan-2026-12-01/model",
        "protocol": "finetune",
        "fraction": 0.25,
        "metric": "pr_auc_macro",
        "mean": 0.4301,
        "std": 0.0123,
        "margins": {"random": 0.2104, "mfcc": 0.1033},
    }
    return {"task": "mtt", "label_task": "tags_top50", "split_scheme": "official", "results": [row]}


def test_the_eval_table_is_whole_when_stdout_is_not_a_terminal(capsys):
    print_table(_eval_result())  # pytest's captured stdout is not a terminal, as a log file is not
    out = capsys.readouterr().out
    assert "…" not in out
    for text in ("runs/pretrain-fma-mtt-gtzan-2026-12-01/model", "pr_auc_macro", "Δ random", "Δ mfcc"):
        assert text in out
    assert "+10.3" in out  # the last column's value
    assert max(map(len, out.splitlines())) > 80


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_keeps_its_own_width(monkeypatch):
    monkeypatch.setattr(sys, "stdout", _Tty())
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console().width == 100
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert make_console().width > 200


def test_every_console_is_made_by_make_console():
    """A Console built anywhere else would print 80-column tables into logs again."""
    makers = []
    for path in ROOT.rglob("*.py"):
        if path.name == "console.py" and path.parent == ROOT:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = getattr(node, "func", None)
            if isinstance(node, ast.Call) and getattr(name, "id", getattr(name, "attr", "")) == "Console":
                makers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert makers == []
