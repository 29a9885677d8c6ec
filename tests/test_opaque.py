"""harness/kernels/opaque.py: kernels kept out of torch.compile's graphs without importing torch._dynamo at
import time (it costs more than torch itself, in every CLI command, job and eval process)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from harness.kernels.opaque import outside_compiled_graphs


def test_the_model_evals_and_cli_import_without_dynamo():
    code = (
        "import sys, harness.model, harness.training.trainer, evals.suites, ablate.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_a_wrapped_function_runs_eagerly_between_compiled_graphs():
    seen = []

    @outside_compiled_graphs
    def doubled_in_numpy(x: torch.Tensor) -> torch.Tensor:
        """numpy, which dynamo would otherwise trace into its graph."""
        seen.append(torch.compiler.is_compiling())
        return torch.from_numpy(np.asarray(x.numpy()) * 2.0)

    def f(x: torch.Tensor) -> torch.Tensor:
        return doubled_in_numpy(x.sin()).cos() + 1

    x = torch.randn(8)
    assert torch.equal(doubled_in_numpy(x), x * 2) and seen == [False]
    torch._dynamo.reset()
    explained = torch._dynamo.explain(f)(x)
    assert (explained.graph_count, explained.graph_break_count) == (2, 1)
    compiled = torch.compile(f, backend="eager")
    assert torch.allclose(compiled(x), f(x))
    assert not any(seen)  # every call ran as plain Python, never traced
    assert doubled_in_numpy.__name__ == "doubled_in_numpy" and "numpy" in doubled_in_numpy.__doc__
