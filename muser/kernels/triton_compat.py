"""Every Triton name MUSER's kernels use that is not public API, looked up in one place.

The kernels must run under Triton's interpreter without TRITON_INTERPRET=1 (CI tests them on CPU next to
compiled code), and the compile check needs Triton's ahead-of-time compiler. Both reach into Triton
internals that may move in any release; when one does, importing this module fails with one sentence
naming the missing piece, instead of a kernel failing deep inside a training run. Tested with Triton 3.8.
"""

from __future__ import annotations

import importlib
from typing import Any

import triton


def lookup(path: str) -> Any:
    """The object at a dotted path such as "triton.language.standard._sum_combine", or an ImportError that
    names it and says what to do."""
    module_path, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_path), attr)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"muser.kernels needs {path}, which Triton {triton.__version__} does not have ({exc}); install "
            "the Triton MUSER was tested with (3.8) or update muser/kernels/triton_compat.py"
        ) from None


# Combine functions Triton's interpreter recognises and runs as numpy sums / maxima: tl.reduce(x, axis, SUM)
# is what tl.sum does, but tl.sum is itself a @jit function, which an interpreted kernel cannot call.
SUM = lookup("triton.language.standard._sum_combine")
MAX = lookup("triton.language.standard._elementwise_max")

InterpretedFunction = lookup("triton.runtime.interpreter.InterpretedFunction")
JITFunction = lookup("triton.runtime.jit.JITFunction")
# The type string Triton's launcher derives from an argument ("*bf16", "i32", "fp32"): the compile check
# records what the host code passes and compiles exactly that.
arg_type = lookup("triton.runtime.jit.mangle_type")

# Ahead-of-time compilation for a GPU this machine does not have (tools.kernel_aot).
ASTSource = lookup("triton.compiler.ASTSource")
GPUTarget = lookup("triton.backends.compiler.GPUTarget")

_RUNTIME_KNOBS = lookup("triton.knobs.runtime")
_NVIDIA_KNOBS = lookup("triton.knobs.nvidia")


def interpret_requested() -> bool:
    """Whether TRITON_INTERPRET=1 asks every launch to go through the interpreter."""
    return bool(_RUNTIME_KNOBS.interpret)


def interpreted(kernel: Any) -> Any:
    """The interpreter's version of a @triton.jit kernel, whatever TRITON_INTERPRET said at import time."""
    return InterpretedFunction(kernel.fn)


class _Helper(JITFunction):
    """A @jit device function that interpreted kernels can call too.

    The compiler inlines it like any @triton.jit function (it is one); a plain JITFunction refuses to be
    called from Python, which is what an interpreted kernel does, so this one runs its body interpreted.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not hasattr(self, "_interpreted"):
            self._interpreted = InterpretedFunction(self.fn)
        return self._interpreted(*args, **kwargs)


def helper(fn: Any) -> Any:
    """Decorator for device functions shared by the kernels (instead of @triton.jit)."""
    return _Helper(fn)


def max_shared_memory(device_index: int) -> int:
    """Shared memory per block (bytes, the opt-in maximum) of a CUDA device, as Triton's launcher sees it."""
    return int(triton.runtime.driver.active.utils.get_device_properties(device_index)["max_shared_mem"])


def capture_ptxas_log(enabled: bool) -> None:
    """Make the compiler print ptxas' -v report (registers, spills) to stdout, where aot.py reads it."""
    _NVIDIA_KNOBS.dump_ptxas_log = enabled


__all__ = [
    "ASTSource",
    "GPUTarget",
    "MAX",
    "SUM",
    "arg_type",
    "capture_ptxas_log",
    "helper",
    "interpret_requested",
    "interpreted",
    "lookup",
    "max_shared_memory",
]
