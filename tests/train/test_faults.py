"""Bad data and bad options never kill, hang or silently change a pretraining run: malformed members are
skipped and counted (tokenizer pass included), nothing decodable stops with one sentence, damaged
checkpoints and configs are refused, and every option mistake is one sentence without a traceback."""

from __future__ import annotations

import errno
import json
import time

import pytest
import torch
from click.testing import CliRunner

from muser.cli import main
from muser.config import DataConfig, TrainConfig, preset
from muser.train import checkpoint as ckpt
from muser.train import pretrain
from tests.shards import shardkit
from tests.shards.test_reader_faults import MALFORMED
from tests.train.conftest import small_run

RATE = 16000


def _kit(tmp_path, n=12, corrupt_all=False, malformed=False):
    tracks = shardkit.make_tracks(n, 2.0, RATE)
    if malformed:
        for t, raw in zip(tracks, MALFORMED.values(), strict=False):
            t["raw_json"] = raw
    corrupt = {t["key"] for t in tracks} if corrupt_all else set()
    return shardkit.write_folder(tmp_path / "shards", tracks, sample_rate=RATE, per_shard=4, corrupt=corrupt)


def test_malformed_members_are_skipped_in_the_tokenizer_pass_and_in_training(tmp_path):
    folder = _kit(tmp_path, n=len(MALFORMED) + 8, malformed=True)
    data, train = small_run(folder, tmp_path / "run", steps=3)
    result = pretrain(data, preset("tiny"), train)
    assert result["steps"] == 3 and result["skipped"] > 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped"] == result["skipped"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["skipped"] == result["skipped"]


def test_nothing_decodable_stops_within_bounded_time_with_one_sentence(tmp_path):
    folder = _kit(tmp_path, corrupt_all=True)
    started = time.monotonic()
    args = ["pretrain", "--shards", str(folder), "--output", str(tmp_path / "run"), "--steps", "3"]
    done = CliRunner().invoke(main, [*args, "--batch-size", "4", "--workers", "1"])
    assert done.exit_code == 1 and time.monotonic() - started < 120
    error = [line for line in done.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and str(folder) in error[0] and "could be decoded" in error[0], done.output
    assert "Traceback" not in done.output


def test_a_bit_flipped_checkpoint_is_refused_and_the_newest_intact_one_named(shards, tmp_path):
    run = tmp_path / "run"
    data, train = small_run(shards, run, steps=4, save_every=2)
    pretrain(data, preset("tiny"), train)
    raw = bytearray((run / "last.pt").read_bytes())
    raw[len(raw) // 2] ^= 0x40  # one flipped bit in the middle of the tensors
    (run / "last.pt").write_bytes(bytes(raw))
    train.resume, train.steps = True, 6
    with pytest.raises(RuntimeError, match=r"last.pt is damaged.*step-0000002.pt.*cp "):
        pretrain(data, preset("tiny"), train)
    (run / "last.pt").write_bytes((run / "step-0000002.pt").read_bytes())  # what the message says to do
    assert pretrain(data, preset("tiny"), train)["steps"] == 6


def test_a_checkpoint_of_another_architecture_is_one_sentence(shards, tmp_path):
    run = tmp_path / "run"
    data, train = small_run(shards, run, steps=2)
    pretrain(data, preset("tiny"), train)
    state = ckpt.read_state(run)
    state["model"]["proj_audio.weight"] = torch.zeros(7, 3)
    ckpt.save_checkpoint(state, run, 2)  # a valid file of the wrong shape
    train.resume, train.steps = True, 4
    with pytest.raises(
        ValueError, match=r"different architecture \(proj_audio.weight is \(7, 3\) there"
    ) as info:
        pretrain(data, preset("tiny"), train)
    assert "\n" not in str(info.value)


def test_garbage_run_config_is_one_sentence(shards, tmp_path):
    run = tmp_path / "run"
    data, train = small_run(shards, run, steps=1)
    pretrain(data, preset("tiny"), train)
    (run / "config.json").write_text("{garbage")
    done = CliRunner().invoke(main, ["pretrain", "--output", str(run), "--resume"])
    assert done.exit_code == 2 and "config.json is not valid JSON" in done.output
    assert "Traceback" not in done.output


def test_disk_full_while_checkpointing_is_one_sentence_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint({"step": 1}, tmp_path, 1)

    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RuntimeError, match="no space left on device; free some space and --resume"):
        ckpt.save_checkpoint({"step": 2}, tmp_path, 2)
    assert ckpt.read_state(tmp_path)["step"] == 1


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--batch-size", "0", "--batch-size must be >= 1"),
        ("--epochs", "inf", "--epochs must be a finite number"),
        ("--epochs", "nan", "--epochs must be a finite number"),
        ("--lr", "nan", "--lr must be a finite number"),
        ("--lr", "-1", "--lr must be a finite number >= 0"),
        ("--warmup", "-5", "--warmup must be >= 0"),
        ("--crop-seconds", "inf", "--crop-seconds must be a finite number"),
        ("--weight-decay", "inf", "--weight-decay must be a finite number"),
    ],
)
def test_bad_numbers_are_one_sentence(shards, tmp_path, option, value, says):
    args = ["pretrain", "--shards", str(shards), "--output", str(tmp_path / "run"), option, value]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 2 and says in done.output and "Traceback" not in done.output, done.output
    assert not (tmp_path / "run" / "last.pt").exists()


