"""muser.distributed: torchrun environment, launch command, signal forwarding; gloo runs of the trainer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from muser.distributed import choose_device, dist_init, launch_command, run_forwarding_signals
from muser.train.options import world_of


def test_dist_init_single_process_is_a_no_op(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert dist_init("cpu") == (0, 0, 1, torch.device("cpu"))
    assert not torch.distributed.is_initialized()


def test_dist_init_reads_the_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist_init("cpu") == (0, 0, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="device"):
        dist_init("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="--gpus 0"):
        dist_init("cuda")


def test_launch_command_single_node_uses_a_free_local_rendezvous():
    cmd = launch_command(["muser.train", "run/launch-node0.json"], nproc_per_node=4)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in cmd and "--standalone" in cmd
    assert cmd[-3:] == ["-m", "muser.train", "run/launch-node0.json"]


def test_launch_command_several_nodes_rendezvous_at_the_master():
    cmd = launch_command(
        ["muser.train", "s.json"], 8, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=1234
    )
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=1234"} <= set(cmd)
    assert "--standalone" not in cmd
    with pytest.raises(ValueError, match="--node-rank"):
        launch_command(["m"], 8, nnodes=2, node_rank=2)


def test_world_size_counts_gpus_or_cpu_processes_per_node():
    from muser.config import TrainConfig

    assert world_of(TrainConfig(gpus=0)) == 1
    assert world_of(TrainConfig(gpus=4, nnodes=2)) == 8
    assert world_of(TrainConfig(procs=3)) == 3


def test_signals_are_forwarded_to_the_child():
    child = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        "open(sys.argv[1], 'w').close()\n"
        "time.sleep(60)\n"
    )
    ready = Path(os.environ.get("TMPDIR", "/tmp")) / f"muser-ready-{os.getpid()}"
    ready.unlink(missing_ok=True)

    def signal_when_ready() -> None:
        while not ready.exists():
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_when_ready, daemon=True).start()
    code, received = run_forwarding_signals([sys.executable, "-c", child, str(ready)])
    ready.unlink(missing_ok=True)
    assert received == signal.SIGTERM and code == 7


@pytest.mark.distributed
@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_ddp_step_matches_one_process_at_the_same_global_batch(tmp_path, loss):
    """Two gloo ranks with 4 rows each give the loss and the gradients of one process with 8 rows, for the
    softmax loss and for the sigmoid loss (whose biases are parameters DDP must average too)."""
    from muser.losses import TriModalLoss
    from muser.models.muser import MUSER
    from muser.train.step import Objective

    torch.manual_seed(0)
    model = MUSER.from_preset("tiny").eval()
    model.save_pretrained(tmp_path / "model")
    texts = [
        "A song of techno.",
        "A song of blues.",
        "A song of techno.",
        "A waltz.",
        "Ambient music.",
        "A song of blues.",
        "Chiptune.",
        "Orchestral music.",
    ]  # duplicates across the two ranks' halves
    batch = {"audio": torch.rand(8, 16000) - 0.5, **model.tokenize(texts)}
    batch["caption_id"] = torch.tensor([hash(t) % 1000 for t in texts])
    torch.save(batch, tmp_path / "batch.pt")
    objective = Objective(model, TriModalLoss(terms=("at", "st", "as"), loss=loss), None)
    total, _ = objective(batch)
    total.backward()
    worker = Path(__file__).parent / "train" / "ddp_worker.py"
    cmd = launch_command([str(worker)], 2)
    cmd[cmd.index("-m", 3)] = "--no-python"  # run the worker file with the same interpreter
    cmd[cmd.index("--no-python") + 1 :] = [
        sys.executable,
        str(worker),
        str(tmp_path / "model"),
        str(tmp_path / "batch.pt"),
        str(tmp_path / "out.pt"),
        loss,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    torch.testing.assert_close(out["loss"], total.detach(), rtol=1e-5, atol=1e-6)
    grads = {k: p.grad for k, p in objective.named_parameters() if p.grad is not None}
    assert grads.keys() == out["grads"].keys()
    assert any(k.startswith("loss.logit_biases.") for k in grads) == (loss == "sigmoid")
    for name, grad in grads.items():
        torch.testing.assert_close(out["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_choose_device_is_the_one_device_rule():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device 'tpu' is not a device"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--gpus 2 asks for CUDA.*use --gpus 0"):
            choose_device("cuda:0", "--gpus 2", "--gpus 0")
