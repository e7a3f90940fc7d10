"""muser.kernels.triton_compat: the Triton internals the kernels use still exist and still behave."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed")
tl = pytest.importorskip("triton.language")

from muser.kernels import triton_compat as compat  # noqa: E402


@compat.helper
def _double(x):
    return x * 2.0


@triton.jit
def _reduce_kernel(X, OUT, N: tl.constexpr):
    offs = tl.arange(0, N)
    x = _double(tl.load(X + offs[:, None] * N + offs[None, :]))
    tl.store(OUT + offs, tl.reduce(x, 1, compat.SUM))
    tl.store(OUT + N + offs, tl.reduce(x, 1, compat.MAX))


def test_reductions_and_helpers_run_under_the_interpreter():
    # Without TRITON_INTERPRET=1, as CI runs the kernels: the combine functions must still be the ones the
    # interpreter maps to numpy reductions, and a shared @helper must be callable from an interpreted kernel.
    x = torch.randn(16, 16)
    out = torch.empty(32)
    compat.interpreted(_reduce_kernel)[(1,)](x, out, N=16)
    torch.testing.assert_close(out[:16], 2 * x.sum(1))
    torch.testing.assert_close(out[16:], 2 * x.amax(1))
    assert isinstance(_double, compat.JITFunction)  # still an ordinary device function for the compiler


def test_argument_types_are_what_the_launcher_sees():
    assert compat.arg_type(torch.empty(2, dtype=torch.bfloat16)) == "*bf16"
    assert compat.arg_type(torch.empty(2, dtype=torch.int64)) == "*i64"
    assert compat.arg_type(7) == "i32"
    assert compat.arg_type(0.5) == "fp32"


def test_a_moved_internal_is_one_clear_import_error():
    with pytest.raises(ImportError, match=r"needs triton\.language\.standard\._no_such_combine, which"):
        compat.lookup("triton.language.standard._no_such_combine")
    with pytest.raises(ImportError, match="update muser/kernels/triton_compat.py"):
        compat.lookup("triton.no_such_module.Thing")


def test_ptxas_log_switch_round_trips():
    compat.capture_ptxas_log(True)
    try:
        assert triton.knobs.nvidia.dump_ptxas_log
    finally:
        compat.capture_ptxas_log(False)
    assert not triton.knobs.nvidia.dump_ptxas_log
