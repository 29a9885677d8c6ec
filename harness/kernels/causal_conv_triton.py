"""Depthwise causal conv1d + SiLU as two Triton kernels (forward, backward), for GPUs without causal-conv1d.

Mamba's first operation, ``silu(bias + sum_k w[d, k] * x[b, d, t + k - (W - 1)])``, is a 4-tap filter per
channel; ``F.conv1d`` runs it as a general grouped convolution through cuDNN, whose depthwise backward is
slow, and leaves SiLU to a separate pass. These kernels do the whole thing in one read of x and one write
per direction, in any input layout, and write their outputs in x's layout when x is dense (Mamba's
channel-major x: harness/model/mamba.py), so nothing is copied:

* forward: one program per (batch, time tile, channel tile) sums the W shifted tiles of x in fp32, adds the
  bias, applies SiLU and writes the result;
* backward: the same tiling recomputes the pre-activation at the W times each output feeds, forms
  ``g = dy * silu'(pre)`` and gives dx (``sum_k w[k] * g[t + W - 1 - k]``) directly, plus per-tile partial
  sums of dw and db that one torch sum reduces (deterministic, no atomics).

Imported only on CUDA (it needs triton), from :func:`harness.kernels.causal_conv.causal_conv1d`; the GPU
tests compare it with ``F.conv1d`` + SiLU in values and gradients.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from harness.kernels.opaque import outside_compiled_graphs

# Channels per program. Compiled ahead of time for sm_90 (tests/test_triton_aot.py), 64 x 64 tiles spilled
# 1.3 KB a thread in the backward with triton 3.6 (the lent GPU machine's) and 2.6-6.8 KB with 3.9, where the
# issue-29 profile measured this backward at ~7x its memory traffic; 16 x 64 spills nothing with either
# (56-255 registers). Its speed on the GPU is still to be measured.
BLOCK_D = 16
BLOCK_L = 64  # time steps per program: Mamba's x, dy and outputs are contiguous in time, so accesses coalesce


@triton.jit
def _conv_silu_fwd(
    x_ptr, w_ptr, b_ptr, out_ptr, D, L,
    sxb, sxd, sxl, sob, sod, sol,
    HAS_BIAS: tl.constexpr, WIDTH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    d = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)  # int64: offsets past 2**31 at long L
    t = (pid_l * BLOCK_L + tl.arange(0, BLOCK_L)).to(tl.int64)
    d_ok = d < D
    x_base = x_ptr + pid_b.to(tl.int64) * sxb + d[:, None] * sxd
    acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
    for k in tl.static_range(WIDTH):
        src = t + (k - (WIDTH - 1))
        ok = d_ok[:, None] & ((src >= 0) & (src < L))[None, :]
        xv = tl.load(x_base + src[None, :] * sxl, mask=ok, other=0.0).to(tl.float32)
        wk = tl.load(w_ptr + d * WIDTH + k, mask=d_ok, other=0.0).to(tl.float32)
        acc += wk[:, None] * xv
    if HAS_BIAS:
        acc += tl.load(b_ptr + d, mask=d_ok, other=0.0).to(tl.float32)[:, None]
    y = acc * tl.sigmoid(acc)
    ok = d_ok[:, None] & (t < L)[None, :]
    out = out_ptr + pid_b.to(tl.int64) * sob + d[:, None] * sod + t[None, :] * sol
    tl.store(out, y.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _conv_silu_bwd(
    x_ptr, w_ptr, b_ptr, dy_ptr, dx_ptr, dw_ptr, db_ptr, D, L, n_tiles_l,
    sxb, sxd, sxl, syb, syd, syl, sdb, sdd, sdl,
    HAS_BIAS: tl.constexpr, WIDTH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    d = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)  # int64: offsets past 2**31 at long L
    t = (pid_l * BLOCK_L + tl.arange(0, BLOCK_L)).to(tl.int64)
    d_ok = d < D
    x_base = x_ptr + pid_b.to(tl.int64) * sxb + d[:, None] * sxd
    dy_base = dy_ptr + pid_b.to(tl.int64) * syb + d[:, None] * syd
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + d, mask=d_ok, other=0.0).to(tl.float32)
    dx = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
    # x[t] feeds the outputs at t .. t + W - 1: output t + j through tap W - 1 - j.
    for j in tl.static_range(WIDTH):
        pre = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32) + bias[:, None]
        for k in tl.static_range(WIDTH):
            src = t + (j + k - (WIDTH - 1))
            ok = d_ok[:, None] & ((src >= 0) & (src < L))[None, :]
            xv = tl.load(x_base + src[None, :] * sxl, mask=ok, other=0.0).to(tl.float32)
            pre += tl.load(w_ptr + d * WIDTH + k, mask=d_ok, other=0.0).to(tl.float32)[:, None] * xv
        at = t + j
        ok = d_ok[:, None] & (at < L)[None, :]
        dyv = tl.load(dy_base + at[None, :] * syl, mask=ok, other=0.0).to(tl.float32)
        s = tl.sigmoid(pre)
        g = dyv * s * (1.0 + pre * (1.0 - s))  # d silu(pre) / d pre = s * (1 + pre * (1 - s))
        w_j = tl.load(w_ptr + d * WIDTH + (WIDTH - 1 - j), mask=d_ok, other=0.0).to(tl.float32)
        dx += w_j[:, None] * g
        if j == 0:  # this tile's own outputs: their share of dw and db
            part = (pid_b * n_tiles_l + pid_l).to(tl.int64) * D
            for k in tl.static_range(WIDTH):
                src = t + (k - (WIDTH - 1))
                ok_x = d_ok[:, None] & ((src >= 0) & (src < L))[None, :]
                xv = tl.load(x_base + src[None, :] * sxl, mask=ok_x, other=0.0).to(tl.float32)
                tl.store(dw_ptr + (part + d) * WIDTH + k, tl.sum(g * xv, axis=1), mask=d_ok)
            if HAS_BIAS:
                tl.store(db_ptr + part + d, tl.sum(g, axis=1), mask=d_ok)
    ok = d_ok[:, None] & (t < L)[None, :]
    out = dx_ptr + pid_b.to(tl.int64) * sdb + d[:, None] * sdd + t[None, :] * sdl
    tl.store(out, dx.to(dx_ptr.dtype.element_ty), mask=ok)


def _grid(batch: int, channels: int, length: int) -> tuple[int, int, int]:
    return triton.cdiv(length, BLOCK_L), triton.cdiv(channels, BLOCK_D), batch


class CausalConvSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # noqa: ANN001
        batch, channels, length = x.shape
        w = weight.reshape(channels, -1).contiguous()
        out = torch.empty_like(x)  # x's layout when dense (Mamba's channel-major x), else contiguous
        _conv_silu_fwd[_grid(batch, channels, length)](
            x, w, bias if bias is not None else w, out, channels, length,
            *x.stride(), *out.stride(),
            HAS_BIAS=bias is not None, WIDTH=w.shape[1], BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L,
        )  # fmt: skip
        ctx.save_for_backward(x, w, bias)
        ctx.weight_shape = weight.shape
        return out

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:  # noqa: ANN001
        x, w, bias = ctx.saved_tensors
        batch, channels, length = x.shape
        grid = _grid(batch, channels, length)
        tiles = grid[0] * batch
        dx = torch.empty_like(x)  # where in_proj's gradient reads it
        dw = torch.empty(tiles, channels, w.shape[1], device=x.device, dtype=torch.float32)
        db = torch.empty(tiles, channels, device=x.device, dtype=torch.float32) if bias is not None else dw
        _conv_silu_bwd[grid](
            x, w, bias if bias is not None else w, dy, dx, dw, db, channels, length, grid[0],
            *x.stride(), *dy.stride(), *dx.stride(),
            HAS_BIAS=bias is not None, WIDTH=w.shape[1], BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L,
        )  # fmt: skip
        grad_w = dw.sum(0).to(w.dtype).reshape(ctx.weight_shape)
        grad_b = db.sum(0).to(bias.dtype) if bias is not None else None
        return dx, grad_w, grad_b


@outside_compiled_graphs
def causal_conv1d_silu(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (batch, channels, L), any strides; weight (channels, 1, width). silu(causal depthwise conv(x)),
    (batch, channels, L), laid out as x when x is dense, else contiguous."""
    return CausalConvSiLU.apply(x, weight, bias)
