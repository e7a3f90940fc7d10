"""The two losses behind one public function each, and the decision of where they run.

`contrastive_loss` (CLIP's softmax loss) and `sigmoid_loss` (SigLIP's) run fused Triton kernels on CUDA and
their PyTorch references elsewhere. Whether Triton can run is decided once per process (`_triton_mode`);
CUDA tensors then run compiled kernels and CPU tensors the same kernels under the Triton interpreter
(slow: for tests). Tests force a path with `impl=` or by setting `_override_impl`, as nanochat's
flash-attention dispatch does.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from muser.kernels.contrastive_ref import contrastive_loss_ref
from muser.kernels.sigmoid_ref import sigmoid_loss_ref

__all__ = ["contrastive_loss", "resolved_impl", "sigmoid_loss"]

_IMPLS = ("auto", "triton", "reference")

# Tests (and users chasing a numerical question) set this to "triton" or "reference" to override "auto".
_override_impl: str | None = None


@functools.cache
def _triton_mode() -> tuple[str | None, str]:
    """("native" | "interpret" | None, reason), decided once per process.

    "native": CUDA tensors run compiled kernels (CPU tensors still run under the interpreter);
    "interpret": no CUDA, or TRITON_INTERPRET=1: every launch goes through Triton's interpreter.
    """
    if importlib.util.find_spec("triton") is None:
        return None, "Triton is not installed (pip install triton, Linux only)"
    import triton

    if torch.cuda.is_available() and not triton.knobs.runtime.interpret:
        return "native", "Triton runs natively on CUDA tensors and interpreted on CPU tensors"
    return "interpret", "Triton runs under its interpreter"


def _triton(loss: str = "contrastive") -> ModuleType:
    """The Triton module of a loss ("contrastive" or "sigmoid"), imported on first use."""
    if loss == "sigmoid":
        from muser.kernels import sigmoid_triton

        return sigmoid_triton
    from muser.kernels import contrastive_triton

    return contrastive_triton


def _check_case(loss: str, fn, device: str) -> list[Tensor]:
    """Loss and gradients of fn on a small odd case (37 x 37 x 48, duplicate ids) on device."""
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(37, 48, generator=gen), dim=-1).to(device).requires_grad_()
    k = F.normalize(torch.randn(37, 48, generator=gen), dim=-1).to(device).requires_grad_()
    ids = torch.randint(0, 30, (37,), generator=gen).to(device)
    scale = torch.tensor(20.0, device=device, requires_grad=True)
    params = [q, k, scale]
    if loss == "sigmoid":
        params.append(torch.tensor(-10.0, device=device, requires_grad=True))
        value = fn(q, k, scale, params[-1], ids, ids, 0)
    else:
        value = fn(q, k, scale, ids, ids, 0, True)
    value.backward()
    return [value.detach(), *(p.grad for p in params)]


@functools.cache
def _self_check(device: str, loss: str = "contrastive") -> bool:
    """Run the Triton path of a loss once on a small odd case (forward and backward) against the reference.

    Called on the first "auto" use per (device, loss): a kernel that fails to compile or disagrees on this
    GPU (driver, Triton version, architecture) warns once and leaves "auto" on the reference for the
    process, instead of killing a training run. impl="triton" never falls back.
    """
    name = f"{loss}_loss"
    reference = {"contrastive": contrastive_loss_ref, "sigmoid": sigmoid_loss_ref}[loss]
    try:
        got = _check_case(loss, getattr(_triton(loss), f"{name}_triton"), device)
    except Exception as exc:  # any failure of the fused path means "use the reference"
        warnings.warn(
            f"{name}: the Triton kernels failed on {device} ({type(exc).__name__}: {exc}); "
            "impl='auto' uses the PyTorch reference in this process",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    for a, b in zip(got, _check_case(loss, reference, device), strict=True):
        if not torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4):
            warnings.warn(
                f"{name}: the Triton kernels disagree with the reference on {device} "
                f"(max error {float((a.float() - b.float()).abs().max()):.2e}); "
                "impl='auto' uses the PyTorch reference in this process",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
    return True


def _resolve(impl: str, device: torch.device, loss: str = "contrastive") -> str:
    if impl not in _IMPLS:
        raise ValueError(f"{loss}_loss: impl must be one of {', '.join(_IMPLS)}, got {impl!r}")
    if impl == "auto" and _override_impl is not None:
        impl = _override_impl
    if impl == "reference":
        return "reference"
    if impl == "auto":
        # The interpreter is for testing only: "auto" uses Triton when it runs natively on a CUDA tensor.
        if device.type != "cuda":
            return "reference"
        if _triton_mode()[0] != "native":
            return "reference"
        if device.index is None:
            # "cuda" and the tensors' "cuda:0" are one GPU: one self-check (and one outcome) for both, so
            # what resolved_impl reports is what the loss calls then run (seen on an H200: two checks).
            device = torch.device("cuda", torch.cuda.current_device())
        return "triton" if _self_check(str(device), loss) else "reference"
    mode, reason = _triton_mode()
    if mode is None:
        raise RuntimeError(f"{loss}_loss: impl='triton' cannot run here ({reason}); use impl='reference'")
    return "triton"


def resolved_impl(device: torch.device | str, loss: str = "contrastive", impl: str = "auto") -> str:
    """Which implementation ("triton" or "reference") a `loss` call ("contrastive" or "sigmoid") with this
    `impl` runs on tensors of `device` in this process. For "auto" on CUDA this is the outcome of the
    once-per-process self-check (run now if no loss has run yet), so a run can record what trained it."""
    return _resolve(impl, torch.device(device), loss)


def contrastive_loss(
    q: Tensor,
    k: Tensor,
    logit_scale: Tensor,
    q_ids: Tensor | None = None,
    k_ids: Tensor | None = None,
    row_offset: int = 0,
    symmetric: bool = True,
    impl: str = "auto",
) -> Tensor:
    """Duplicate-aware InfoNCE with exact gradients for q, k and logit_scale; returns an fp32 scalar.

    q: (M, D) and k: (N, D) L2-normalised embeddings (fp32, bf16 or fp16; accumulation is fp32).
    logit_scale: scalar tensor (the exp'd inverse temperature); s_ij = logit_scale * <q_i, k_j>.
    q_ids: (M,), k_ids: (N,) integer caption ids; j is a positive of row i when k_ids[j] == q_ids[i], so
    identical captions are not negatives. Without ids the positive of row i is column row_offset + i.
    Row loss_i = logsumexp_j s_ij - mean_{j in P(i)} s_ij. With symmetric and M == N the result is
    (mean row loss + mean column loss) / 2, otherwise the mean row loss. A row (or, symmetric, a column)
    without a positive is a ValueError naming it.
    impl: "auto" (Triton on CUDA, reference elsewhere), "triton" (CPU tensors run under the Triton
    interpreter) or "reference".
    """
    if _resolve(impl, q.device) == "reference":
        return contrastive_loss_ref(q, k, logit_scale, q_ids, k_ids, row_offset, symmetric)
    return _triton().contrastive_loss_triton(q, k, logit_scale, q_ids, k_ids, row_offset, symmetric)


def sigmoid_loss(
    q: Tensor,
    k: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor,
    q_ids: Tensor | None = None,
    k_ids: Tensor | None = None,
    row_offset: int = 0,
    impl: str = "auto",
) -> Tensor:
    """SigLIP's pairwise sigmoid loss, exact gradients for q, k, logit_scale and logit_bias; an fp32 scalar.

    q: (M, D) and k: (N, D) L2-normalised embeddings (fp32, bf16 or fp16; accumulation is fp32).
    logit_scale, logit_bias: scalar tensors; z_ij = logit_scale * <q_i, k_j> + logit_bias.
    loss = -(1/M) sum_ij log sigmoid(t_ij z_ij), t_ij = +1 when k_ids[j] == q_ids[i] (caption ids, so
    identical captions are positives), or without ids when j == row_offset + i; otherwise -1.
    Distributed: local rows against the gathered columns with row_offset = rank * M; the mean over ranks is
    the loss of one process at the global batch.
    impl: "auto" (Triton on CUDA, reference elsewhere), "triton" (CPU tensors run under the Triton
    interpreter) or "reference".
    """
    if _resolve(impl, q.device, "sigmoid") == "reference":
        return sigmoid_loss_ref(q, k, logit_scale, logit_bias, q_ids, k_ids, row_offset)
    return _triton("sigmoid").sigmoid_loss_triton(q, k, logit_scale, logit_bias, q_ids, k_ids, row_offset)
