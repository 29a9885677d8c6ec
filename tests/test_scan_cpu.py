"""The compiled CPU selective scan (harness/kernels/scan_cpu.py) against the sequential reference.

Outputs, last state and the gradients of u, delta, A, B, C must agree with ``scan_reference`` within fp32
tolerance, on awkward shapes (L = 1, batch 1, channel counts that are not a multiple of the tile width,
non-contiguous inputs), through the full dispatcher, with both threads, and where delta * A is large; the
dispatcher's initial state (added by linearity) against the reference started from it.
No timing here: speed lives in ``ablate bench scan`` (harness/benchmarks/scan.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.kernels import scan_cpu as scan_cpu_mod
from harness.kernels.scan_cpu import scan_cpu, tile_width
from harness.kernels.selective_scan import (
    initial_state_terms,
    scan_reference,
    selective_scan,
    selective_state_step,
)

pytest.importorskip("numba")

RTOL, ATOL = 1e-4, 1e-5
NAMES = ("u", "delta", "A", "B", "C")


def make_inputs(batch, d_inner, d_state, L, dtype=torch.float32, delta_max=1.0, a_max=5.0):
    u = torch.randn(batch, d_inner, L, dtype=dtype)
    delta = torch.rand(batch, d_inner, L, dtype=dtype) * delta_max
    A = -torch.rand(d_inner, d_state, dtype=dtype) * a_max
    B = torch.randn(batch, d_state, L, dtype=dtype)
    C = torch.randn(batch, d_state, L, dtype=dtype)
    return u, delta, A, B, C


def run(fn, inputs, dy=None, dlast=None, use_y=True, use_last=True):
    """Forward and backward through fn; returns [y, last, grad u, delta, A, B, C] (None where no grad)."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    y, last = fn(*leaves)
    outs, grads = [], []
    if use_y:
        outs.append(y)
        grads.append(torch.randn_like(y) if dy is None else dy)
    if use_last:
        outs.append(last)
        grads.append(torch.randn_like(last) if dlast is None else dlast)
    torch.autograd.backward(outs, grads)
    return [y.detach(), last.detach()] + [x.grad for x in leaves]


def assert_match(got, want, names=("y", "last_state", *(f"d{n}" for n in NAMES))):
    for name, g, w in zip(names, got, want, strict=True):
        if w is None:  # the reference has no path from this input to the used outputs
            assert g is None or not g.any(), name
            continue
        assert g.shape == w.shape and g.dtype == w.dtype, (name, g.shape, w.shape, g.dtype, w.dtype)
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, w, rtol=RTOL, atol=ATOL, msg=lambda m, name=name: f"{name}: {m}")


def compare(inputs, **kw):
    g = torch.Generator().manual_seed(1)
    batch, d_inner, L = inputs[0].shape
    dy = torch.randn(batch, d_inner, L, generator=g, dtype=inputs[0].dtype)
    dlast = torch.randn(batch, d_inner, inputs[2].shape[1], generator=g, dtype=inputs[0].dtype)
    want = run(scan_reference, inputs, dy, dlast, **kw)
    got = run(scan_cpu, inputs, dy, dlast, **kw)
    assert_match(got, want)
    return got


@pytest.mark.parametrize(
    "batch, d_inner, d_state, L",
    [
        (2, 5, 3, 7),  # fewer channels than the narrowest tile
        (1, 70, 4, 1),  # L = 1, batch 1, a partly padded second tile
        (3, 128, 16, 33),  # the tiny preset's d_inner and d_state
        (2, 96, 16, 20),  # 32-lane tiles
    ],
)
def test_matches_reference(batch, d_inner, d_state, L):
    compare(make_inputs(batch, d_inner, d_state, L))


def test_non_contiguous_inputs():
    batch, d_inner, d_state, L = 2, 40, 6, 9
    u = torch.randn(batch, L, d_inner).transpose(1, 2)
    delta = torch.rand(batch, d_inner, 2 * L)[..., ::2]
    A = -torch.rand(d_state, d_inner).t() * 3
    B = torch.randn(batch, L, d_state).transpose(1, 2)
    C = torch.randn(d_state, batch, L).transpose(0, 1)
    assert not any(x.is_contiguous() for x in (u, delta, A, B, C))
    compare((u, delta, A, B, C))


