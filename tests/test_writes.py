"""Every file the package writes goes through muser.atomic: a static scan of muser/ for write calls.

A write call (a file opened for writing, write_text/write_bytes, torch.save, a Parquet/FAISS/NumPy/
matplotlib/safetensors writer, save_pretrained, a hand-made rename or copy, ...) must sit inside a
`with atomic_write(...)` or `with atomic_dir(...)` block, where it writes the temporary file the helper
renames into place. The few exceptions are listed below, each with its reason; an entry that no longer
matches anything fails too, so the list cannot go stale.
"""

from __future__ import annotations

import ast
from pathlib import Path

import muser

ROOT = Path(muser.__file__).resolve().parent
HELPERS = {"atomic_write", "atomic_dir"}

# (file under muser/, call) -> why that write may bypass the helper.
ALLOWED = {
    ("train/run_folder.py", "open"): "metrics.jsonl is append-only: a kill tears at most the last line, "
    "which MetricsLog.read skips and truncate() drops on resume",
    ("shards/errorlog.py", "open"): "errors.jsonl is append-only (fsynced): a torn last line is skipped "
    "on read and dropped by keep_committed when the run resumes",
    ("train/trackers.py", "SummaryWriter"): "TensorBoard's own append-only event files; nothing in "
    "muser reads them back",
    ("train/trainer.py", "save_pretrained"): "MUSER.save_pretrained writes each file through muser.atomic "
    "itself (config.json last), so init/ is never taken for a model folder half-written",
    ("shards/audio.py", "sf.write"): "encodes FLAC into an in-memory buffer, not a file",
}
# Whole folders whose files are no state of a run: they may write directly.
ALLOWED_DIRS = {
    "synth/": "builds a throwaway synthetic corpus (with deliberately broken files) in a fresh folder for "
    "tests and the demo; nothing resumes from it, a killed build is simply built again",
}

# Module functions (as the package spells them) and methods (on any object) that write a file.
_FUNCTIONS = {
    *("torch.save", "torchaudio.save", "np.save", "np.savez", "np.savez_compressed", "sf.write"),
    *("faiss.write_index", "pq.write_table", "ParquetWriter", "pq.ParquetWriter", "save_file", "save_model"),
    *(
        "json.dump",
        "pickle.dump",
        "yaml.dump",
        "SummaryWriter",
        "tempfile.mkstemp",
        "tempfile.NamedTemporaryFile",
    ),
    *("os.replace", "os.rename", "os.link", "os.symlink", "shutil.move"),
    *("shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree"),
}
_METHODS = {"write_text", "write_bytes", "savefig", "save_pretrained", "to_parquet", "to_feather", "rename"}
_METHODS_WITH_PATH = {"to_csv", "to_json"}  # without an argument they return a string
_WRITE_MODE = set("wax+")


