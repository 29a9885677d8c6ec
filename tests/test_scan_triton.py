"""The ``triton`` selective-scan backend (harness/kernels/scan_triton.py) on CPU, in Triton's interpreter.

TRITON_INTERPRET=1 makes ``triton.jit`` run each program of a kernel in Python on CPU tensors: the same
kernel source, its masks, strides, chunk carries and atomics, checked here against ``scan_reference`` in
values and in every gradient (fp32 and bf16 inputs, ragged lengths and channel counts, a channel-major
layout, a gradient on the last state), and through a tiny model. Speed, and parity with mamba_ssm's kernel,
are for the GPU (tests/test_gpu.py, ``ablate bench scan``).
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from harness.kernels.selective_scan import resolve_backend, selective_scan
from harness.model import HybridLM
from harness.presets import get_preset

pytest.importorskip("triton", reason="needs the triton package (the dev extra has it)")
pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="runs the kernels in Triton's interpreter (tests/conftest.py sets it where there is no GPU; on a "
    "GPU, tests/test_gpu.py runs them for real)",
)
NAMES = ["y", "last", "u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def _inputs(batch, dim, d_state, length, dtype, gen):
    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    return {
        "u": rand(batch, dim, length).to(dtype),
        "delta": rand(batch, dim, length, scale=0.5).to(dtype),
        "A": -torch.rand(dim, d_state, generator=gen) * 4 - 0.1,
        "B": rand(batch, d_state, length).to(dtype),
        "C": rand(batch, d_state, length).to(dtype),
        "D": rand(dim),
        "z": rand(batch, dim, length).to(dtype),
        "delta_bias": rand(dim, scale=0.5),
    }


def _run(backend, inputs, gated, softplus, last_grad, seed=1):
    """y, the last state and the gradients of every input, for one backend on leaf copies of ``inputs``."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    if not gated:
        leaves.pop("z"), leaves.pop("D"), leaves.pop("delta_bias")
    y, last = selective_scan(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves.get("D"),
        z=leaves.get("z"), delta_bias=leaves.get("delta_bias"), delta_softplus=softplus,
        return_last_state=True, backend=backend,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    loss = (y.float() * torch.randn(y.shape, generator=gen)).sum()
    if last_grad:
        loss = loss + (last * torch.randn(last.shape, generator=gen)).sum()
    loss.backward()
    grads = {k: v.grad.float() for k, v in leaves.items()}
    return {"y": y.detach().float(), "last": last.detach(), **grads}


@pytest.mark.parametrize(
    "batch, dim, d_state, length, gated, softplus, last_grad",
    [
        (1, 20, 16, 70, True, True, False),  # 3 chunks, the last ragged; 2 channel blocks, the last ragged
        (2, 8, 5, 33, False, False, True),  # d_state padded to 8; a gradient on the last state
        (1, 16, 16, 64, True, True, True),  # whole chunks and blocks
        (3, 7, 16, 5, True, True, False),  # shorter than one chunk
    ],
)
def test_fp32_values_and_every_gradient_match_the_reference(
    batch, dim, d_state, length, gated, softplus, last_grad
):
    inputs = _inputs(batch, dim, d_state, length, torch.float32, torch.Generator().manual_seed(0))
    if not softplus:
        inputs["delta"] = inputs["delta"].abs() * 0.2  # a positive step size, as softplus would give
    ours = _run("triton", inputs, gated, softplus, last_grad)
    ref = _run("reference", inputs, gated, softplus, last_grad)
    assert ours.keys() == ref.keys()
    for name in ref:
        scale = ref[name].abs().max().clamp(min=1.0)
        assert (ours[name] - ref[name]).abs().max() / scale < 1e-5, name


def test_bf16_inputs_and_a_channel_major_layout():
    """Mamba's u and z are channel-major views of (batch, L, d_inner) memory; bf16 as in training. The
    kernel accumulates in fp32 like the reference, so only the bf16 outputs' rounding differs."""
    inputs = _inputs(1, 24, 16, 40, torch.bfloat16, torch.Generator().manual_seed(0))
    for name in ("u", "z"):
        inputs[name] = inputs[name].transpose(1, 2).contiguous().transpose(1, 2)
    ours = _run("triton", inputs, gated=True, softplus=True, last_grad=False)
    ref = _run("reference", inputs, gated=True, softplus=True, last_grad=False)
    for name in ref:
        scale = ref[name].abs().max().clamp(min=1.0)
        tol = 2e-2 if name in ("y", "u", "delta", "z") else 1e-5  # bf16 outputs; fp32 sums otherwise
        assert (ours[name] - ref[name]).abs().max() / scale < tol, name


def test_out_keeps_a_channel_major_layout():
    """Written where the next op reads it, as mamba_ssm's kernel does: no copy of u's layout."""
    u = torch.randn(2, 40, 16).transpose(1, 2)  # (batch, d_inner=16, L=40), channel-major
    delta = torch.rand(2, 16, 40) * 0.1
    A, B, C = -torch.rand(16, 4), torch.randn(2, 4, 40), torch.randn(2, 4, 40)
    from harness.kernels.scan_triton import selective_scan_triton

    out = selective_scan_triton(u, delta, A, B, C)
    assert out.stride() == u.stride()
    torch.testing.assert_close(out, selective_scan(u, delta, A, B, C, backend="reference"))


def test_a_small_hybrid_trains_through_the_triton_backend_as_through_the_reference():
    """tiny-1to7's layers, two of them and narrower: the interpreter runs a program at a time, in Python."""
    torch.manual_seed(0)
    model = HybridLM(dataclasses.replace(get_preset("tiny-1to7"), d_model=32, pattern="M-*-"))
    ids = torch.randint(0, model.cfg.vocab_size, (1, 24))  # one chunk: the chunk carry is tested above
    results = {}
    for backend in ("triton", "reference"):
        model.zero_grad()
        model.set_scan_backend(backend)
        out = model(ids, targets=ids)
        out.loss.backward()
        results[backend] = (out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (logits, grads), (ref_logits, ref_grads) = results["triton"], results["reference"]
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_backend_is_refused_on_a_cpu_outside_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="'triton' selective-scan backend needs CUDA tensors"):
        resolve_backend("triton", torch.device("cpu"))


def test_the_layer_benchmark_runs_and_compares_on_a_cpu():
    """``ablate bench scan --device cuda``'s code, run on a CPU with the reference first (no timing meant)."""
    from harness.benchmarks.scan import format_layer_scan_benchmark, run_layer_scan_benchmark

    result = run_layer_scan_benchmark(
        16, 4, batch=1, seq_len=20, repeats=1, dtype=torch.float32, backends=("reference", "triton"),
        device="cpu", verbose=False,
    )  # fmt: skip
    rows = {row["backend"]: row for row in result["rows"]}
    assert rows["reference"]["speedup"] == 1.0 and rows["triton"]["total_ms"] > 0
    grads = {"du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"}
    assert set(rows["triton"]["max_rel_diff"]) == {"y", *grads}
    assert max(rows["triton"]["max_rel_diff"].values()) < 1e-5
    text = format_layer_scan_benchmark(result)
    assert "on cpu" in text.splitlines()[0] and text.splitlines()[-1].startswith("triton")
