"""The Mamba-1 mixer, with mamba_ssm's parameter names, shapes and initialisation.

Parameters (``in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj``) have exactly mamba_ssm's layout, so
weights move between this module, ``mamba_ssm.modules.mamba_simple.Mamba`` and Hugging Face's
``JambaMambaMixer`` without reshaping. The optional inner RMSNorms on dt, B and C are the Jamba paper's
stabiliser (its Fig. 8); they are named as in Hugging Face's Jamba (``dt_layernorm, b_layernorm,
c_layernorm``).

The scan itself is delegated to :func:`harness.kernels.selective_scan.selective_scan`, whose backend is
chosen per module (``scan_backend``). Incremental decoding keeps a conv window and the SSM state, so each
new token costs O(d_inner * d_state) however long the context is; the same state lets a prefill continue in
chunks.

Layout. Between in_proj and out_proj every per-channel activation (x, z, the conv output, delta, y and
their gradients) lives *channel-major*: a (channels, batch * tokens) matrix, viewed as (batch, channels,
tokens) with each channel's time steps contiguous, which is the layout the scan and the conv read and
write. The projections are GEMMs against that matrix with a transposed operand (in_proj computes
``W @ hidden^T``, out_proj reads y transposed), and autograd's matmul backward keeps each operand's layout,
so neither pass makes a transposing copy: the usual ``(batch, tokens, channels)`` formulation needs about
fourteen per Mamba layer and step, 16% of a 1.3b training step on an H200.
The same maths runs on every device; only the layout differs from a textbook transcription.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.kernels.causal_conv import causal_conv1d
from harness.kernels.selective_scan import selective_scan, selective_state_step
from harness.model.config import ModelConfig
from harness.model.norm import RMSNorm


@dataclass
class MambaState:
    """Recurrent state of one Mamba layer: the last d_conv conv inputs and the SSM state."""

    conv: Tensor  # (batch, d_inner, d_conv)
    ssm: Tensor  # (batch, d_inner, d_state), fp32


class MambaMixer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        m = cfg.mamba
        self.d_inner = cfg.d_inner
        self.d_state = m.d_state
        self.d_conv = m.d_conv
        self.dt_rank = cfg.dt_rank
        self.scan_backend = m.scan_backend
        self.kernels = cfg.kernels  # the conv's (harness/kernels/causal_conv.py); the norms hold their own
        self.in_proj = nn.Linear(cfg.d_model, 2 * self.d_inner, bias=m.proj_bias)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=m.d_conv,
            groups=self.d_inner,
            padding=m.d_conv - 1,
            bias=m.conv_bias,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, self.d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, cfg.d_model, bias=m.proj_bias)
        if m.inner_rmsnorm:
            self.dt_layernorm = RMSNorm(self.dt_rank, cfg.norm_eps, cfg.kernels)
            self.b_layernorm = RMSNorm(self.d_state, cfg.norm_eps, cfg.kernels)
            self.c_layernorm = RMSNorm(self.d_state, cfg.norm_eps, cfg.kernels)
        else:
            self.dt_layernorm = self.b_layernorm = self.c_layernorm = None
        # Excluded from weight decay, as in mamba_ssm.
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.reset_ssm_parameters(m.dt_min, m.dt_max, m.dt_init_floor)

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
        """Mamba's initialisation: S4D-real A, dt log-uniform in [dt_min, dt_max] via inverse softplus."""
        self.A_log.copy_(
            torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1)
        )
        self.D.fill_(1.0)
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        self.dt_proj.bias.copy_(dt_bias_init(self.d_inner, dt_min, dt_max, dt_init_floor))
        self.dt_proj.bias._no_reinit = True
        self.dt_proj.weight._no_reinit = True

    def _ssm_inputs(self, x_dbl: Tensor, batch: int) -> tuple[Tensor, Tensor, Tensor]:
        """x_proj's channel-major output (dt_rank + 2 * d_state, batch * L) -> delta (batch, d_inner, L),
        without its bias, and B, C (batch, d_state, L), all channel-major.

        The inner norms reduce over dt_rank / d_state, so they take the small x_dbl transposed (a copy of
        1 / 25 of x's size at the 1.3b dims); without them dt, B and C are row slices, not copies."""
        sizes = [self.dt_rank, self.d_state, self.d_state]
        if self.dt_layernorm is None:
            dt, B, C = x_dbl.split(sizes)
        else:
            dt, B, C = x_dbl.t().contiguous().split(sizes, dim=1)  # (batch * L, ·) rows for the norms
            dt, B, C = self.dt_layernorm(dt).t(), self.b_layernorm(B).t(), self.c_layernorm(C).t()
        delta = torch.mm(self.dt_proj.weight, dt)
        return _batched(delta, batch), _batched(B.contiguous(), batch), _batched(C.contiguous(), batch)

    def forward(self, hidden: Tensor, state: MambaState | None = None, fresh: bool = True) -> Tensor:
        """hidden: (batch, tokens, d_model). With ``state``, also updates it for later decoding.

        ``fresh`` says the state holds no tokens yet (a one-shot prefill, or the first chunk of one).
        Otherwise the tokens continue the state, as the next chunk of a chunked prefill: the causal conv sees
        the cached last d_conv - 1 inputs and the scan starts from the cached SSM state, so prefilling in
        chunks computes what one pass computes while its activations scale with the chunk.
        """
        batch, tokens, _ = hidden.shape
        xz = torch.mm(self.in_proj.weight, hidden.reshape(batch * tokens, -1).t())  # (2 d_inner, b * L)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None]
        x, z = (_batched(half, batch) for half in xz.chunk(2))
        continued = state is not None and not fresh
        if continued:
            x = torch.cat([state.conv[..., 1:].to(x.dtype), x], dim=-1)  # the conv's left context
        if state is not None:
            state.conv.copy_(F.pad(x, (max(0, self.d_conv - x.shape[-1]), 0))[..., -self.d_conv :])
        x = causal_conv1d(x, self.conv1d.weight, self.conv1d.bias, self.scan_backend, self.kernels)
        x2d = _channel_major(x[..., -tokens:])  # a view of the conv's output, unless it had left context
        x = _batched(x2d, batch)
        delta, B, C = self._ssm_inputs(torch.mm(self.x_proj.weight, x2d), batch)
        A = -torch.exp(self.A_log.float())
        result = selective_scan(
            x,
            delta,
            A,
            B,
            C,
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            return_last_state=state is not None,
            backend=self.scan_backend,
            initial_state=state.ssm if continued else None,
        )
        if state is not None:
            y, last = result
            state.ssm.copy_(last)
        else:
            y = result
        out = F.linear(_channel_major(y).t(), self.out_proj.weight, self.out_proj.bias)
        return out.view(batch, tokens, -1)

    def step(self, hidden: Tensor, state: MambaState) -> Tensor:
        """One token: hidden (batch, d_model) -> (batch, d_model), updating ``state`` in place."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, d_inner)
        state.conv.copy_(torch.roll(state.conv, shifts=-1, dims=-1))
        state.conv[:, :, -1] = x
        x = (state.conv * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        if self.dt_layernorm is not None:  # in rows, as they come: a step runs the fewest kernels
            dt, B, C = self.dt_layernorm(dt), self.b_layernorm(B), self.c_layernorm(C)
        dt = F.linear(dt, self.dt_proj.weight)
        A = -torch.exp(self.A_log.float())
        y = selective_state_step(
            state.ssm, x, dt, A, B, C, self.D, z=z, delta_bias=self.dt_proj.bias, delta_softplus=True
        )
        return self.out_proj(y)

    def new_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MambaState:
        return MambaState(
            conv=torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
            ssm=torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=torch.float32),
        )


def dt_bias_init(n: int, dt_min: float, dt_max: float, dt_init_floor: float) -> Tensor:
    """mamba_ssm's dt initialisation (Mamba-1 and 2): ``n`` values of dt log-uniform in [dt_min, dt_max]
    (at least ``dt_init_floor``), returned as the bias whose softplus gives them (softplus^-1(dt))."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


def _batched(flat: Tensor, batch: int) -> Tensor:
    """A channel-major (channels, batch * L) matrix viewed as (batch, channels, L), without a copy."""
    return flat.unflatten(1, (batch, -1)).transpose(0, 1)


def _channel_major(t: Tensor) -> Tensor:
    """(batch, channels, L) -> the channel-major (channels, batch * L) matrix: a view of what
    :func:`_batched` made (the fused conv and the scan keep their input's layout), else a fresh copy, whose
    start is aligned as the scan's vectorised loads require (a slice of a chunked prefill's is not)."""
    return t.transpose(0, 1).contiguous().flatten(1)