def _name(func: ast.expr) -> str:
    """`np.savez` for np.savez(...), `write_text` for x.y.write_text(...), `open` for open(...)."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name):
            return f"{func.value.id}.{func.attr}"
        return func.attr
    return ""


def _mode(call: ast.Call, position: int) -> str | None:
    """The constant mode argument of an open-like call ('' when absent, None when not a constant)."""
    node = next((k.value for k in call.keywords if k.arg == "mode"), None)
    if node is None and len(call.args) > position:
        node = call.args[position]
    if node is None:
        return ""
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_write(call: ast.Call) -> str | None:
    """The call's name when it writes a file, else None."""
    name = _name(call.func)
    method = call.func.attr if isinstance(call.func, ast.Attribute) else None
    if name in ("io.open", "os.fdopen", "tarfile.open") or isinstance(call.func, ast.Name) and name == "open":
        mode = _mode(call, 1)  # not a constant: assume it writes
        return name if mode is None or set(mode) & _WRITE_MODE else None
    if name == "os.open":
        flags = ast.unparse(call.args[1]) if len(call.args) > 1 else ""
        return name if any(f in flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND")) else None
    if method == "open":  # Path.open("w"); a classmethod X.open(path, ...) takes no literal mode first
        mode = _mode(call, 0)
        return "open" if mode and set(mode) & _WRITE_MODE else None
    if name in _FUNCTIONS:
        return name
    if method in _METHODS or (method in _METHODS_WITH_PATH and call.args):
        return method
    return None


def _helper_call(expr: ast.expr, bound: set[str]) -> bool:
    if isinstance(expr, ast.Call):
        return _name(expr.func).rpartition(".")[2] in HELPERS
    return isinstance(expr, ast.Name) and expr.id in bound


def violations(source: str) -> list[tuple[int, str]]:
    """(line, call) of every write call in source that is not inside an atomic_write/atomic_dir block."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, inside: bool, bound: set[str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            bound = set(bound)
            for sub in ast.walk(node):  # `out = atomic_write(...)` then `with out as f:`
                if isinstance(sub, ast.Assign) and _helper_call(sub.value, set()):
                    bound |= {t.id for t in sub.targets if isinstance(t, ast.Name)}
        if isinstance(node, (ast.With, ast.AsyncWith)):
            helper = [_helper_call(item.context_expr, bound) for item in node.items]
            for i, item in enumerate(node.items):  # later items of the same with see the temporary file
                visit(item.context_expr, inside or any(helper[:i]), bound)
            for child in node.body:
                visit(child, inside or any(helper), bound)
            return
        if isinstance(node, ast.Call) and not inside and (name := _is_write(node)):
            found.append((node.lineno, name))
        for child in ast.iter_child_nodes(node):
            visit(child, inside, bound)

    visit(tree, False, set())
    return found


def _scan() -> dict[tuple[str, str], list[int]]:
    hits: dict[tuple[str, str], list[int]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "atomic.py" or any(rel.startswith(d) for d in ALLOWED_DIRS):
            continue
        for line, name in violations(path.read_text(encoding="utf-8")):
            hits.setdefault((rel, name), []).append(line)
    return hits


def test_every_write_in_the_package_goes_through_muser_atomic():
    hits = _scan()
    bad = {k: v for k, v in hits.items() if k not in ALLOWED}
    assert not bad, "write these through muser.atomic (atomic_write / atomic_write_text / atomic_dir): " + (
        "; ".join(f"muser/{f}:{lines} {call}" for (f, call), lines in sorted(bad.items()))
    )
    stale = sorted(set(ALLOWED) - set(hits))
    assert not stale, f"allow-list entries that match no write any more: {stale}"
    assert all(any(ROOT.glob(d + "*.py")) for d in ALLOWED_DIRS)


def test_the_scan_sees_each_kind_of_bare_write():
    source = """
import os, json, torch, numpy as np, pyarrow.parquet as pq
from pathlib import Path
def f(path, tmp, state, fig, table):
    Path(path).write_text("x")
    with open(path, "w") as out:
        json.dump(state, out)
    with open(path, "rb") as inp:
        inp.read()
    torch.save(state, path)
    np.savez(path, x=1)
    fig.savefig(path)
    pq.write_table(table, path)
    os.replace(tmp, path)
    Path(tmp).open("ab")
"""
    assert [name for _, name in violations(source)] == [
        "write_text",
        "open",
        "json.dump",
        "torch.save",
        "np.savez",
        "savefig",
        "pq.write_table",
        "os.replace",
        "open",
    ]


def test_writes_through_the_helper_pass_the_scan():
    source = """
import os, torch, pyarrow.parquet as pq
from muser.atomic import atomic_dir, atomic_write
def f(path, state, table, model, schema):
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    with atomic_write(path) as tmp, pq.ParquetWriter(tmp, schema) as w:
        w.write_table(table)
    out = atomic_write(path, "wb")
    with out as f:
        torch.save(state, f)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
    text = "a.b".replace(".", "/")
    return text
"""
    assert violations(source) == []
