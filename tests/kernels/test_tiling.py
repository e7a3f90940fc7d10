"""What the launcher reports about autotuning (muser/kernels/tiling.py), without a GPU: the tile shape the
autotuner chose per launch shape, read from Triton's own autotuner, and nothing under the interpreter."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

from muser.kernels import contrastive_triton, sigmoid_triton  # noqa: E402
from muser.kernels.tiling import BACKWARD_SHAPES, FORWARD_SHAPES, config  # noqa: E402


@pytest.mark.parametrize("module", [contrastive_triton, sigmoid_triton], ids=["softmax", "sigmoid"])
def test_tuned_reports_the_autotuners_choice_and_the_backwards_d_slices(module):
    launcher = module.make_launcher(module._forward_kernel, module._backward_kernel, interpret=False)
    forward, backward = launcher.kernels["forward", 2], launcher.kernels["backward", 2]
    # What Triton's Autotuner stores after timing the candidates (a renamed attribute fails here first).
    assert isinstance(forward.cache, dict) and isinstance(backward.cache, dict)
    forward.cache[(4096, 4096, 512, "torch.bfloat16")] = config(FORWARD_SHAPES[2][3])
    backward.cache[(4096, 4096, 512, "torch.bfloat16")] = config(BACKWARD_SHAPES[2][1])
    backward.cache[(1, 4096, 512, "torch.bfloat16")] = config(BACKWARD_SHAPES[2][0])  # another shape
    rows = launcher.tuned(4096, 4096, 512)
    by_kernel = {r["kernel"].rsplit(".", 1)[1]: r for r in rows}
    assert len(rows) == 2
    assert by_kernel["_forward_kernel"] | {"kernel": None} == {
        "kernel": None, "bytes_per_element": 2, "m_n_d": [4096, 4096, 512],
        "BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3,
    }  # fmt: skip
    back = by_kernel["_backward_kernel"]
    assert (back["BLOCK_DV"], back["d_slices"]) == (128, 4)
    assert "d_slices" not in by_kernel["_forward_kernel"]


def test_tuned_is_empty_under_the_interpreter():
    assert contrastive_triton._launcher(True).tuned(16, 16, 16) == []
