"""ONNX Runtime vs PyTorch on CPU for the audio tower (audio.onnx: waveform -> unit embedding, the
spectrogram front end inside the graph): clips per second for the tiny and base presets.

Repeats alternate between the two engines, so a change in the shared machine's load hits both alike;
min and median seconds per batch are kept, with the load average before and after. Writes
benchmarks/results/onnx.json. Run: `pytest benchmarks/test_onnx.py -q -s`.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import pytest
import torch

from benchmarks.common import machine_info, write_result
from muser import MUSER
from muser.share.onnx import OPSET, AudioGraph, export_graph

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

BATCH, SECONDS, REPEATS = 8, 3.0, 5


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _measure(name: str, path, threads: int) -> dict:
    """Min/median seconds per batch of BATCH clips for PyTorch and onnxruntime, in alternating repeats."""
    torch.manual_seed(0)
    model = MUSER.from_preset(name).eval()
    wave = torch.rand(BATCH, int(SECONDS * model.config.sample_rate)) * 2 - 1
    graph = AudioGraph(model, model.config.audio_embedding)
    export_graph(graph, (wave,), path, ["audio"], {"audio": {0: "batch", 1: "samples"}}, OPSET)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # the same cores as torch
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"audio": wave.numpy()}

    def run_torch() -> None:
        with torch.inference_mode():
            model.encode_audio(wave)

    engines = {"pytorch": run_torch, "onnxruntime": lambda: session.run(None, feed)}
    for run in engines.values():
        run()  # warm-up: first-call allocations and graph optimisation
    times: dict[str, list[float]] = {engine: [] for engine in engines}
    for _ in range(REPEATS):
        for engine, run in engines.items():
            times[engine].append(_seconds(run))
    row: dict = {
        engine: {
            "min_s": min(t),
            "median_s": statistics.median(t),
            "clips_per_s": BATCH / statistics.median(t),
        }
        for engine, t in times.items()
    }
    row["speedup_median"] = row["pytorch"]["median_s"] / row["onnxruntime"]["median_s"]
    return row


@pytest.mark.measure_only
def test_measure_onnx_vs_pytorch_audio_tower(tmp_path):
    cores = os.cpu_count() or 1
    load_before = list(os.getloadavg())
    results = {}
    before = torch.get_num_threads()
    try:
        # One thread as well as all cores: on a shared, loaded machine spinning thread pools wait on each
        # other, and the one-thread row shows the engines' own cost.
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            for name in ("tiny", "base"):
                key = f"{name}/threads={threads}"
                results[key] = _measure(name, tmp_path / f"{name}-audio.onnx", threads)
                print(f"\n{key}: {json.dumps(results[key])}")
                assert results[key]["pytorch"]["min_s"] > 0 and results[key]["onnxruntime"]["min_s"] > 0
    finally:
        torch.set_num_threads(before)
    setup = {"batch": BATCH, "seconds": SECONDS, "repeats": REPEATS, "alternating": True}
    write_result(
        "onnx",
        {
            "machine": machine_info(),  # its load_average is the one after the measurement
            "load_average_before": load_before,
            "setup": {**setup, "onnxruntime": ort.__version__},
            "audio_tower": results,
        },
    )
