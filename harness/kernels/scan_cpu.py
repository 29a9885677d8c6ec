"""Compiled CPU selective scan: the plain Mamba-1 time loop in numba, with a hand-written backward.

    h_t[n] = exp(delta_t * A[d, n]) * h_{t-1}[n] + delta_t * B_t[n] * u_t        y_t = sum_n C_t[n] * h_t[n]

Why this design:

* **Exact and overflow-free.** It runs the same recurrence as ``scan_reference``, one step at a time, in the
  input dtype (fp32, or fp64 if any input is fp64). Chunked closed forms (``exp(-cumsum(delta * A))`` and
  friends) overflow once ``delta * A`` sums past about -88 in fp32; this loop only evaluates
  ``exp(delta_t * A)`` (<= 1 for the usual negative A), so a huge ``delta * A`` just resets the state.
  Outputs and grads agree with the reference to ~1e-6 absolute on unit-scale inputs.
* **Fast.** No per-step Python/ATen dispatch and no autograd graph of L steps. Channels are processed in
  tiles of W lanes (64, or 32/16/8 for narrow layers, see :func:`tile_width`): each tile is transposed into
  a local (L, W) buffer so that the innermost loop runs over channels, unit-stride and free of reductions,
  which LLVM vectorises. fp32 uses a vectorisable Cephes ``expf`` (relative error < 3e-7; exact 0 below
  -104, inf above 88.7, NaN kept); fp64 uses libm's ``exp``. ``fastmath`` is limited to ``contract`` (fused
  multiply-adds): no reassociation, IEEE inf/NaN kept. Work items (batch, tile) are split over
  ``torch.get_num_threads()`` threads: the calling thread plus a small pool (the kernels release the GIL).
  A ``parallel=True``/``prange`` version measured the same speed but costs ~7 s more compile time and
  brings a second OpenMP runtime next to torch's, so plain threads it is.
* **Hand-written backward, O(L * N * W) extra memory per thread.** The forward saves only its inputs. The
  backward recomputes one tile's states into a local (L + 1, N, W) buffer, with the decays
  ``exp(delta * A)`` in another, then runs the adjoint recurrence backwards in time,
  ``G_t = dy_t * C_t + exp(delta_{t+1} A) * G_{t+1}`` (G_{L-1} also gets the last state's grad). dB and dC
  are shared by all channels and dA by the batch, so each thread accumulates into its own partial buffers,
  summed afterwards: no races, no locks.

Measured with ``ablate bench scan`` (harness/benchmarks/scan.py), fp32, batch 8, seq 256, d_state 16, on
a 2-core AMD EPYC (znver3) shared with other jobs (load 1-2), one thread for both backends, best of 10:
fwd+bwd of the scan ~13.5 ms against ~150 ms for the reference loop at d_inner 128 (11x), ~56 ms against
~1.1 s at d_inner 512 (20x); ~10x and ~20x through the full ``selective_scan`` call, whose extra torch
ops are common to both. With 2 threads the kernels alone took 2.3 ms fwd + 4.2 ms bwd at d_inner 128 in a
quiet moment (~23x the reference); end-to-end 2-thread timings on a busy 2-core box swing by 2x or more.

numba is imported lazily, on the first call, so importing this module (or
``harness.kernels.selective_scan``) does not import numba. Kernels are compiled with ``cache=True``: the
first call in a fresh checkout compiles for ~4 s per dtype; later processes load them from __pycache__.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from harness.kernels.opaque import outside_compiled_graphs

__all__ = ["scan_cpu", "tile_width"]

_NUMBA_MISSING = "the 'cpu' scan backend needs numba: pip install numba"

# Below this many multiply-adds (batch * d_inner * L * d_state) threads cost more than they save.
_MIN_PARALLEL_WORK = 1 << 18

# float32 exp constants (Cephes expf). Module-level np.float32 globals are frozen into the kernels as
# constants, so the polynomial stays in fp32 and vectorises.
_EXP_LO = np.float32(-104.0)  # exp(-104) < 2**-150: rounds to 0 in fp32
_EXP_HI = np.float32(89.0)  # exp(89) > fp32 max: overflows to inf
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_P0 = np.float32(1.9875691500e-4)
_P1 = np.float32(1.3981999507e-3)
_P2 = np.float32(8.3334519073e-3)
_P3 = np.float32(4.1665795894e-2)
_P4 = np.float32(1.6666665459e-1)
_P5 = np.float32(5.0000001201e-1)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)


def _exp(x):  # pragma: no cover - a typing stub: numba resolves calls to it through the overload below
    raise NotImplementedError("_exp is only callable from the numba kernels")


def _expf32(x):
    """exp for fp32 without libm calls, so LLVM can vectorise the loop that calls it.

    Range reduction x = k ln2 + r, |r| <= ln2/2, degree-7 polynomial for exp(r), then scale by 2**k in two
    halves so that results in the subnormal range and overflow to inf both come out right.
    """
    xc = min(max(x, _EXP_LO), _EXP_HI)
    fx = np.floor(xc * _LOG2E + _HALF)
    r = xc - fx * _LN2_HI - fx * _LN2_LO
    p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * (r * r) + r + _ONE
    k = np.int32(fx)
    k1 = k >> 1
    k2 = k - k1
    res = p * np.int32((k1 + 127) << 23).view(np.float32) * np.int32((k2 + 127) << 23).view(np.float32)
    return x if x != x else res


def _load_tile(x, d0, w, out):  # pragma: no cover - stub, see _load_tile_impl
    raise NotImplementedError


def _load_tile_impl(x, d0, w, out):
    """out[t, j] = x[d0 + j, t] for j < w, 0 for the padding lanes j >= w. x: (D, L), out: (L, W)."""
    L, W = out.shape
    xs = x[d0 : d0 + w]
    for j in range(w):
        for t in range(L):
            out[t, j] = xs[j, t]
    for t in range(L):
        for j in range(w, W):
            out[t, j] = 0


def _store_tile(tile, d0, w, x):  # pragma: no cover - stub, see _store_tile_impl
    raise NotImplementedError


def _store_tile_impl(tile, d0, w, x):
    """x[d0 + j, t] = tile[t, j] for j < w. tile: (L, W), x: (D, L)."""
    xs = x[d0 : d0 + w]
    for j in range(w):
        for t in range(tile.shape[0]):
            xs[j, t] = tile[t, j]


def _scan_fwd_range(u, delta, A, B, C, y, last, W, i0, i1):
    """Forward over work items [i0, i1); item = (batch b, tile of W channels starting at d0 = c * W).

    Inputs in their natural layouts (u, delta, y: (batch, D, L); A: (D, N); B, C: (batch, N, L); last:
    (batch, D, N)); each tile is transposed into (L, W) so that the inner loop runs over channels.
    """
    D, L = u.shape[1], u.shape[2]
    N = A.shape[1]
    n_tiles = (D + W - 1) // W
    h = np.empty((N, W), dtype=u.dtype)
    At = np.empty((N, W), dtype=u.dtype)
    ut = np.empty((L, W), dtype=u.dtype)
    dt = np.empty((L, W), dtype=u.dtype)
    yt = np.empty((L, W), dtype=u.dtype)
    dtu = np.empty(W, dtype=u.dtype)
    for item in range(i0, i1):
        b = item // n_tiles
        d0 = (item % n_tiles) * W
        w = min(W, D - d0)
        _load_tile(u[b], d0, w, ut)
        _load_tile(delta[b], d0, w, dt)
        _load_tile(A, d0, w, At)
        Bb = B[b]
        Cb = C[b]
        h[:] = 0
        for t in range(L):
            for j in range(W):
                dtu[j] = dt[t, j] * ut[t, j]
                yt[t, j] = 0
            for n in range(N):
                bn = Bb[n, t]
                cn = Cb[n, t]
                for j in range(W):
                    hv = _exp(dt[t, j] * At[n, j]) * h[n, j] + dtu[j] * bn
                    h[n, j] = hv
                    yt[t, j] += cn * hv
        _store_tile(yt, d0, w, y[b])
        _store_tile(h, d0, w, last[b])


def _scan_bwd_range(u, delta, A, B, C, dy, dlast, du, ddelta, dA, dB, dC, W, i0, i1):
    """Backward over work items [i0, i1). du, ddelta (batch, D, L) are written per item; dA (D, N) and
    dB, dC (batch, N, L) are this thread's own partial sums (accumulated into, never shared)."""
    D, L = u.shape[1], u.shape[2]
    N = A.shape[1]
    n_tiles = (D + W - 1) // W
    hs = np.empty((L + 1, N, W), dtype=u.dtype)  # hs[t + 1] = h_t, hs[0] = 0
    aS = np.empty((L, N, W), dtype=u.dtype)  # aS[t] = exp(delta_t * A)
    At = np.empty((N, W), dtype=u.dtype)
    g = np.empty((N, W), dtype=u.dtype)  # dLoss/dh_t
    dAt = np.empty((N, W), dtype=u.dtype)
    tB = np.empty((N, W), dtype=u.dtype)
    tC = np.empty((N, W), dtype=u.dtype)
    ut = np.empty((L, W), dtype=u.dtype)
    dt = np.empty((L, W), dtype=u.dtype)
    dyt = np.empty((L, W), dtype=u.dtype)
    dut = np.empty((L, W), dtype=u.dtype)
    ddt = np.empty((L, W), dtype=u.dtype)
    dtu = np.empty(W, dtype=u.dtype)
    acc_a = np.empty(W, dtype=u.dtype)
    acc_s = np.empty(W, dtype=u.dtype)
    for item in range(i0, i1):
        b = item // n_tiles
        d0 = (item % n_tiles) * W
        w = min(W, D - d0)
        _load_tile(u[b], d0, w, ut)
        _load_tile(delta[b], d0, w, dt)
        _load_tile(dy[b], d0, w, dyt)
        _load_tile(A, d0, w, At)
        _load_tile(dlast[b], d0, w, g)
        Bb = B[b]
        Cb = C[b]
        dBb = dB[b]
        dCb = dC[b]
        # 1. recompute the states of this tile
        hs[0] = 0
        for t in range(L):
            for j in range(W):
                dtu[j] = dt[t, j] * ut[t, j]
            for n in range(N):
                bn = Bb[n, t]
                for j in range(W):
                    av = _exp(dt[t, j] * At[n, j])
                    aS[t, n, j] = av
                    hs[t + 1, n, j] = av * hs[t, n, j] + dtu[j] * bn
        # 2. adjoint recurrence, backwards in time
        dAt[:] = 0
        for tt in range(L):
            t = L - 1 - tt
            for j in range(W):
                dtu[j] = dt[t, j] * ut[t, j]
                acc_a[j] = 0
                acc_s[j] = 0
            for n in range(N):
                bn = Bb[n, t]
                cn = Cb[n, t]
                for j in range(W):
                    gv = g[n, j] + dyt[t, j] * cn  # dLoss/dh_t: from y_t and from h_{t+1}
                    a = aS[t, n, j]
                    ga = gv * hs[t, n, j] * a  # dLoss/d(delta_t * A)
                    tC[n, j] = dyt[t, j] * hs[t + 1, n, j]
                    tB[n, j] = gv * dtu[j]
                    dAt[n, j] += ga * dt[t, j]
                    acc_a[j] += ga * At[n, j]
                    acc_s[j] += gv * bn
                    g[n, j] = gv * a  # carried to h_{t-1}
                # sum the W lanes of tB, tC: halve down to 8 lanes (vectorised), then 8 scalars
                half = W // 2
                while half >= 8:
                    for j in range(half):
                        tB[n, j] += tB[n, j + half]
                        tC[n, j] += tC[n, j + half]
                    half //= 2
                sb = tB[n, 0]
                sc = tC[n, 0]
                for j in range(1, min(W, 8)):
                    sb += tB[n, j]
                    sc += tC[n, j]
                dBb[n, t] += sb
                dCb[n, t] += sc
            for j in range(W):
                ddt[t, j] = acc_a[j] + acc_s[j] * ut[t, j]
                dut[t, j] = acc_s[j] * dt[t, j]
        _store_tile(dut, d0, w, du[b])
        _store_tile(ddt, d0, w, ddelta[b])
        for j in range(w):
            for n in range(N):
                dA[d0 + j, n] += dAt[n, j]


