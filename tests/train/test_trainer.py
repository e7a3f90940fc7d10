"""The pretraining loop on a tiny synthetic corpus, CPU, tiny preset: learning, resume, stops and errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from muser.cli import main
from muser.config import DataConfig, TrainConfig, preset
from muser.train import NonFiniteLossError, pretrain
from muser.train.display import TrainDisplay
from tests.train.conftest import small_run


def test_wo_spec_training_never_runs_the_spectrogram_tower(shards, tmp_path, monkeypatch, capsys):
    # --loss-terms at (the paper's "w/o spec"): the spectrogram tower is neither trained nor computed, and
    # the saved model embeds audio without it (the preset's "both" would average in its random init).
    from muser.models.muser import MUSER
    from muser.models.spectrogram import SpectrogramEncoder

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the spectrogram tower ran in a run no loss term reads it")

    monkeypatch.setattr(SpectrogramEncoder, "forward", refuse)
    data, train = small_run(shards, tmp_path / "run", steps=3, loss_terms=("at",))
    assert pretrain(data, preset("tiny"), train)["steps"] == 3
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "loss_at" in record and "loss_st" not in record
    assert MUSER.from_pretrained(tmp_path / "run" / "model").config.audio_embedding == "waveform"
    assert "audio is embedded by the waveform tower" in capsys.readouterr().err


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_the_run_folder_is_complete(shards, tmp_path):
    from muser.models.muser import MUSER

    data, train = small_run(shards, tmp_path / "run", steps=24, warmup=3, eval_every=24, save_every=10)
    result = pretrain(data, preset("tiny"), train)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 24 and result["steps"] == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3, losses
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    for key in (
        "loss_at",
        "loss_st",
        "lr",
        "scale_at",
        "scale_st",
        "samples_per_s",
        "data_wait_frac",
        "r1",
        "r5",
    ):
        assert key in record
    assert 0.0 <= record["data_wait_frac"] <= 1.0 and record["scale_at"] <= 100.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {"data", "model", "train", "muser_version"} <= config.keys()
    # which loss implementation trained the run is recorded: on the CPU "auto" runs the reference
    assert result["loss_impl"] == "reference"
    assert json.loads((tmp_path / "run" / "result.json").read_text())["loss_impl"] == "reference"
    assert (tmp_path / "run" / "step-0000010.pt").is_file() and (
        tmp_path / "run" / "step-0000020.pt"
    ).is_file()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 24
    model = MUSER.from_pretrained(tmp_path / "run" / "model")
    torch.testing.assert_close(model.state_dict()["proj_audio.weight"], state["model"]["proj_audio.weight"])


def test_resume_reproduces_the_uninterrupted_losses(shards, tmp_path, monkeypatch):
    # Two fresh runs with one seed are identical (deterministic tokenizer, init and data stream), so the
    # interrupted-and-resumed run must reproduce the straight run's losses exactly.
    data, train = small_run(shards, tmp_path / "straight", steps=6)
    pretrain(data, preset("tiny"), train)
    expected = _losses(tmp_path / "straight")

    # Interrupt the second run with a real SIGTERM after step 2: it finishes step 3 and saves.
    update = TrainDisplay.update

    def update_then_signal(self, step, record=None):
        update(self, step, record)
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(TrainDisplay, "update", update_then_signal)
    data, train = small_run(shards, tmp_path / "resumed", steps=6)
    stopped = pretrain(data, preset("tiny"), train)
    assert stopped["stopped"] == "SIGTERM" and stopped["steps"] == 3
    monkeypatch.setattr(TrainDisplay, "update", update)
    train.resume = True
    resumed = pretrain(data, preset("tiny"), train)
    assert resumed["steps"] == 6 and resumed["stopped"] is None
    assert _losses(tmp_path / "resumed") == pytest.approx(expected, rel=1e-5, abs=1e-6)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_model_folder_always_holds_the_latest_saved_weights_never_the_init(shards, tmp_path, monkeypatch):
    # model/ is what `muser eval --checkpoint RUN` loads: after a periodic save and after a stop it must
    # hold that checkpoint's weights; the untrained init lives in init/ only.
    run, seen = tmp_path / "run", {}
    update = TrainDisplay.update

    def update_then_signal(self, step, record=None):
        update(self, step, record)
        if step == 3:  # after the periodic save of step 2; the stop then comes after step 4
            seen["model"] = _weights(run / "model")
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(TrainDisplay, "update", update_then_signal)
    data, train = small_run(shards, run, steps=8, save_every=2)
    result = pretrain(data, preset("tiny"), train)
    assert result["stopped"] == "SIGTERM" and result["steps"] == 4 and result["model"] == str(run / "model")
    key = "proj_audio.weight"
    step2 = torch.load(run / "step-0000002.pt", weights_only=True)["model"][key]
    torch.testing.assert_close(seen["model"][key], step2)
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["step"] == 4
    torch.testing.assert_close(_weights(run / "model")[key], last["model"][key])
    assert not torch.allclose(_weights(run / "init")[key], last["model"][key])
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no export leftovers


def test_a_stop_between_micro_batches_resumes_at_the_step_boundary(shards, tmp_path, monkeypatch):
    # Ctrl-C also kills the DataLoader workers, so the next micro-batch fails half-way through a step
    # (here: the second of step 3's two micro-batches). The checkpoint must rewind to the end of step 2.
    from muser.train.data import MicroBatches

    data, train = small_run(shards, tmp_path / "straight", steps=5, grad_accum=2)
    pretrain(data, preset("tiny"), train)
    expected = _losses(tmp_path / "straight")

    draw = MicroBatches.__next__

    def dying_loader(self):
        if self.position == 5:
            signal.raise_signal(signal.SIGINT)
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Interrupt")
        return draw(self)

    monkeypatch.setattr(MicroBatches, "__next__", dying_loader)
    data, train = small_run(shards, tmp_path / "resumed", steps=5, grad_accum=2)
    stopped = pretrain(data, preset("tiny"), train)
    assert stopped["stopped"] == "SIGINT" and stopped["steps"] == 2
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["data_position"] == 4
    monkeypatch.setattr(MicroBatches, "__next__", draw)
    train.resume = True
    assert pretrain(data, preset("tiny"), train)["steps"] == 5
    assert _losses(tmp_path / "resumed") == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(shards, tmp_path, monkeypatch):
    from muser.losses import TriModalLoss

    forward = TriModalLoss.forward
    calls = {"n": 0}

    def diverging(self, emb, caption_ids=None):
        total, parts = forward(self, emb, caption_ids)
        calls["n"] += 1
        return (total * float("nan"), parts) if calls["n"] == 4 else (total, parts)

    monkeypatch.setattr(TriModalLoss, "forward", diverging)
    data, train = small_run(shards, tmp_path / "run", steps=8, save_every=2)
    with pytest.raises(NonFiniteLossError, match="step 4"):
        pretrain(data, preset("tiny"), train)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2
    assert not (tmp_path / "run" / "step-0000004.pt").exists()


def test_bad_shard_paths_are_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    train = TrainConfig(output=str(tmp_path / "run"), steps=2)
    with pytest.raises(ValueError, match="no such folder"):
        pretrain(DataConfig(shards=[str(tmp_path / "missing")], batch_size=8), preset("tiny"), train)
    with pytest.raises(ValueError, match="is empty"):
        pretrain(DataConfig(shards=[str(empty)], batch_size=8), preset("tiny"), train)
    result = CliRunner().invoke(main, ["pretrain", "--shards", str(empty), "--output", str(tmp_path / "r")])
    assert result.exit_code == 2 and "is empty" in result.output and "Traceback" not in result.output


def test_epochs_over_a_single_tar_says_it_has_no_manifest(shards, tmp_path):
    data, train = small_run(shards, tmp_path / "run", epochs=1.0)
    data.shards = [str(shards / "train-000000.tar")]
    with pytest.raises(ValueError, match=r"train-000000\.tar is a single \.tar / URL source.*--steps"):
        pretrain(data, preset("tiny"), train)
    assert not (tmp_path / "run").exists()  # refused before anything starts


def test_a_cpu_run_with_a_visible_gpu_says_it_runs_on_the_cpu(shards, tmp_path, monkeypatch, capsys):
    from muser.train import trainer

    monkeypatch.setattr(trainer, "_cuda_visible", lambda: True)
    data, train = small_run(shards, tmp_path / "run", steps=1)
    pretrain(data, preset("tiny"), train)
    assert "training runs on the CPU" in capsys.readouterr().err


def test_pretrain_help_names_the_precisions_and_the_accumulation_negatives():
    text = " ".join(CliRunner().invoke(main, ["pretrain", "--help"]).output.split())
    for phrase in (
        "bf16, fp16 (with a loss scaler)",
        "micro-batch x processes negatives",
        "hub id",
        "init/",
        "--gpus",
    ):
        assert phrase in text, phrase


def test_option_errors_name_the_option(shards, tmp_path):
    data, train = small_run(shards, tmp_path / "run", procs=3)
    with pytest.raises(ValueError, match="--batch-size 8 must be divisible"):
        pretrain(data, preset("tiny"), train)
    data, train = small_run(shards, tmp_path / "run", loss_terms=("at", "xx"))
    with pytest.raises(ValueError, match="--loss-terms"):
        pretrain(data, preset("tiny"), train)


def test_cli_smoke_and_resume_from_the_run_folder(shards, tmp_path):
    out = tmp_path / "run"
    args = [
        "pretrain",
        "--shards",
        str(shards),
        "--output",
        str(out),
        "--gpus",
        "0",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--crop-seconds",
        "2",
        "--workers",
        "0",
        "--log-every",
        "1",
        "--warmup",
        "1",
        "--loss-terms",
        "at,st,as",
        "--grad-accum",
        "2",
        "--field-dropout",
        "0",
        "--no-specaugment",
        "--wave-gain-db",
        "6",
        "--wave-shift",
        "--wave-mix",
        "0.3",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    chosen = {"specaugment": False, "wave_gain_db": 6.0, "wave_shift": True, "wave_mix": 0.3}
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["field_dropout"] == 0.0 and chosen.items() <= config["model"].items()
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and "loss_as" in json.loads(
        (out / "metrics.jsonl").read_text().splitlines()[0]
    )
    again = CliRunner().invoke(main, ["pretrain", "--output", str(out), "--resume", "--steps", "5"])
    assert again.exit_code == 0, again.output
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert chosen.items() <= json.loads((out / "config.json").read_text())["model"].items()  # kept
    fresh = CliRunner().invoke(main, args)  # the same folder without --resume must not clobber the run
    assert fresh.exit_code == 2 and "--resume" in fresh.output
    bad = CliRunner().invoke(main, [*args[:4], str(tmp_path / "bad"), "--wave-mix", "2"])
    assert bad.exit_code == 2 and "--wave-mix in [0, 1]" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "bad").exists()  # refused while building: no empty run folder left behind
    bad = CliRunner().invoke(main, [*args[:4], str(tmp_path / "bad"), "--field-dropout", "1"])
    assert bad.exit_code == 2 and "--field-dropout" in bad.output and "Traceback" not in bad.output
    # Augmentation given again on --resume applies (the architecture stays the run's); a refused value
    # keeps the run it was pointed at.
    resume = ["pretrain", "--output", str(out), "--resume", "--steps", "6"]
    again = CliRunner().invoke(main, [*resume, "--specaugment", "--wave-mix", "0.1"])
    assert again.exit_code == 0, again.output
    config = json.loads((out / "config.json").read_text())["model"]
    assert config["specaugment"] is True and config["wave_mix"] == 0.1 and config["wave_gain_db"] == 6.0
    bad = CliRunner().invoke(main, [*resume[:-1], "7", "--wave-mix", "2"])
    assert bad.exit_code == 2 and "--wave-mix in [0, 1]" in bad.output
    assert (out / "last.pt").is_file() and (out / "model" / "config.json").is_file()


def test_sigterm_in_a_subprocess_leaves_a_loadable_checkpoint(shards, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "muser.cli",
        "pretrain",
        "--shards",
        str(shards),
        "--output",
        str(out),
        "--steps",
        "10000",
        "--batch-size",
        "8",
        "--crop-seconds",
        "2",
        "--workers",
        "0",
        "--log-every",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").is_file() or len((out / "metrics.jsonl").read_text().splitlines()) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    state = torch.load(out / "last.pt", weights_only=True)
    assert result["stopped"] == "SIGTERM" and state["step"] == result["steps"] >= 2


@pytest.mark.distributed
def test_procs_2_completes_and_logs_like_one_process(shards, tmp_path):
    data, train = small_run(shards, tmp_path / "two", steps=3, procs=2)
    result = pretrain(data, preset("tiny"), train)
    assert result["world_size"] == 2 and result["steps"] == 3 and result["stopped"] is None
    state = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert (tmp_path / "two" / "model" / "model.safetensors").is_file()


def test_pretrained_text_encoder_trains_at_a_lower_lr(shards, tmp_path, minilm_dir):
    data, train = small_run(shards, tmp_path / "run", steps=2, warmup=0, lr=1e-3)
    pretrain(data, preset("tiny", text_encoder=str(minilm_dir)), train)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["lr"] == pytest.approx(1e-3) and first["lr_text"] == pytest.approx(1e-4)


def test_a_locked_text_encoder_from_the_cli_trains_only_its_projection(shards, tmp_path, minilm_dir):
    from muser.models.muser import MUSER

    run = tmp_path / "run"
    args = ["pretrain", "--shards", str(shards), "--output", str(run), "--steps", "2", "--workers", "0"]
    locked = [*args, "--batch-size", "4", "--text-encoder", str(minilm_dir), "--text-freeze-layers", "6"]
    done = CliRunner().invoke(main, locked)
    assert done.exit_code == 0, done.output
    assert json.loads((run / "config.json").read_text())["model"]["text_freeze_layers"] == 6
    before = MUSER.from_pretrained(run / "init").state_dict()
    after = MUSER.from_pretrained(run / "model").state_dict()
    moved = {k for k, v in after.items() if not torch.equal(v, before[k])}
    assert any(k.startswith("text.") for k in after) and not any(k.startswith("text.") for k in moved)
    assert any(k.startswith("proj_text.") for k in moved) and any(k.startswith("waveform.") for k in moved)
    # Without a pretrained encoder, or with more blocks than it has: one sentence, exit 2, no run folder.
    alone = CliRunner().invoke(main, [*args[:4], str(tmp_path / "alone"), "--text-freeze-layers", "2"])
    assert alone.exit_code == 2 and "--text-encoder" in alone.output and not (tmp_path / "alone").exists()
    deep = [*locked[:4], str(tmp_path / "deep"), *locked[5:-1], "7"]
    too_deep = CliRunner().invoke(main, deep)
    assert too_deep.exit_code == 2 and "6 layers" in too_deep.output, too_deep.output
    assert not (tmp_path / "deep").exists()


def test_sigmoid_loss_trains_from_the_cli_with_falling_loss(shards, tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "--shards", str(shards), "--output", str(run), "--loss", "sigmoid", "--steps", "24"]
    done = CliRunner().invoke(main, [*args, "--batch-size", "8", "--crop-seconds", "2", "--workers", "0"])
    assert done.exit_code == 0, done.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records]
    assert sum(losses[-2:]) / 2 < losses[0] * 0.8, losses  # logged every 10 steps: 1, 10, 20, 24
    assert "bias_at" in records[-1] and "bias_st" in records[-1]
    assert json.loads((run / "config.json").read_text())["train"]["loss"] == "sigmoid"
    assert json.loads((run / "result.json").read_text())["loss_impl"] == "reference"


def test_grad_checkpointing_trains_the_same_run(shards, tmp_path):
    data, train = small_run(shards, tmp_path / "plain", steps=3)
    pretrain(data, preset("tiny"), train)
    data, train = small_run(shards, tmp_path / "ckpt", steps=3, grad_checkpointing=True)
    pretrain(data, preset("tiny"), train)
    assert _losses(tmp_path / "ckpt") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-5, abs=1e-6)
