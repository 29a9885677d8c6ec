"""The Mamba-2 state-space scan (SSD, "structured state-space duality"; Dao & Gu 2024), three ways.

Per head ``h`` the layer keeps a state ``S`` of (head_dim, d_state) and, for every token ``t``::

    S_t = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T        (x_t: head_dim, B_t, C_t: d_state)
    y_t = S_t C_t + D_h * x_t

with one scalar decay per head and token (Mamba-1 has one per channel and state entry), which is what lets
the scan be computed in chunks by matrix products:

* :func:`ssd_recurrent`: the recurrence above, token by token. The definition; tests compare against it.
* :func:`ssd_chunked`: the chunked form of the Mamba-2 paper's minimal listing, in PyTorch: within a chunk
  of ``chunk`` tokens the output is a masked (attention-like) product ``(C B^T * L) x`` with ``L`` the decays
  between positions; the chunks' final states are passed from chunk to chunk by a short recurrence over
  chunks, and each chunk adds its incoming state's contribution. It runs everywhere (the ``reference``
  backend) and is exact up to float rounding; a sequence that is not a multiple of ``chunk`` is padded
  with ``dt = 0`` (no decay, no input), which leaves the final state as it was.
* mamba_ssm's Triton kernels (``mamba_chunk_scan_combined``; the ``cuda`` backend), on the GPU.

Groups: ``B`` and ``C`` have ``n_groups`` heads' worth of rows, each shared by ``n_heads / n_groups``
consecutive heads (as grouped-query attention shares keys). Computation is in fp32 whatever the inputs'
dtype; the output comes back in ``x``'s dtype, the state in fp32.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "reference", "cuda")


def _heads(t: Tensor, n_heads: int) -> Tensor:
    """(batch, L, groups, n) -> (batch, L, heads, n): each group serves consecutive heads."""
    return t.repeat_interleave(n_heads // t.shape[2], dim=2)


def ssd_recurrent(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """x (b, L, h, p), dt (b, L, h) (after softplus), A (h,) (negative), B, C (b, L, g, n), D (h,) ->
    y (b, L, h, p) and the final state (b, h, p, n), token by token."""
    b, length, h, p = x.shape
    xf, dtf, Bf, Cf = x.float(), dt.float(), _heads(B.float(), h), _heads(C.float(), h)
    n = B.shape[-1]
    state = x.new_zeros(b, h, p, n, dtype=torch.float32) if initial_state is None else initial_state.float()
    ys = []
    for t in range(length):
        decay = torch.exp(dtf[:, t] * A.float())  # (b, h)
        inflow = (dtf[:, t, :, None] * xf[:, t])[..., None] * Bf[:, t, :, None]  # dt x B^T: (b, h, p, n)
        state = state * decay[..., None, None] + inflow
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Cf[:, t]) + D.float()[:, None] * xf[:, t])
    return torch.stack(ys, dim=1).to(x.dtype), state


def _segsum(a: Tensor) -> Tensor:
    """(..., T) -> (..., T, T): entry (i, j) is a[j+1] + ... + a[i] for j <= i (the log-decay from j to i),
    -inf above the diagonal; computed from differences of one cumulative sum."""
    T = a.shape[-1]
    cum = torch.cumsum(a, dim=-1)
    out = cum[..., :, None] - cum[..., None, :]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device))
    return out.masked_fill(~mask, float("-inf"))


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    chunk: int,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`ssd_recurrent`'s result, computed in chunks of ``chunk`` tokens (see the module docstring)."""
    b, length, h, p = x.shape
    pad = -length % chunk
    xf, dtf = F.pad(x.float(), (0, 0, 0, 0, 0, pad)), F.pad(dt.float(), (0, 0, 0, pad))
    Bf, Cf = (F.pad(_heads(t.float(), h), (0, 0, 0, 0, 0, pad)) for t in (B, C))
    nc = (length + pad) // chunk
    # (b, chunks, l, h, ·): chunk-local views.
    X = (xf * dtf[..., None]).view(b, nc, chunk, h, p)  # dt folded into the input
    Bc, Cc = Bf.view(b, nc, chunk, h, -1), Cf.view(b, nc, chunk, h, -1)
    a = (dtf * A.float()).view(b, nc, chunk, h).permute(0, 3, 1, 2)  # (b, h, chunks, l) log-decays
    a_cum = torch.cumsum(a, dim=-1)
    # 1. within each chunk: y_i = sum_{j <= i} C_i . B_j exp(a_{j+1..i}) X_j
    decay = torch.exp(_segsum(a))  # (b, h, c, l, s)
    y = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, decay, X)
    # 2. each chunk's state from its own inputs, decayed to the chunk's end
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, l)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, to_end, X)
    # 3. states passed across chunks: entering chunk c is sum over c' < c of decayed chunk states
    start = x.new_zeros(b, 1, h, p, states.shape[-1], dtype=torch.float32)
    if initial_state is not None:
        start = initial_state.float()[:, None]
    states = torch.cat([start, states], dim=1)  # (b, c + 1, h, p, n)
    chunk_decay = torch.exp(_segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c + 1, c + 1)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    entering, final = states[:, :-1], states[:, -1]
    # 4. the entering state's contribution at each position of its chunk
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, entering, torch.exp(a_cum))
    y = y.reshape(b, nc * chunk, h, p)[:, :length] + D.float()[:, None] * x.float()
    return y.to(x.dtype), final


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    chunk: int,
    initial_state: Tensor | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """y (b, L, h, p) and the final state (b, h, p, n) on ``backend``: ``cuda`` is mamba_ssm's Triton SSD
    (CUDA tensors), ``reference`` the chunked PyTorch form; ``auto`` picks ``cuda`` where it can run."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown SSD backend {backend!r}; choose among {', '.join(BACKENDS)}")
    if backend == "cuda" or (backend == "auto" and x.device.type == "cuda" and cuda_available()):
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        y, final = mamba_chunk_scan_combined(
            x, dt, A.float(), B, C, chunk, D=D.float(), initial_states=initial_state, return_final_states=True
        )
        return y, final.float()
    return ssd_chunked(x, dt, A, B, C, D, chunk, initial_state)


@functools.cache
def cuda_available() -> bool:
    """Whether mamba_ssm's Triton SSD kernels can be imported (a GPU install)."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA build raising something else at import
        return False
    return True


def ssd_step(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """One token for decoding: state (b, h, p, n) fp32 updated in place; x (b, h, p), dt (b, h) (after
    softplus), B, C (b, g, n). Returns y (b, h, p) in x's dtype. Fixed shapes, no host sync."""
    h = x.shape[1]
    Bh, Ch = (t.float().repeat_interleave(h // t.shape[1], dim=1) for t in (B, C))
    dtf = dt.float()
    decay = torch.exp(dtf * A.float())[..., None, None]
    state.mul_(decay).add_((dtf[..., None] * x.float())[..., None] * Bh[:, :, None, :])
    y = torch.einsum("bhpn,bhn->bhp", state, Ch) + D.float()[:, None] * x.float()
    return y.to(x.dtype)
