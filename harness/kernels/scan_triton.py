"""Mamba-1's selective scan as two Triton kernels (forward, backward), fused like mamba_ssm's CUDA kernel.

The same contract as mamba_ssm's ``selective_scan_fn`` (harness/kernels/selective_scan.py): delta's bias
and softplus, the skip ``D * u`` and the ``silu(z)`` gate happen inside the kernels, so a Mamba layer's scan
is one read of u, delta, z, B, C and one write of the output in each direction.

* forward: one program per (batch, block of BLOCK_D channels) walks the sequence in chunks of T steps. In
  a chunk it forms ``a_t = exp(delta_t * A)`` and ``b_t = delta_t * u_t * B_t`` for its (BLOCK_D, N, T)
  tile, solves ``h_t = a_t * h_{t-1} + b_t`` for all T steps at once with ``tl.associative_scan`` (log-depth,
  parallel over the chunk), starts it from the state the previous chunk ended with, and contracts with C.
  Each chunk's starting state (B, chunks, D, N, fp32: 1/T of an fp32 copy of ``b``) is kept for backward.
* backward: the same programs walk the chunks in reverse, recompute the chunk's states from the saved
  start instead of storing every step, and solve the adjoint recurrence
  ``g_t = C_t * dy_t + a_{t+1} * g_{t+1}`` with a reverse associative scan. From g and the states come every
  gradient; ``a_t * h_{t-1}`` is ``h_t - b_t``, so no step divides by ``a_t`` (which underflows to 0).
  dB and dC sum over channels across programs: fp32 atomics, as mamba_ssm's kernel does (so, like it, not
  bit-deterministic on a GPU); dA, dD and delta_bias's gradient are per-(batch, channel) partial sums that
  one torch sum reduces.

Everything accumulates in fp32, inputs of any float dtype. Imported only when the ``triton`` backend runs
(on CUDA tensors), or by the CPU tests, which run these kernels through Triton's interpreter
(``TRITON_INTERPRET=1``) against ``scan_reference``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from harness.kernels.opaque import outside_compiled_graphs

CHUNK = 32  # time steps solved at once; forward and backward must agree (the saved states are per chunk)
# (channels per program, warps): B and C are loaded once per chunk for a program's channels, and each live
# (BLOCK_D, d_state, CHUNK) fp32 tile costs BLOCK_D * d_state * CHUNK / (32 * warps) registers a thread.
# Compiled ahead of time for sm_90 (tests/test_triton_aot.py prints it; d_state 16): with triton 3.9 these
# use 107-255 registers and spill at most 72 bytes a thread (the backward at (8, 4) with every option on);
# with 3.6 (the lent GPU machine's), (4, 4) and (8, 8) spill nothing and (8, 4), (16, 8) 176-216 bytes in
# the backward. (16, 4) spilled 1.7 KB in the backward (3.9) and is left out. Which is fastest is the GPU's
# to say: triton.autotune times them on the first call per (channels, d_state) and keeps the best.
CONFIGS = ((4, 4), (8, 4), (8, 8), (16, 8))
INTERPRETED = (8, 4)  # Triton's interpreter cannot time configs (it has no GPU): this one, always


@triton.jit
def _first_order(a1, b1, a2, b2):
    """Composition of h -> a1 * h + b1, then h -> a2 * h + b2: the scan's associative operator."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _delta(raw, bias, ok, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """The step size from delta as given: + bias, softplus (as mamba_ssm: identity above 20); 0 where not
    ``ok``, which makes a padded step the identity (a = 1, b = 0)."""
    dt = raw
    if HAS_BIAS:
        dt = dt + bias[:, None]
    if SOFTPLUS:
        dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
    return tl.where(ok, dt, 0.0)


@triton.jit
def _chunk_states(
    u_ptr, dt_ptr, B_ptr, C_ptr, A, bias, h0, b, d, n, t, ok, nt_ok,
    sub, sud, sul, stb, std, stl, sBb, sBn, sBl, sCb, sCn, sCl,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):  # fmt: skip
    """One chunk's inputs (fp32) and states from its starting state ``h0``, the same in both directions:
    u, delta as given, the step size, B, C, ``b_t = delta_t u_t B_t`` and every ``h_t`` (BLOCK_D, N, T)."""
    u = tl.load(u_ptr + b * sub + d[:, None] * sud + t[None, :] * sul, mask=ok, other=0.0).to(tl.float32)
    raw = tl.load(dt_ptr + b * stb + d[:, None] * std + t[None, :] * stl, mask=ok, other=0.0).to(tl.float32)
    dt = _delta(raw, bias, ok, HAS_BIAS, SOFTPLUS)
    Bt = tl.load(B_ptr + b * sBb + n[:, None] * sBn + t[None, :] * sBl, mask=nt_ok, other=0.0).to(tl.float32)
    Ct = tl.load(C_ptr + b * sCb + n[:, None] * sCn + t[None, :] * sCl, mask=nt_ok, other=0.0).to(tl.float32)
    a = tl.exp(dt[:, None, :] * A[:, :, None])
    bu = (dt * u)[:, None, :] * Bt[None, :, :]
    pa, pb = tl.associative_scan((a, bu), axis=2, combine_fn=_first_order)
    return u, raw, dt, Bt, Ct, bu, pa * h0[:, :, None] + pb


@triton.jit
def _scan_fwd(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, states_ptr,
    channels, L, n_state, n_chunks,
    sub, sud, sul, stb, std, stl, szb, szd, szl, sob, sod, sol, sBb, sBn, sBl, sCb, sCn, sCl,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, N: tl.constexpr, T: tl.constexpr,
):  # fmt: skip
    pid_d, b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    d = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    n = tl.arange(0, N)
    d_ok, n_ok = d < channels, n < n_state
    dn_ok = d_ok[:, None] & n_ok[None, :]
    A = tl.load(A_ptr + d[:, None] * n_state + n[None, :], mask=dn_ok, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + d, mask=d_ok, other=0.0).to(tl.float32) if HAS_BIAS else None
    skip = tl.load(D_ptr + d, mask=d_ok, other=0.0).to(tl.float32) if HAS_D else None
    state_offsets = d[:, None] * n_state + n[None, :]
    h = tl.zeros((BLOCK_D, N), dtype=tl.float32)
    for c in range(n_chunks):
        t = (c * T + tl.arange(0, T)).to(tl.int64)
        ok = d_ok[:, None] & (t < L)[None, :]
        nt_ok = n_ok[:, None] & (t < L)[None, :]
        tl.store(states_ptr + (b * n_chunks + c) * channels * n_state + state_offsets, h, mask=dn_ok)
        u, _, _, _, Ct, _, hs = _chunk_states(
            u_ptr, dt_ptr, B_ptr, C_ptr, A, bias, h, b, d, n, t, ok, nt_ok,
            sub, sud, sul, stb, std, stl, sBb, sBn, sBl, sCb, sCn, sCl, HAS_BIAS, SOFTPLUS,
        )  # fmt: skip
        y = tl.sum(hs * Ct[None, :, :], axis=1)  # (BLOCK_D, T)
        h = tl.sum(tl.where((tl.arange(0, T) == T - 1)[None, None, :], hs, 0.0), axis=2)
        if HAS_D:
            y += skip[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + b * szb + d[:, None] * szd + t[None, :] * szl, mask=ok, other=0.0)
            z = z.to(tl.float32)
            y *= z * tl.sigmoid(z)
        out = out_ptr + b * sob + d[:, None] * sod + t[None, :] * sol
        tl.store(out, y.to(out_ptr.dtype.element_ty), mask=ok)
    tl.store(last_ptr + b * channels * n_state + state_offsets, h, mask=dn_ok)


@triton.jit
def _scan_bwd(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, dlast_ptr, states_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    channels, L, n_state, n_chunks,
    sub, sud, sul, stb, std, stl, szb, szd, szl, sgb, sgd, sgl, sBb, sBn, sBl, sCb, sCn, sCl,
    sdub, sdud, sdul, sdtb, sdtd, sdtl, sdzb, sdzd, sdzl,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, BLOCK_D: tl.constexpr, N: tl.constexpr, T: tl.constexpr,
):  # fmt: skip
    pid_d, b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    d = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    n = tl.arange(0, N)
    steps = tl.arange(0, T)
    d_ok, n_ok = d < channels, n < n_state
    dn_ok = d_ok[:, None] & n_ok[None, :]
    A = tl.load(A_ptr + d[:, None] * n_state + n[None, :], mask=dn_ok, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + d, mask=d_ok, other=0.0).to(tl.float32) if HAS_BIAS else None
    skip = tl.load(D_ptr + d, mask=d_ok, other=0.0).to(tl.float32) if HAS_D else None
    state_offsets = d[:, None] * n_state + n[None, :]
    g = tl.zeros((BLOCK_D, N), dtype=tl.float32)  # d loss / d h at the first step after this chunk
    if HAS_DLAST:
        g += tl.load(dlast_ptr + b * channels * n_state + state_offsets, mask=dn_ok, other=0.0)
    dA_acc = tl.zeros((BLOCK_D, N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for back in range(n_chunks):
        c = n_chunks - 1 - back
        t = (c * T + steps).to(tl.int64)
        ok = d_ok[:, None] & (t < L)[None, :]
        nt_ok = n_ok[:, None] & (t < L)[None, :]
        # The chunk's states again, from its saved start.
        h0 = tl.load(states_ptr + (b * n_chunks + c) * channels * n_state + state_offsets, mask=dn_ok)
        u, pre, dt, Bt, Ct, bu, hs = _chunk_states(
            u_ptr, dt_ptr, B_ptr, C_ptr, A, bias, h0, b, d, n, t, ok, nt_ok,
            sub, sud, sul, stb, std, stl, sBb, sBn, sBl, sCb, sCn, sCl, HAS_BIAS, SOFTPLUS,
        )  # fmt: skip
        if HAS_BIAS:
            pre += bias[:, None]  # softplus's argument
        dout = tl.load(dout_ptr + b * sgb + d[:, None] * sgd + t[None, :] * sgl, mask=ok, other=0.0)
        dout = dout.to(tl.float32)

        # Through the gate and the skip: dy is the gradient of C . h.
        dy = dout
        if HAS_Z:
            z = tl.load(z_ptr + b * szb + d[:, None] * szd + t[None, :] * szl, mask=ok, other=0.0)
            z = z.to(tl.float32)
            sig = tl.sigmoid(z)
            y = tl.sum(hs * Ct[None, :, :], axis=1)
            if HAS_D:
                y += skip[:, None] * u
            dz = dout * y * sig * (1.0 + z * (1.0 - sig))
            dz_out = dz_ptr + b * sdzb + d[:, None] * sdzd + t[None, :] * sdzl
            tl.store(dz_out, dz.to(dz_ptr.dtype.element_ty), mask=ok)
            dy = dout * z * sig
        dy = tl.where(ok, dy, 0.0)
        du = tl.zeros((BLOCK_D, T), dtype=tl.float32)
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=1)
            du = dy * skip[:, None]

        # The adjoint recurrence g_t = C_t dy_t + a_{t+1} g_{t+1}, solved backwards over the chunk from g.
        t1 = t + 1
        ok1 = d_ok[:, None] & (t1 < L)[None, :]
        raw1 = tl.load(dt_ptr + b * stb + d[:, None] * std + t1[None, :] * stl, mask=ok1, other=0.0)
        a1 = tl.exp(_delta(raw1.to(tl.float32), bias, ok1, HAS_BIAS, SOFTPLUS)[:, None, :] * A[:, :, None])
        qa, qb = tl.associative_scan((a1, Ct[None, :, :] * dy[:, None, :]), axis=2, combine_fn=_first_order,
                                     reverse=True)  # fmt: skip
        gs = qb + qa * g[:, :, None]  # (BLOCK_D, N, T)
        g = tl.sum(tl.where((steps == 0)[None, None, :], gs, 0.0), axis=2)

        ah = hs - bu  # a_t * h_{t-1}
        dC = tl.sum(hs * dy[:, None, :], axis=0)  # (N, T), this program's channels
        dB = tl.sum(gs * (dt * u)[:, None, :], axis=0)
        tl.atomic_add(dC_ptr + (b * n_state + n[:, None]) * L + t[None, :], dC, mask=nt_ok)
        tl.atomic_add(dB_ptr + (b * n_state + n[:, None]) * L + t[None, :], dB, mask=nt_ok)
        ddtu = tl.sum(gs * Bt[None, :, :], axis=1)  # d loss / d (delta_t * u_t)
        gah = gs * ah
        dA_acc += tl.sum(gah * dt[:, None, :], axis=2)
        ddt = ddtu * u + tl.sum(gah * A[:, :, None], axis=1)
        du += ddtu * dt
        if SOFTPLUS:
            ddt = tl.where(pre <= 20.0, ddt * tl.sigmoid(pre), ddt)
        ddt = tl.where(ok, ddt, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, axis=1)
        du_out = du_ptr + b * sdub + d[:, None] * sdud + t[None, :] * sdul
        tl.store(du_out, du.to(du_ptr.dtype.element_ty), mask=ok)
        ddt_out = ddt_ptr + b * sdtb + d[:, None] * sdtd + t[None, :] * sdtl
        tl.store(ddt_out, ddt.to(ddt_ptr.dtype.element_ty), mask=ok)
    tl.store(dA_ptr + b * channels * n_state + state_offsets, dA_acc, mask=dn_ok)
    if HAS_D:
        tl.store(dD_ptr + b * channels + d, dD_acc, mask=d_ok)
    if HAS_BIAS:
        tl.store(dbias_ptr + b * channels + d, dbias_acc, mask=d_ok)


@functools.cache
def _launcher(direction: str) -> tuple[Any, dict[str, int]]:
    """The kernel to launch for ``fwd`` or ``bwd`` and the launch options it still needs: autotuned over
    :data:`CONFIGS` on a GPU (the backward's atomic dB and dC zeroed before each timed try), the
    :data:`INTERPRETED` config under the interpreter."""
    kernel = {"fwd": _scan_fwd, "bwd": _scan_bwd}[direction]
    if triton.knobs.runtime.interpret:
        block_d, warps = INTERPRETED
        return kernel, {"BLOCK_D": block_d, "num_warps": warps}
    configs = [triton.Config({"BLOCK_D": block_d}, num_warps=warps) for block_d, warps in CONFIGS]
    reset = ["dB_ptr", "dC_ptr"] if direction == "bwd" else None
    return triton.autotune(configs, key=["channels", "n_state"], reset_to_zero=reset)(kernel), {}


def _chunks(length: int) -> int:
    return triton.cdiv(length, CHUNK)


def _state_tile(d_state: int) -> int:
    return max(triton.next_power_of_2(d_state), 2)


class TritonSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):  # noqa: ANN001, ANN205
        batch, channels, length = u.shape
        d_state = A.shape[1]
        A = A.float().contiguous()
        D = D.float().contiguous() if D is not None else None
        delta_bias = delta_bias.float().contiguous() if delta_bias is not None else None
        out = torch.empty_like(u)
        last = torch.empty(batch, channels, d_state, device=u.device, dtype=torch.float32)
        states = torch.empty(batch, _chunks(length), channels, d_state, device=u.device, dtype=torch.float32)
        kernel, fixed = _launcher("fwd")
        kernel[lambda meta: (triton.cdiv(channels, meta["BLOCK_D"]), batch)](
            u, delta, A, B, C, D if D is not None else A, z if z is not None else u,
            delta_bias if delta_bias is not None else A, out, last, states,
            channels, length, d_state, _chunks(length),
            *u.stride(), *delta.stride(), *(z if z is not None else u).stride(), *out.stride(),
            *B.stride(), *C.stride(),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), N=_state_tile(d_state), T=CHUNK, **fixed,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.delta_softplus = bool(delta_softplus)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):  # noqa: ANN001, ANN205
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        batch, channels, length = u.shape
        d_state = A.shape[1]
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dz = torch.empty_like(z) if z is not None else None
        dB = torch.zeros(batch, d_state, length, device=u.device, dtype=torch.float32)
        dC = torch.zeros_like(dB)
        dA = torch.empty(batch, channels, d_state, device=u.device, dtype=torch.float32)
        dD = torch.empty(batch, channels, device=u.device, dtype=torch.float32) if D is not None else None
        dbias = (
            torch.empty(batch, channels, device=u.device, dtype=torch.float32)
            if delta_bias is not None
            else None
        )
        dout = dout if dout is not None else torch.zeros_like(u)
        any_z = z if z is not None else u
        kernel, fixed = _launcher("bwd")
        kernel[lambda meta: (triton.cdiv(channels, meta["BLOCK_D"]), batch)](
            u, delta, A, B, C, D if D is not None else A, any_z, delta_bias if delta_bias is not None else A,
            dout, dlast.float().contiguous() if dlast is not None else A, states,
            du, ddelta, dz if dz is not None else du, dB, dC, dA,
            dD if dD is not None else dA, dbias if dbias is not None else dA,
            channels, length, d_state, _chunks(length),
            *u.stride(), *delta.stride(), *any_z.stride(), *dout.stride(), *B.stride(), *C.stride(),
            *du.stride(), *ddelta.stride(), *(dz if dz is not None else du).stride(),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.delta_softplus, HAS_DLAST=dlast is not None, N=_state_tile(d_state), T=CHUNK,
            **fixed,
        )  # fmt: skip
        return (
            du,
            ddelta,
            dA.sum(0),
            dB.to(B.dtype),
            dC.to(C.dtype),
            dD.sum(0) if dD is not None else None,
            dz,
            dbias.sum(0) if dbias is not None else None,
            None,
        )


@outside_compiled_graphs
def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """mamba_ssm's ``selective_scan_fn`` contract: u, delta, z (batch, d_inner, L), any strides; A (d_inner,
    d_state); B, C (batch, d_state, L); D, delta_bias (d_inner,). The output has u's dtype and, when u is
    dense, its layout; the last state (batch, d_inner, d_state) is fp32 and carries gradients."""
    if B.dim() != 3 or C.dim() != 3:
        raise ValueError(f"B and C must be (batch, d_state, L), got {tuple(B.shape)} and {tuple(C.shape)}")
    out, last = TritonSelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (out, last) if return_last_state else out
