"""The run folder's metrics log: JSONL always, TensorBoard events when the package is installed."""

from __future__ import annotations

import json

import pytest

from muser.train.run_folder import MetricsLog


def test_metrics_jsonl_append_truncate_and_rates(tmp_path):
    log = MetricsLog(tmp_path, report=False)
    for step in (10, 20, 30):
        log.append(
            {"step": step, "loss": 5.0 - step / 10, "samples_per_s": float(step), "data_wait_frac": 0.1}
        )
    log.truncate(20)  # a resume from step 20 drops what was logged after it
    assert [m["step"] for m in log.read()] == [10, 20]
    assert log.mean_rates() == {"samples_per_s": 20.0, "data_wait_frac": 0.1}  # warm-up record left out
    assert not (tmp_path / "tensorboard").exists()


def test_numeric_fields_reach_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path)
    log.append({"step": 10, "loss": 4.5, "lr": 1e-3, "stopped": False, "note": "text is skipped"})
    log.append({"step": 20, "loss": 4.0, "lr": 9e-4})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "lr"}
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(10, 4.5), (20, 4.0)]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["note"] == "text is skipped"