def test_only_one_output_used():
    inputs = make_inputs(2, 24, 4, 11)
    compare(inputs, use_y=False)  # y unused: autograd hands the backward no dy
    compare(inputs, use_last=False)  # last state unused


def test_grads_only_where_required():
    u, delta, A, B, C = make_inputs(2, 16, 4, 6)
    u.requires_grad_()
    y, last = scan_cpu(u, delta, A, B, C)
    (y.sum() + last.sum()).backward()
    u_ref = u.detach().clone().requires_grad_()
    y_ref, last_ref = scan_reference(u_ref, delta, A, B, C)
    (y_ref.sum() + last_ref.sum()).backward()
    torch.testing.assert_close(u.grad, u_ref.grad, rtol=RTOL, atol=ATOL)


def test_large_delta_times_A_is_finite_and_exact():
    """delta * A down to -2000: exp underflows to exactly 0, the state resets each step, nothing overflows."""
    batch, d_inner, d_state, L = 2, 12, 8, 64
    u, _, _, B, C = make_inputs(batch, d_inner, d_state, L)
    delta = torch.rand(batch, d_inner, L) * 20
    delta[:, :4] *= 1e-3  # some channels with small steps, for contrast
    A = torch.full((d_inner, d_state), -100.0)
    got = compare((u, delta, A, B, C))
    assert all(torch.isfinite(x).all() for x in got)


