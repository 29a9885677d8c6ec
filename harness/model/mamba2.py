"""The Mamba-2 mixer (Dao & Gu 2024, "Transformers are SSMs"), with mamba_ssm's parameter names and shapes.

One input projection gives, per token, the gate ``z`` (d_inner), the conv's input ``xBC`` (``x``: d_inner,
``B`` and ``C``: n_groups x d_state each) and ``dt`` (one per head); ``xBC`` goes through a causal
depthwise conv and SiLU; the SSD scan (:mod:`harness.kernels.ssd`) mixes ``x`` over time with one scalar
decay ``exp(dt * A)`` per head; the output is ``RMSNorm(y * silu(z))`` (the gated norm, normalised per
group, applied after the gate as in mamba_ssm's default) projected back to d_model. Parameters are
``in_proj, conv1d, dt_bias, A_log, D, norm.weight, out_proj`` in mamba_ssm's ``Mamba2`` layout, and are
initialised as there (dt log-uniform through an inverse softplus, A uniform in [1, 16]).

Decoding keeps the conv window (of ``xBC``) and the state (heads x head_dim x d_state, fp32), so a new token
costs the same however long the context; the same state lets a prefill continue in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.kernels.causal_conv import causal_conv1d
from harness.kernels.ssd import ssd_scan, ssd_step
from harness.model.config import ModelConfig
from harness.model.mamba import dt_bias_init


@dataclass
class Mamba2State:
    """Recurrent state of one Mamba-2 layer: the last d_conv conv inputs and the SSD state."""

    conv: Tensor  # (batch, conv_dim, d_conv)
    ssm: Tensor  # (batch, heads, head_dim, d_state), fp32


class GatedRMSNorm(nn.Module):
    """``RMSNorm(y * silu(z))`` over groups of ``group`` channels, times a learned weight (mamba_ssm's
    ``RMSNormGated`` with ``norm_before_gate=False``), computed in fp32 by :class:`GatedRMSNormFunction`."""

    def __init__(self, width: int, group: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.group, self.eps = group, eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        return GatedRMSNormFunction.apply(y, z, self.weight, self.group, self.eps)


class GatedRMSNormFunction(torch.autograd.Function):
    """The gated norm keeping only its inputs and one fp32 scale per group for the backward, which recomputes
    the rest.

    Written as PyTorch ops, the fp32 norm leaves autograd five fp32 copies of the (tokens, d_inner)
    activation (y and z upcast, silu(z), the gated product, the normed one): at the 1.3b Mamba-2 hybrid
    (21 layers, d_inner 4,096, 16K tokens a step) that is ~22 GB of saved activations, where this keeps y
    and z in their own dtype. The backward is RMSNorm's, ``dg = r (dn - n mean(dn n))`` per group with
    ``n = g r``, ``dn = dout w``, then through the gate: ``dy = dg silu(z)``,
    ``dz = dg y sigmoid(z) (1 + z (1 - sigmoid(z)))``."""

    @staticmethod
    def forward(ctx, y: Tensor, z: Tensor, weight: Tensor, group: int, eps: float) -> Tensor:  # noqa: ANN001
        f = torch.promote_types(y.dtype, torch.float32)  # fp32, or fp64 where the inputs are (gradcheck)
        gated = (y.to(f) * F.silu(z.to(f))).unflatten(-1, (-1, group))
        scale = torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(y, z, weight, scale)
        ctx.group = group
        return ((gated * scale).flatten(-2) * weight.to(f)).to(y.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:  # noqa: ANN001
        y, z, weight, scale = ctx.saved_tensors
        f = scale.dtype
        zf, yf, grad = z.to(f), y.to(f), grad.to(f)
        sig = torch.sigmoid(zf)
        silu = zf * sig
        normed = (yf * silu).unflatten(-1, (-1, ctx.group)) * scale
        grad_normed = (grad * weight.to(f)).unflatten(-1, (-1, ctx.group))
        along = (grad_normed * normed).mean(-1, keepdim=True)
        grad_gated = (scale * (grad_normed - normed * along)).flatten(-2)
        grad_weight = (grad * normed.flatten(-2)).reshape(-1, weight.shape[0]).sum(0)
        grad_y = grad_gated * silu
        grad_z = grad_gated * yf * sig * (1 + zf * (1 - sig))
        return grad_y.to(y.dtype), grad_z.to(z.dtype), grad_weight.to(weight.dtype), None, None


class Mamba2Mixer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        m = cfg.mamba2
        self.d_inner = m.expand * cfg.d_model
        self.head_dim = m.head_dim
        self.n_heads = self.d_inner // m.head_dim
        self.n_groups = m.n_groups
        self.d_state = m.d_state
        self.d_conv = m.d_conv
        self.chunk = m.chunk_size
        self.scan_backend = m.scan_backend
        self.kernels = cfg.kernels  # the conv's (harness/kernels/causal_conv.py)
        self.conv_dim = self.d_inner + 2 * m.n_groups * m.d_state
        self.in_proj = nn.Linear(cfg.d_model, self.d_inner + self.conv_dim + self.n_heads, bias=m.proj_bias)
        self.conv1d = nn.Conv1d(
            self.conv_dim,
            self.conv_dim,
            kernel_size=m.d_conv,
            groups=self.conv_dim,
            padding=m.d_conv - 1,
            bias=m.conv_bias,
        )
        self.dt_bias = nn.Parameter(torch.empty(self.n_heads))
        self.A_log = nn.Parameter(torch.empty(self.n_heads))
        self.D = nn.Parameter(torch.empty(self.n_heads))
        # The model's norm_eps (mamba_ssm uses 1e-5 here): one epsilon for every norm, as Bamba has.
        self.norm = GatedRMSNorm(self.d_inner, self.d_inner // m.n_groups, eps=cfg.norm_eps)
        self.out_proj = nn.Linear(self.d_inner, cfg.d_model, bias=m.proj_bias)
        for p in (self.dt_bias, self.A_log, self.D):  # excluded from weight decay, as in mamba_ssm
            p._no_weight_decay = True
        self.reset_ssm_parameters(m.dt_min, m.dt_max, m.dt_init_floor, m.A_init_range)

    @torch.no_grad()
    def reset_ssm_parameters(
        self, dt_min: float, dt_max: float, dt_init_floor: float, A_init_range: tuple[float, float]
    ) -> None:
        """mamba_ssm's initialisation: dt log-uniform in [dt_min, dt_max] (inverse softplus into dt_bias),
        A uniform in ``A_init_range`` (stored as log A), D = 1, the gated norm's weight 1."""
        self.dt_bias.copy_(dt_bias_init(self.n_heads, dt_min, dt_max, dt_init_floor))
        self.A_log.copy_(torch.empty(self.n_heads).uniform_(*A_init_range).log())
        self.D.fill_(1.0)
        self.norm.weight.fill_(1.0)
        for p in (self.dt_bias, self.A_log, self.D, self.norm.weight):
            p._no_reinit = True

    def _split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return zxbcdt.split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)

    def _ssm_inputs(self, xBC: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., conv_dim) -> x (..., heads, head_dim), B and C (..., groups, d_state)."""
        gn = self.n_groups * self.d_state
        x, B, C = xBC.split([self.d_inner, gn, gn], dim=-1)
        return (
            x.unflatten(-1, (self.n_heads, self.head_dim)),
            B.unflatten(-1, (self.n_groups, self.d_state)),
            C.unflatten(-1, (self.n_groups, self.d_state)),
        )

    def forward(self, hidden: Tensor, state: Mamba2State | None = None, fresh: bool = True) -> Tensor:
        """hidden: (batch, tokens, d_model). With ``state``, also updates it for later decoding; ``fresh``
        says it holds no tokens yet (otherwise the tokens continue it: a chunked prefill's next chunk)."""
        batch, tokens, _ = hidden.shape
        z, xBC, dt = self._split(self.in_proj(hidden))
        xBC = xBC.transpose(1, 2)  # (batch, conv_dim, tokens)
        continued = state is not None and not fresh
        if continued:
            xBC = torch.cat([state.conv[..., 1:].to(xBC.dtype), xBC], dim=-1)  # the conv's left context
        if state is not None:
            state.conv.copy_(F.pad(xBC, (max(0, self.d_conv - xBC.shape[-1]), 0))[..., -self.d_conv :])
        xBC = causal_conv1d(xBC, self.conv1d.weight, self.conv1d.bias, self.scan_backend, self.kernels)
        x, B, C = self._ssm_inputs(xBC[..., -tokens:].transpose(1, 2))
        dt = F.softplus(dt.float() + self.dt_bias.float())
        A = -torch.exp(self.A_log.float())
        y, last = ssd_scan(
            x.contiguous(),
            dt,
            A,
            B.contiguous(),
            C.contiguous(),
            self.D,
            self.chunk,
            initial_state=state.ssm if continued else None,
            backend=self.scan_backend,
        )
        if state is not None:
            state.ssm.copy_(last)
        return self.out_proj(self.norm(y.flatten(-2), z))

    def step(self, hidden: Tensor, state: Mamba2State) -> Tensor:
        """One token: hidden (batch, d_model) -> (batch, d_model), updating ``state`` in place."""
        z, xBC, dt = self._split(self.in_proj(hidden))
        state.conv.copy_(torch.roll(state.conv, shifts=-1, dims=-1))
        state.conv[:, :, -1] = xBC
        xBC = (state.conv * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            xBC = xBC + self.conv1d.bias
        x, B, C = self._ssm_inputs(F.silu(xBC))
        dt = F.softplus(dt.float() + self.dt_bias.float())
        y = ssd_step(state.ssm, x, dt, -torch.exp(self.A_log.float()), B, C, self.D)
        return self.out_proj(self.norm(y.flatten(-2), z))

    def new_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> Mamba2State:
        return Mamba2State(
            conv=torch.zeros(batch, self.conv_dim, self.d_conv, device=device, dtype=dtype),
            ssm=torch.zeros(
                batch, self.n_heads, self.head_dim, self.d_state, device=device, dtype=torch.float32
            ),
        )
