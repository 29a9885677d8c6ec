"""Kernels that run outside ``torch.compile``'s graphs, without importing torch._dynamo until compiling.

numba's dispatch, liger's and our Triton autograd Functions and mamba_ssm's C++ extension are not for dynamo
to trace: a compiled model calls them eagerly between its graphs (a graph break, never a tracing failure).
``torch.compiler.disable`` does that, but applied at import time it imports torch._dynamo, ~3.5 s on a CPU
(more than torch itself), in every process that imports the model: each CLI command, SLURM job and eval.
:func:`outside_compiled_graphs` applies it only when dynamo is tracing, where dynamo is loaded already.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def outside_compiled_graphs(fn: F) -> F:
    """``fn``, called as is in eager code and through ``torch.compiler.disable`` under ``torch.compile``."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        return torch.compiler.disable(fn)(*args, **kwargs)

    return call  # type: ignore[return-value]
