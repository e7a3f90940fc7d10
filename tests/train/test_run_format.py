"""Version 0.1 resumes only run folders of its own format: a pre-release run (no init/, its tokenizer and
architecture in model/ only) is refused in one sentence naming the version, never half-loaded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from muser import __version__
from muser.train.trainer import _PretrainRun


def test_a_run_without_init_is_refused_naming_the_version(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    run = SimpleNamespace(out=tmp_path, rank=0)
    with pytest.raises(ValueError, match=rf"no init/.*before 0\.1.*muser {__version__} resumes only"):
        _PretrainRun._build_model(run, resume={"step": 1})


def test_a_run_missing_init_is_incomplete(tmp_path):
    with pytest.raises(RuntimeError, match="init is missing"):
        _PretrainRun._build_model(SimpleNamespace(out=tmp_path, rank=0), resume={"step": 1})
