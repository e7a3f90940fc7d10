"""TriModalLoss: terms, learnable scales (and sigmoid biases), and distributed parity for both losses
(2 gloo processes at B/2 vs 1 at B)."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import muser.kernels as kernels
from muser.kernels.contrastive_ref import contrastive_loss_ref
from muser.kernels.sigmoid_ref import sigmoid_loss_ref
from muser.losses import LOSSES, TriModalLoss, gather_with_grad

BATCH, FEATURES, DIM = 8, 12, 16
MODALITIES = ("audio", "spec", "text")


def _embeddings(batch: int = BATCH, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        m: F.normalize(torch.randn(batch, DIM, generator=gen), dim=1).requires_grad_() for m in MODALITIES
    }


def test_parts_are_the_contrastive_terms():
    emb = _embeddings()
    ids = torch.tensor([5, 5, 1, 2, 3, 4, 9, 9])  # two duplicated captions
    loss = TriModalLoss(terms=("at", "st", "as"))
    total, parts = loss(emb, ids)
    assert set(parts) == {"at", "st", "as"}
    scale = torch.tensor(1 / 0.07)
    expected = {
        "at": contrastive_loss_ref(emb["audio"], emb["text"], scale, ids, ids),
        "st": contrastive_loss_ref(emb["spec"], emb["text"], scale, ids, ids),
        "as": contrastive_loss_ref(emb["audio"], emb["spec"], scale),  # caption ids describe text only
    }
    for term, value in expected.items():
        torch.testing.assert_close(parts[term], value)
    torch.testing.assert_close(total, sum(expected.values()))
    total.backward()
    assert all(p.grad is not None and p.grad.abs() > 0 for p in loss.log_scales.values())


def test_sigmoid_parts_are_siglip_terms_with_a_bias_each():
    emb = _embeddings(seed=2)
    ids = torch.tensor([5, 5, 1, 2, 3, 4, 9, 9])
    loss = TriModalLoss(terms=("at", "st", "as"), loss="sigmoid")
    # SigLIP's initialisation: scale 10, bias -10, both learnable per term.
    assert loss.scales() == pytest.approx({"at": 10.0, "st": 10.0, "as": 10.0})
    assert loss.biases() == {"at": -10.0, "st": -10.0, "as": -10.0}
    total, parts = loss(emb, ids)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    expected = {
        "at": sigmoid_loss_ref(emb["audio"], emb["text"], scale, bias, ids, ids),
        "st": sigmoid_loss_ref(emb["spec"], emb["text"], scale, bias, ids, ids),
        "as": sigmoid_loss_ref(emb["audio"], emb["spec"], scale, bias),
    }
    for term, value in expected.items():
        torch.testing.assert_close(parts[term], value)
    total.backward()
    assert all(p.grad is not None and p.grad.abs() > 0 for p in loss.log_scales.values())
    assert all(p.grad is not None and p.grad.abs() > 0 for p in loss.logit_biases.values())


def test_softmax_has_no_biases_and_clamp_leaves_biases_alone():
    assert TriModalLoss().biases() == {}
    assert len(list(TriModalLoss().parameters())) == 2
    loss = TriModalLoss(terms=("at",), loss="sigmoid", init_bias=-3.0)
    with torch.no_grad():
        loss.log_scales["at"].fill_(math.log(250.0))
        loss.logit_biases["at"].fill_(-250.0)
    loss.clamp_()
    assert loss.scales() == pytest.approx({"at": 100.0})
    assert loss.biases() == {"at": -250.0}


def test_duplicate_awareness_changes_targets():
    emb = _embeddings(seed=1)
    ids = torch.tensor([0, 0, 0, 1, 2, 3, 4, 5])
    aware, _ = TriModalLoss(terms=("at",))(emb, ids)
    plain, _ = TriModalLoss(terms=("at",), duplicate_aware=False)(emb, ids)
    no_ids, _ = TriModalLoss(terms=("at",))(emb, None)
    torch.testing.assert_close(plain, no_ids)
    assert not torch.allclose(aware, plain)


def test_scales_are_stored_as_logs_and_clamped_in_place():
    loss = TriModalLoss()
    assert set(loss.log_scales) == {"at", "st"}
    assert loss.log_scales["at"].item() == pytest.approx(math.log(1 / 0.07))
    assert loss.scales() == pytest.approx({"at": 1 / 0.07, "st": 1 / 0.07})
    param = loss.log_scales["at"]
    storage = param.data_ptr()
    with torch.no_grad():
        loss.log_scales["at"].fill_(math.log(250.0))
        loss.log_scales["st"].fill_(math.log(0.2))
    loss.clamp_()
    # Same Parameter object and storage: the optimiser state stays attached.
    assert loss.log_scales["at"] is param and param.data_ptr() == storage
    assert loss.scales() == pytest.approx({"at": 100.0, "st": 1.0})
    assert loss.scales()["at"] <= 100.0  # the ceiling bounds the scale itself, not just its rounded log


def test_scale_learns_at_an_ordinary_learning_rate():
    # Audio and text embeddings identical and tightly clustered (negatives at cosine ~0.95): the positives
    # win only at a large scale, so the gradient keeps pushing the scale up. A raw-valued scale would move
    # ~lr per step (14.3 -> at most 16.3 in 200 steps); the log-valued one grows by a factor, up to the
    # ceiling, where clamp_ holds it.
    gen = torch.Generator().manual_seed(0)
    centre = torch.randn(1, DIM, generator=gen)
    audio = F.normalize(centre + 0.2 * torch.randn(BATCH, DIM, generator=gen), dim=1)
    emb = {"audio": audio, "text": audio}
    loss = TriModalLoss(terms=("at",))
    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    seen = []
    for _ in range(300):
        total, _ = loss(emb, None)
        opt.zero_grad()
        total.backward()
        opt.step()
        loss.clamp_()
        seen.append(loss.scales()["at"])
    assert seen[199] > 1.5 / 0.07
    assert max(seen) <= 100.0 and seen[-1] == pytest.approx(100.0)


def test_bad_configuration_and_inputs_raise():
    with pytest.raises(ValueError, match="loss terms"):
        TriModalLoss(terms=("at", "xx"))
    with pytest.raises(ValueError, match="init_scale"):
        TriModalLoss(init_scale=500.0)
    with pytest.raises(ValueError, match="loss must be one of softmax, sigmoid"):
        TriModalLoss(loss="hinge")
    emb = _embeddings()
    del emb["spec"]
    with pytest.raises(ValueError, match="needs embeddings \\['spec'\\]"):
        TriModalLoss()(emb, None)


def test_implementation_names_what_runs(monkeypatch):
    # On the CPU "auto" is the reference; "triton" is Triton (interpreted) wherever it is installed.
    assert TriModalLoss().implementation("cpu") == "reference"
    assert TriModalLoss(loss="sigmoid").implementation("cpu") == "reference"
    if kernels._triton_mode()[0] is not None:
        assert TriModalLoss(impl="triton").implementation("cpu") == "triton"
    # On CUDA "auto" follows the self-check of the loss it runs (decided here without a GPU).
    monkeypatch.setattr(kernels, "_triton_mode", lambda: ("native", "test"))
    checked = []

    def self_check(device: str, loss: str = "contrastive") -> bool:
        checked.append((device, loss))
        return loss == "contrastive"

    monkeypatch.setattr(kernels, "_self_check", self_check)
    assert TriModalLoss().implementation("cuda:0") == "triton"
    assert TriModalLoss(loss="sigmoid").implementation("cuda:0") == "reference"  # its self-check failed
    assert checked == [("cuda:0", "contrastive"), ("cuda:0", "sigmoid")]


def test_gather_is_identity_in_one_process():
    x = torch.randn(3, 4)
    assert gather_with_grad(x) is x


# ----------------------------------------------------------------------------------------------------------
# Distributed parity: a replicated linear "encoder" per modality, as DDP would hold it. One process sees the
# global batch; two gloo processes see half each, their parameter gradients averaged as DDP averages them.


def _encoders(seed: int = 3) -> torch.nn.ModuleDict:
    torch.manual_seed(seed)
    return torch.nn.ModuleDict({m: torch.nn.Linear(FEATURES, DIM) for m in MODALITIES})


def _global_batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    feats = {m: torch.randn(BATCH, FEATURES, generator=gen) for m in MODALITIES}
    ids = torch.tensor([7, 3, 7, 1, 2, 3, 8, 4])  # duplicates across the two halves and within one
    return feats, ids


def _step(feats, ids, impl, loss):
    encoders, objective = _encoders(), TriModalLoss(terms=("at", "st", "as"), impl=impl, loss=loss)
    emb = {m: F.normalize(encoders[m](feats[m]), dim=1) for m in MODALITIES}
    for e in emb.values():
        e.retain_grad()
    total, parts = objective(emb, ids)
    total.backward()
    return {
        "total": total.detach(),
        **{f"part.{t}": v.detach() for t, v in parts.items()},
        **{f"emb.{m}": e.grad for m, e in emb.items()},
        **{f"param.{n}": p.grad for n, p in encoders.named_parameters()},
        **{f"scale.{t}": p.grad for t, p in objective.log_scales.items()},
        **{f"bias.{t}": p.grad for t, p in objective.logit_biases.items()},
    }


def _variants() -> list[tuple[str, str]]:
    """(loss, impl) pairs the parity test covers."""
    impls = ["reference"] + (["triton"] if kernels._triton_mode()[0] is not None else [])
    return [(loss, impl) for loss in LOSSES for impl in impls]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        feats, ids = _global_batch()
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        results = {}
        for loss, impl in _variants():
            got = _step({m: f[rows] for m, f in feats.items()}, ids[rows], impl, loss)
            for key, value in got.items():
                if key.startswith(("param.", "scale.", "bias.", "total", "part.")):
                    # DDP averages parameter gradients; the global loss is the mean of the ranks' shares.
                    dist.all_reduce(value)
                    value /= world
                results[f"{loss}.{impl}.{key}"] = value
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
def test_two_processes_match_one_process(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    feats, ids = _global_batch()
    for loss, impl in _variants():
        single = _step(feats, ids, impl, loss)
        assert any(key.startswith("bias.") for key in single) == (loss == "sigmoid")
        for key, want in single.items():
            name = f"{loss}.{impl}.{key}"
            got = ranks[0][name]
            if key.startswith("emb."):
                # Each rank holds W x dL/de for its own rows (DDP's average divides that W out again).
                got = torch.cat([r[name] for r in ranks]) / world
            else:
                torch.testing.assert_close(ranks[1][name], got)  # replicated values agree
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
