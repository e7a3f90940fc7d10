"""MUSER.set_grad_checkpointing: the same loss, gradients and BatchNorm statistics as without it, with the
residual stages and transformer blocks really recomputed in the backward (training mode only)."""

from __future__ import annotations

import copy

import pytest
import torch

from muser import MUSER
from muser.losses import TriModalLoss
from tests.models.small import small_model

TEXTS = ["A song of rock.", "A song of jazz, belongs to blues music.", "Calm piano.", "A song of rock."]


def _model() -> MUSER:
    torch.manual_seed(0)
    # Three waveform stages and 16-wide embeddings: fast, and still every kind of checkpointed unit.
    model = small_model(wave_channels=(8, 8, 16), embed_dim=16)
    return model.train()  # training mode: SpecAugment masks and BERT dropout draw random numbers


def _batch(model: MUSER, padded: bool) -> dict:
    gen = torch.Generator().manual_seed(1)
    batch = {"audio": torch.rand(4, 8000, generator=gen) - 0.5, **model.tokenize(TEXTS)}
    if padded:  # the masked path of both towers
        batch["length"] = torch.tensor([8000, 5000, 3100, 8000])
        batch["audio"][1, 5000:] = 0.0
        batch["audio"][2, 3100:] = 0.0
    return batch


def _calls(model: MUSER) -> dict[str, list[int]]:
    """Forward-call counters on one checkpointed unit of each tower (pre-hooks: a recomputation stops as
    soon as it has rebuilt the saved tensors, so a unit's forward may never return the second time)."""
    units = {
        "waveform": model.waveform.stages[1],
        "spectrogram": model.spectrogram.stages[0],
        # transformers checkpoints a layer's forward, inside its hooks: count a module within the layer.
        "text": model.text.backbone.encoder.layer[1].attention,
    }
    counts = {name: [0] for name in units}
    for name, unit in units.items():
        unit.register_forward_pre_hook(lambda *_, c=counts[name]: c.__setitem__(0, c[0] + 1))
    return counts


def _train_step(model: MUSER, batch: dict) -> tuple[torch.Tensor, dict, dict]:
    torch.manual_seed(123)  # the same SpecAugment masks and dropout draws for both models
    loss, _ = TriModalLoss(terms=("at", "st", "as"), impl="reference")(
        model(batch), torch.tensor([0, 1, 2, 0])
    )
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return loss.detach(), grads, buffers


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_same_loss_gradients_and_batchnorm_statistics(padded):
    plain = _model()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    batch = _batch(plain, padded)
    calls = _calls(checkpointed)

    want_loss, want_grads, want_buffers = _train_step(plain, batch)
    got_loss, got_grads, got_buffers = _train_step(checkpointed, batch)

    # Each checkpointed unit ran twice: once forward, once recomputed in the backward.
    assert {name: c[0] for name, c in calls.items()} == {"waveform": 2, "spectrogram": 2, "text": 2}
    torch.testing.assert_close(got_loss, want_loss, rtol=0, atol=0)
    assert got_grads.keys() == want_grads.keys() and len(want_grads) == len(list(plain.parameters()))
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-6, atol=1e-7, msg=name)
    # Recomputing must not update BatchNorm's running statistics a second time.
    for name, buffer in want_buffers.items():
        torch.testing.assert_close(got_buffers[name], buffer, rtol=0, atol=0, msg=name)


def test_inactive_in_eval_mode_and_when_switched_off():
    model = _model()
    model.set_grad_checkpointing(True)
    assert model.text.grad_checkpointing and model.waveform.grad_checkpointing
    batch = _batch(model, padded=False)
    calls = _calls(model)
    model.eval()
    model(batch)["audio"].sum().backward()  # gradients in eval mode (as probes do): no recomputation
    assert all(c[0] == 1 for c in calls.values())
    model.train()
    model.set_grad_checkpointing(False)
    model(batch)["text"].sum().backward()
    assert all(c[0] == 2 for c in calls.values())
    assert not model.text.grad_checkpointing
