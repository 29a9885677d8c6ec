"""The Mamba-1 selective scan behind one function, with three interchangeable backends.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t          (per channel d, state n)
    y_t = C_t . h_t + D * u_t,     then  y_t * silu(z_t)  when z is given

Shapes follow mamba_ssm's ``selective_scan_fn``: u, delta, z are (batch, d_inner, L); A is (d_inner, d_state);
B and C are (batch, d_state, L); D and delta_bias are (d_inner,).

Backends:

* ``reference``: a sequential loop over time in plain PyTorch. Slow, obviously correct: the test oracle.
* ``cpu``: a compiled time loop with a hand-written backward (``harness/kernels/scan_cpu.py``); the same
  recurrence as the reference, so it is exact and never overflows, unlike chunked closed forms.
* ``cuda``: mamba_ssm's fused CUDA kernel, imported lazily so that CPU code never imports mamba_ssm.
* ``triton``: our Triton kernels (``harness/kernels/scan_triton.py``), fused like mamba_ssm's (bias,
  softplus, D and the z gate inside), chunked and parallel over the sequence; on CUDA tensors, or on CPU
  tensors under Triton's interpreter (``TRITON_INTERPRET=1``: slow, for the CPU tests).

``auto`` picks ``cuda`` for CUDA tensors when mamba_ssm is importable, else ``cpu`` on CPU tensors, else
``reference``. It never picks ``triton`` until a bench on the GPU shows it faster (``ablate bench scan``).

An ``initial_state`` h0 (continuing a chunked prefill from a cached state) is added by linearity on top of
the zero-state scan of any backend, because mamba_ssm's kernel takes none: the recurrence is linear in h, so

    h_t = exp(A * S_t) * h0 + h_t(zero start),     S_t = delta_1 + ... + delta_t   (per channel)

and y_t gains ``sum_n C_t[n] * exp(A[d, n] * S_t[d]) * h0[d, n]`` before the z gate. Every backend takes this
one path, so the CPU tests check exactly what runs on the GPU (with ``scan_reference``'s own initial state as
the oracle).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.kernels.opaque import outside_compiled_graphs

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")


@functools.cache
def cuda_kernels_available() -> bool:
    """True when mamba_ssm's compiled selective-scan extension can be imported."""
    if not torch.cuda.is_available() or importlib.util.find_spec("selective_scan_cuda") is None:
        return False
    try:
        import mamba_ssm.ops.selective_scan_interface  # noqa: F401
    except Exception:
        return False
    return True


def triton_runs_on(device: torch.device) -> bool:
    """Whether the ``triton`` backend runs on ``device``: CUDA with triton, or CPU under its interpreter."""
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``auto`` into a concrete backend for tensors on ``device`` and check that it can run there."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type == "cuda" and cuda_kernels_available():
            return "cuda"
        return "cpu" if device.type == "cpu" else "reference"
    if backend == "cuda" and not (device.type == "cuda" and cuda_kernels_available()):
        raise RuntimeError(
            "the 'cuda' selective-scan backend needs CUDA tensors and mamba-ssm built for this GPU "
            "(pip install mamba-ssm --no-build-isolation); use 'auto' to fall back"
        )
    if backend == "triton" and not triton_runs_on(device):
        raise RuntimeError(
            "the 'triton' selective-scan backend needs CUDA tensors and the triton package (on CPU tensors "
            "only under Triton's interpreter, TRITON_INTERPRET=1); use 'auto' to fall back"
        )
    if backend == "cpu" and device.type != "cpu":
        raise RuntimeError("the 'cpu' selective-scan backend runs on CPU tensors only; use 'auto' or 'cuda'")
    return backend