def test_shards_at_another_sample_rate_are_refused(tmp_path):
    tracks = shardkit.make_tracks(4, 1.0, 8000)
    folder = shardkit.write_folder(tmp_path / "s8k", tracks, sample_rate=8000)
    data = DataConfig(shards=[str(folder)], batch_size=4, num_workers=0)
    with pytest.raises(ValueError, match="8000 Hz audio but the model expects 16000 Hz.*--sample-rate 16000"):
        pretrain(data, preset("tiny"), TrainConfig(output=str(tmp_path / "run"), steps=1))


def test_a_model_folder_never_runs_its_own_code(tmp_path):
    from muser.models.text import TextEncoder

    marker = tmp_path / "ran"
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.Evil"}}
        )
    )
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    with pytest.raises(ValueError, match="cannot load text encoder"):
        TextEncoder.from_pretrained(str(folder))
    assert not marker.exists()


def test_a_torn_metrics_line_is_skipped_and_dropped_on_resume(tmp_path):
    from muser.train.run_folder import MetricsLog

    torn = '{"step": 1, "loss": 5.0}\n{"step": 2, "loss": 4.9}\n{"step": 3, "lo'
    (tmp_path / "metrics.jsonl").write_text(torn)
    log = MetricsLog(tmp_path, report=False)
    assert [m["step"] for m in log.read()] == [1, 2]
    log.truncate(1)  # what a resume from step 1 does: the torn line goes with the steps past it
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "loss": 5.0}\n'


@pytest.mark.parametrize(
    ("visible", "says"), [(0, "no CUDA device is visible"), (2, "shows 2; use --gpus 2")]
)
def test_more_gpus_than_the_machine_has_is_one_sentence_before_torchrun(
    shards, tmp_path, monkeypatch, visible, says
):
    import muser.train.trainer as trainer

    started = []
    monkeypatch.setattr(trainer, "launch", lambda *args: started.append(args) or {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    args = ["pretrain", "--shards", str(shards), "--output", str(tmp_path / "run"), "--gpus", "8"]
    done = CliRunner().invoke(main, [*args, "--batch-size", "8"])
    assert done.exit_code == 2 and "--gpus 8 asks for" in done.output and says in done.output, done.output
    assert "Traceback" not in done.output and started == []
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.11 GiB total)"),
        RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 92160000000 bytes."),
        MemoryError(),
    ],
    ids=["cuda", "cpu-allocator", "python"],
)
def test_out_of_memory_in_a_step_says_what_ran_out_and_which_options_lower_it(
    shards, tmp_path, monkeypatch, error
):
    import muser.train.trainer as trainer

    def step(*args, **kwargs):
        raise error

    monkeypatch.setattr(trainer, "train_step", step)
    args = ["pretrain", "--shards", str(shards), "--output", str(tmp_path / "run"), "--batch-size", "8"]
    done = CliRunner().invoke(main, [*args, "--crop-seconds", "900", "--steps", "2"])
    assert done.exit_code == 1, done.output
    said = " ".join(done.output.split())
    assert "out of CPU (host) memory in training step 1" in said and "8 clips of 900 s" in said, said
    assert "--batch-size (now 8)" in said and "--crop-seconds (now 900)" in said and "--grad-accum" in said
    assert "allocate" not in said and "Traceback" not in said
