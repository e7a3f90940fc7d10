"""torchrun worker for tests/test_distributed.py: one forward/backward of the trainer's objective under DDP.

Usage: torchrun --nproc-per-node=W ddp_worker.py MODEL_DIR BATCH.pt OUT.pt [softmax|sigmoid]. Rank 0 writes
the mean loss over ranks and the parameter gradients after DDP's all-reduce.
"""

from __future__ import annotations

import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from muser.distributed import all_reduce_mean, dist_cleanup, dist_init
from muser.losses import TriModalLoss
from muser.models.muser import MUSER
from muser.train.step import Objective


def main(model_dir: str, batch_path: str, out_path: str, loss: str = "softmax") -> None:
    rank, _, world, _ = dist_init("cpu")
    model = MUSER.from_pretrained(model_dir).eval()  # eval: no batch statistics, dropout or SpecAugment
    objective = DistributedDataParallel(
        Objective(model, TriModalLoss(terms=("at", "st", "as"), loss=loss), None)
    )
    batch = torch.load(batch_path, weights_only=True)
    n = batch["audio"].shape[0] // world
    local = {k: v[rank * n : (rank + 1) * n] for k, v in batch.items()}
    total, _ = objective(local)
    total.backward()
    loss = all_reduce_mean(total.detach())
    if rank == 0:
        grads = {k: p.grad for k, p in objective.module.named_parameters() if p.grad is not None}
        torch.save({"loss": loss, "grads": grads}, out_path)
    dist_cleanup()


if __name__ == "__main__":
    main(*sys.argv[1:5])