def test_selective_scan_dispatcher_cpu_vs_reference():
    batch, d_inner, d_state, L = 2, 48, 8, 17
    u, delta, A, B, C = make_inputs(batch, d_inner, d_state, L)
    extra = {
        "D": torch.randn(d_inner),
        "z": torch.randn(batch, d_inner, L),
        "delta_bias": torch.randn(d_inner),
    }
    delta = torch.randn(batch, d_inner, L)  # raw: softplus(delta + delta_bias) inside
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    results = {}
    for backend in ("reference", "cpu"):
        leaves = {
            k: v.detach().clone().requires_grad_()
            for k, v in zip(names, (u, delta, A, B, C, *extra.values()), strict=True)
        }
        y, last = selective_scan(
            *(leaves[k] for k in NAMES),
            D=leaves["D"],
            z=leaves["z"],
            delta_bias=leaves["delta_bias"],
            delta_softplus=True,
            return_last_state=True,
            backend=backend,
        )
        g = torch.Generator().manual_seed(2)
        torch.autograd.backward(
            (y, last), (torch.randn(y.shape, generator=g), torch.randn(last.shape, generator=g))
        )
        results[backend] = [y.detach(), last.detach()] + [leaves[k].grad for k in names]
    assert_match(results["cpu"], results["reference"], names=("y", "last_state", *(f"d{k}" for k in names)))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_initial_state_by_linearity_matches_reference_and_steps(backend):
    """Starting from h0 via the linearity correction (the path the CUDA kernel takes too) equals the
    reference recurrence started from h0 and the one-token decoding step, with D and the z gate applied
    after the correction; the correction's sub-blocks change nothing."""
    batch, d_inner, d_state, L = 2, 40, 8, 23
    u, _, A, B, C = make_inputs(batch, d_inner, d_state, L)
    delta, z = torch.randn(batch, d_inner, L), torch.randn(batch, d_inner, L)
    D, bias, h0 = torch.randn(d_inner), torch.randn(d_inner), torch.randn(batch, d_inner, d_state)
    y, last = selective_scan(
        u, delta, A, B, C, D, z, bias, True, return_last_state=True, backend=backend, initial_state=h0
    )
    soft = torch.nn.functional.softplus(delta + bias[None, :, None])
    y_ref, last_ref = scan_reference(u, soft, A, B, C, initial_state=h0)
    y_ref = (y_ref + u * D[None, :, None]) * torch.nn.functional.silu(z)
    torch.testing.assert_close(y, y_ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(last, last_ref, rtol=RTOL, atol=ATOL)
    state = h0.clone()
    steps = [
        selective_state_step(
            state, u[..., t], delta[..., t], A, B[..., t], C[..., t], D, z[..., t], bias, True
        )
        for t in range(L)
    ]
    torch.testing.assert_close(torch.stack(steps, -1), y_ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(state, last_ref, rtol=RTOL, atol=ATOL)
    whole = initial_state_terms(delta, A, C, h0, bias, True, block_elements=1 << 30)
    for blocked, one in zip(
        initial_state_terms(delta, A, C, h0, bias, True, block_elements=1), whole, strict=True
    ):
        torch.testing.assert_close(blocked, one, rtol=1e-6, atol=1e-6)


def test_threads_partial_sums(monkeypatch):
    """Force the multi-threaded path on a small problem: per-thread dA/dB/dC partials, no races."""
    monkeypatch.setattr(scan_cpu_mod, "_MIN_PARALLEL_WORK", 0)
    inputs = make_inputs(3, 70, 5, 13)
    dy, dlast = torch.randn(3, 70, 13), torch.randn(3, 70, 5)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert scan_cpu_mod._n_workers(1, 10) == 2
        threaded = run(scan_cpu, inputs, dy, dlast)
        torch.set_num_threads(1)
        serial = run(scan_cpu, inputs, dy, dlast)
    finally:
        torch.set_num_threads(old)
    assert_match(threaded, run(scan_reference, inputs, dy, dlast))
    assert_match(threaded, serial)


def test_float64_gradcheck():
    inputs = make_inputs(2, 3, 2, 5, dtype=torch.float64, a_max=2.0)
    leaves = tuple(x.clone().requires_grad_() for x in inputs)
    assert torch.autograd.gradcheck(scan_cpu, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)
    y, last = scan_cpu(*inputs)
    assert y.dtype == last.dtype == torch.float64
    y_ref, last_ref = scan_reference(*inputs)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, last_ref, rtol=1e-12, atol=1e-12)


def test_fp32_exp_helper():
    import numba

    expf = numba.njit(scan_cpu_mod._expf32)
    xs = np.concatenate([np.linspace(-110, 92, 200_001), [0.0, -0.0, 1e-8, -1e-8]]).astype(np.float32)
    got = np.array([expf(x) for x in xs])
    want = np.exp(xs.astype(np.float64))
    normal = (want > np.finfo(np.float32).tiny) & (want < np.finfo(np.float32).max)
    assert np.max(np.abs(got[normal] - want[normal]) / want[normal]) < 3e-7
    assert np.all(np.abs(got[~normal & (want < 1)] - want[~normal & (want < 1)]) < 2e-45)  # subnormal range
    assert np.all(got[xs < -104] == 0) and np.all(np.isinf(got[want > 3.5e38]))
    specials = np.array([-np.inf, np.inf, np.nan], np.float32)
    out = [expf(x) for x in specials]
    assert out[0] == 0 and out[1] == np.inf and np.isnan(out[2])


def test_tile_width():
    assert tile_width(128) == 64 and tile_width(96) == 32 and tile_width(5) == 8
    assert all(w in (8, 16, 32, 64) for w in map(tile_width, range(1, 300)))


def test_bad_shapes():
    u, delta, A, B, C = make_inputs(2, 8, 4, 5)
    with pytest.raises(ValueError, match="A must be"):
        scan_cpu(u, delta, A[:4], B, C)
    with pytest.raises(ValueError, match="B must be"):
        scan_cpu(u, delta, A, B[:, :2], C)


def test_missing_numba_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)
    with pytest.raises(ImportError, match=r"needs numba: pip install numba"):
        scan_cpu_mod._import_numba()


def test_importing_the_dispatcher_does_not_import_numba():
    code = (
        "import sys, harness.kernels.selective_scan, harness.kernels.scan_cpu; "
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)


def test_benchmark_smoke():
    from harness.benchmarks.scan import run_scan_benchmark

    res = run_scan_benchmark(d_inner=16, d_state=4, batch=2, seq_len=8, repeats=1, threads=1, verbose=False)
    assert [r["backend"] for r in res["rows"]] == ["reference", "cpu"]
    assert all(v < 1e-4 for v in res["max_abs_diff"].values()), res["max_abs_diff"]
