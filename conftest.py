"""Shared fixtures and the automatic skip of `gpu` tests on machines without CUDA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.shared_data import need_shared

# Keep CPU tests predictable on small CI machines (2 cores): one intra-op thread per process.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository (see tests/shared_data.py: a skip on a checkout, a failure in CI)."""
    return need_shared()


@pytest.fixture(scope="session")
def real_audio_dir() -> Path:
    return need_shared("data", "real")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return need_shared("models", "all-MiniLM-L6-v2", marker="config.json")


@pytest.fixture
def one_thread():
    """Torch on one intra-op thread for the test, restored afterwards (per-worker rates; other tests keep
    the session setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