def _import_numba():
    try:
        import numba
    except ImportError as exc:
        raise ImportError(_NUMBA_MISSING) from exc
    return numba


_kernels_lock = threading.Lock()


def _kernels():
    """The (forward, backward) kernels: numba imported and the kernels compiled (or loaded from the cache)
    on first use."""
    with _kernels_lock:  # registers overloads: exactly once, even with concurrent first calls
        return _build_kernels()


@functools.cache
def _build_kernels():
    numba = _import_numba()
    from numba.core import types
    from numba.extending import overload

    expf32 = numba.njit(inline="always", fastmath={"contract"})(_expf32)

    @overload(_exp, inline="always")
    def _exp_overload(x):
        if x == types.float32:
            return lambda x: expf32(x)
        return lambda x: math.exp(x)

    overload(_load_tile)(lambda x, d0, w, out: _load_tile_impl)
    overload(_store_tile)(lambda tile, d0, w, x: _store_tile_impl)

    # fastmath only allows fused multiply-add contraction: no reassociation, NaN/inf semantics kept.
    opts = dict(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
    return numba.njit(**opts)(_scan_fwd_range), numba.njit(**opts)(_scan_bwd_range)


_pool_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None


def _run(fn, args_for, n_items: int, n_workers: int) -> None:
    """Run fn(*args_for(k), i0, i1) over n_workers contiguous item ranges: range 0 on the calling thread,
    the others on a thread pool (the kernels release the GIL)."""
    global _pool
    if n_workers <= 1:
        fn(*args_for(0), 0, n_items)
        return
    bounds = [n_items * k // n_workers for k in range(n_workers + 1)]
    with _pool_lock:
        # a pool does not survive fork (DataLoader workers): one per process, replaced when too small (the
        # old one is dropped, not shut down, in case another caller is still submitting to it)
        if _pool is None or _pool[0] != os.getpid() or _pool[1] < n_workers - 1:
            size = n_workers - 1
            _pool = (os.getpid(), size, ThreadPoolExecutor(size, thread_name_prefix="scan_cpu"))
        pool = _pool[2]
    futures = [pool.submit(fn, *args_for(k), bounds[k], bounds[k + 1]) for k in range(1, n_workers)]
    try:
        fn(*args_for(0), bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


def tile_width(d_inner: int) -> int:
    """Channels per tile, a power of two in [8, 64]: the one with the least padded work, where narrower
    tiles cost more per channel (fwd+bwd at d_inner 128, relative to 64 lanes: 32 lanes 1.07x, 16 lanes
    1.6x, 8 lanes 2.2x; LLVM's vector loop wants at least 32 iterations)."""
    cost = {64: 1.0, 32: 1.07, 16: 1.6, 8: 2.2}
    return min(cost, key=lambda w: (-(-d_inner // w) * w * cost[w], -w))


def _n_workers(work: int, n_items: int) -> int:
    if work < _MIN_PARALLEL_WORK:
        return 1
    return max(1, min(torch.get_num_threads(), n_items))


def _np(x: Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU tensor (no copy)."""
    return x.detach().resolve_neg().numpy()


class _SelectiveScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
        fwd, _ = _kernels()
        batch, D, L = u.shape
        N = A.shape[1]
        W = tile_width(D)
        y = torch.empty_like(u)
        last = u.new_empty(batch, D, N)
        args = tuple(_np(x) for x in (u, delta, A, B, C, y, last))
        n_items = batch * -(-D // W)
        _run(fwd, lambda k: (*args, W), n_items, _n_workers(batch * D * L * N, n_items))
        ctx.save_for_backward(u, delta, A, B, C)
        ctx.set_materialize_grads(False)
        return y, last

    @staticmethod
    def backward(ctx, dy: Tensor | None, dlast: Tensor | None):
        _, bwd = _kernels()
        u, delta, A, B, C = ctx.saved_tensors
        batch, D, L = u.shape
        N = A.shape[1]
        W = tile_width(D)
        dy = torch.zeros_like(u) if dy is None else dy.to(u.dtype).contiguous()
        dlast = u.new_zeros(batch, D, N) if dlast is None else dlast.to(u.dtype).contiguous()
        n_items = batch * -(-D // W)
        n_workers = _n_workers(batch * D * L * N, n_items)
        du = torch.empty_like(u)
        ddelta = torch.empty_like(u)
        # per-thread partial sums of the grads shared across channels; numpy, not torch, for the zeroing and
        # the final sum: a parallel torch op here would leave OpenMP threads spinning on the cores the
        # kernels are about to use
        dtype = np.float64 if u.dtype == torch.float64 else np.float32
        dA = np.zeros((n_workers, D, N), dtype)
        dB = np.zeros((n_workers, batch, N, L), dtype)
        dC = np.zeros((n_workers, batch, N, L), dtype)
        shared = tuple(_np(x) for x in (u, delta, A, B, C, dy, dlast, du, ddelta))
        _run(bwd, lambda k: (*shared, dA[k], dB[k], dC[k], W), n_items, n_workers)
        dA, dB, dC = (torch.from_numpy(x[0] if n_workers == 1 else x.sum(0)) for x in (dA, dB, dC))
        need = ctx.needs_input_grad
        return tuple(g if need[i] else None for i, g in enumerate((du, ddelta, dA, dB, dC)))


# Opaque to torch.compile: dynamo cannot trace numba's dispatch (it failed inside numba's compile hook), so
# a compiled model calls the scan eagerly, between its compiled graphs.
@outside_compiled_graphs
def scan_cpu(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """Selective scan on CPU tensors; same contract as ``scan_reference`` with no initial state.

    u, delta: (batch, d_inner, L); A: (d_inner, d_state); B, C: (batch, d_state, L). Returns y (batch,
    d_inner, L) and the last state (batch, d_inner, d_state), differentiable w.r.t. all five inputs.
    Computes in float64 if any input is float64, else in float32.
    """
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(
            f"u and delta must be (batch, d_inner, L), got {tuple(u.shape)}, {tuple(delta.shape)}"
        )
    batch, D, L = u.shape
    if A.dim() != 2 or A.shape[0] != D:
        raise ValueError(f"A must be (d_inner={D}, d_state), got {tuple(A.shape)}")
    N = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        if tuple(x.shape) != (batch, N, L):
            raise ValueError(f"{name} must be (batch, d_state, L) = {(batch, N, L)}, got {tuple(x.shape)}")
    tensors = (u, delta, A, B, C)
    if any(x.device.type != "cpu" for x in tensors):
        raise RuntimeError("scan_cpu runs on CPU tensors only")
    dtype = torch.float64 if any(x.dtype == torch.float64 for x in tensors) else torch.float32
    u, delta, A, B, C = (x.to(dtype).contiguous() for x in tensors)
    return _SelectiveScanCPU.apply(u, delta, A, B, C)
