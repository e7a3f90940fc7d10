"""Downstream evaluation of MUSER checkpoints: probe, zero-shot, fine-tune (PT+FT) and retrieval protocols
with random-weights and MFCC baselines; `run_eval(cfg)` is the entry point used by `muser eval`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_eval"]


def run_eval(cfg: Any, console: Any = None) -> dict[str, Any]:
    """Evaluate cfg.checkpoint on cfg.task (an EvalConfig); writes results.json and two PNGs."""
    from muser.eval.runner import run_eval as _run

    return _run(cfg, console)