def scan_reference(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Sequential recurrence in fp32. Returns y (batch, d_inner, L) and the last state (batch, d_inner, N).

    Slicing with ``unbind`` rather than ``x[:, :, t]`` matters: indexed slices make autograd allocate a
    full-size zero gradient per step, which turns the backward pass quadratic.
    """
    batch, d_inner, _ = u.shape
    dA = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (b, d, n, L)
    dBu = (delta * u).unsqueeze(2) * B.unsqueeze(1)  # (b, d, n, L)
    h = (
        initial_state.float()
        if initial_state is not None
        else u.new_zeros(batch, d_inner, A.shape[1], dtype=torch.float32)
    )
    ys = []
    for dA_t, dBu_t, C_t in zip(dA.unbind(-1), dBu.unbind(-1), C.unbind(-1), strict=True):
        h = dA_t * h + dBu_t
        ys.append(torch.einsum("bdn,bn->bd", h, C_t))
    return torch.stack(ys, dim=-1), h


def selective_scan(
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
    backend: str = "auto",
    initial_state: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run the selective scan with the chosen backend; same contract as mamba_ssm's ``selective_scan_fn``,
    plus an optional ``initial_state`` (batch, d_inner, d_state) that the scan starts from (module docstring).
    """
    backend = resolve_backend(backend, u.device)
    if initial_state is None:
        return _zero_start_scan(
            backend, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )
    # The correction enters before the z gate, so the kernel runs ungated and the gate is applied here.
    y, last = _zero_start_scan(backend, u, delta, A, B, C, D, None, delta_bias, delta_softplus, True)
    y_extra, last_extra = initial_state_terms(delta, A, C, initial_state, delta_bias, delta_softplus)
    y = y_extra.add_(y)  # in place: a long chunk holds one fp32 copy of y, not three
    if z is not None:
        y.mul_(F.silu(z.to(torch.float32, copy=True), inplace=True))  # a copy: z is the caller's
    y, last = y.to(u.dtype), last + last_extra
    return (y, last) if return_last_state else y


def initial_state_terms(
    delta: Tensor,
    A: Tensor,
    C: Tensor,
    h0: Tensor,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    block_elements: int = 1 << 25,
) -> tuple[Tensor, Tensor]:
    """What starting from ``h0`` (batch, d_inner, d_state) instead of zeros adds to a scan: y (batch, d_inner,
    L) and the last state, both fp32. delta is raw (bias and softplus applied here, as in the scan).

    The sequence is walked in blocks of T steps with T * batch * d_inner * d_state <= ``block_elements``
    (128 MiB of fp32 by default, one buffer worked in place: 512 steps at d_inner 4096, so an 8K chunk takes
    16 blocks, not thousands of tiny launches), carrying the running sum S of delta: a long chunk never
    materialises the (batch, d_inner, d_state, L) decay factors. exp(A * S) cannot overflow for a Mamba
    layer's negative A.
    """
    batch, d_inner, length = delta.shape
    A, h0 = A.float(), h0.float()
    step = max(1, block_elements // (batch * d_inner * A.shape[1]))
    y = delta.new_empty(batch, d_inner, length, dtype=torch.float32)
    carried = delta.new_zeros(batch, d_inner, 1, dtype=torch.float32)
    for start in range(0, length, step):
        d = delta[:, :, start : start + step].float()
        if delta_bias is not None:
            d = d + delta_bias.float()[None, :, None]
        if delta_softplus:
            d = F.softplus(d)
        sums = carried + d.cumsum(-1)  # (b, d_inner, T)
        terms = (A[None, :, :, None] * sums[:, :, None, :]).exp_()  # (b, d_inner, N, T), then in place:
        terms.mul_(h0[..., None]).mul_(C[:, None, :, start : start + step].float())
        y[:, :, start : start + step] = terms.sum(2)
        carried = sums[:, :, -1:]
    return y, torch.exp(A[None] * carried) * h0


@functools.cache
def _cuda_scan_fn() -> Callable[..., Any]:
    """mamba_ssm's ``selective_scan_fn`` (imported on first use: ``import mamba_ssm`` fails wherever its
    kernels are missing), made opaque to torch.compile: a compiled model calls the C++ extension eagerly,
    as it does the CPU scan."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return outside_compiled_graphs(selective_scan_fn)


def _zero_start_scan(
    backend: str,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    """The scan from a zero state on a resolved backend (the body of :func:`selective_scan`)."""
    if backend == "cuda":
        # The kernel requires fp32 A, D and delta_bias, and delta, z, B, C in u's dtype. It does not
        # propagate gradients through the returned last state (the other backends do).
        return _cuda_scan_fn()(
            u,
            delta.to(u.dtype),
            A.float(),
            B.to(u.dtype),
            C.to(u.dtype),
            D=D.float() if D is not None else None,
            z=z.to(u.dtype) if z is not None else None,
            delta_bias=delta_bias.float() if delta_bias is not None else None,
            delta_softplus=delta_softplus,
            return_last_state=return_last_state,
        )
    if backend == "triton":
        from harness.kernels.scan_triton import selective_scan_triton

        return selective_scan_triton(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )  # fmt: skip
    dtype_in = u.dtype
    u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
    A = A.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if backend == "cpu":
        from harness.kernels.scan_cpu import scan_cpu

        y, last_state = scan_cpu(u, delta, A, B, C)
    else:
        y, last_state = scan_reference(u, delta, A, B, C)
    if D is not None:
        y = y + u * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype_in)
    return (y, last_state) if return_last_state else y


def selective_state_step(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """One decoding step: update ``state`` (batch, d_inner, N) in place and return y (batch, d_inner).

    O(d_inner * N) work per token regardless of how many tokens came before: the reason Mamba layers need
    no KV cache. u, delta, z are (batch, d_inner); B, C are (batch, N).
    """
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()
    if delta_softplus:
        delta = F.softplus(delta)
    dA = torch.exp(delta.unsqueeze(-1) * A.float())
    dBu = (delta * u.float()).unsqueeze(-1) * B.float().unsqueeze(1)
    state.copy_(state * dA + dBu)
    y = torch.einsum("bdn,bn->bd", state, C.float())
    if D is not None:
        y = y + u.float() * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype)
