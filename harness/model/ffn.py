"""Feed-forward sublayers: the dense SwiGLU MLP and the mixture-of-experts FFN.

MoE routing follows Jamba (and Mixtral): a bias-free linear router, softmax over all experts in fp32,
top-K selection. Jamba does *not* renormalise the K selected probabilities (``renormalize: false``);
Mixtral does. The load-balancing loss is the Switch Transformer's, in Hugging Face's form generalised to
top-K:

    aux = n * sum_{k,e} f_{k,e} * P_e

where f_{k,e} is the share of tokens whose k-th choice is expert e and P_e the mean router probability of
expert e. It equals K when routing is perfectly balanced and grows as it concentrates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.model.config import ModelConfig


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), the Llama/Mistral/Jamba MLP."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@dataclass
class Routing:
    """What one MoE layer decided for a batch, kept for the loss and for logging expert load."""

    aux_loss: Tensor  # scalar, before the coefficient
    expert_counts: Tensor  # (n_experts,) token assignments per expert (top-K choices counted)


def load_balancing_loss(probs: Tensor, top_idx: Tensor, n_experts: int) -> Tensor:
    """Switch-style loss: probs (tokens, n) router softmax, top_idx (tokens, K) chosen experts."""
    mask = F.one_hot(top_idx, n_experts).float()  # (tokens, K, n)
    tokens_per_expert = mask.mean(dim=0)  # (K, n)
    prob_per_expert = probs.mean(dim=0)  # (n,)
    return n_experts * (tokens_per_expert * prob_per_expert[None, :]).sum()


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.moe is not None
        self.n_experts = cfg.moe.n_experts
        self.top_k = cfg.moe.top_k
        self.renormalize = cfg.moe.renormalize
        self.router = nn.Linear(cfg.d_model, self.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.d_model, cfg.expert_d_ff) for _ in range(self.n_experts))

    def route(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """flat (tokens, d) -> router probs (tokens, n), top-K weights and indices (tokens, K)."""
        probs = self.router(flat).float().softmax(dim=-1)
        weights, idx = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return probs, weights, idx

    def forward(self, x: Tensor) -> tuple[Tensor, Routing]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs, weights, idx = self.route(flat)
        # Sort the (token, choice) assignments by expert so each expert reads one contiguous slice: one
        # host sync per layer (the split sizes) instead of one per expert.
        choice_expert = idx.flatten()
        order = torch.argsort(choice_expert, stable=True)
        token = order // self.top_k
        counts = torch.bincount(choice_expert, minlength=self.n_experts)
        gathered = flat[token]
        # An expert that no token picked still runs (on zero rows), so its parameters get a zero gradient
        # rather than none: data-parallel reductions then see the same tensors on every rank.
        chunks = gathered.split(counts.tolist())
        ys = [expert(chunk) for expert, chunk in zip(self.experts, chunks, strict=True)]
        y = torch.cat(ys) * weights.flatten()[order, None].to(flat.dtype)
        out = torch.zeros_like(flat).index_add_(0, token, y.to(flat.dtype))
        routing = Routing(load_balancing_loss(probs, idx, self.n_experts), counts)
        return out.view(shape), routing

    def decode(self, x: Tensor) -> Tensor:
        """The same mixture for a decoding step, without a host sync: every expert runs on every row and
        unchosen experts get weight 0.

        ``forward`` splits rows by expert, which needs the per-expert counts on the host and so cannot be
        captured in a CUDA graph; at one token per row the extra expert FLOPs are cheaper than that sync.
        Contributions are summed in expert order, as ``forward``'s sorted ``index_add_`` does.
        """
        flat = x.reshape(-1, x.shape[-1])
        _, weights, idx = self.route(flat)
        gate = torch.zeros(flat.shape[0], self.n_experts, device=flat.device, dtype=weights.dtype)
        gate = gate.scatter(1, idx, weights).to(flat.dtype)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            out = out + gate[:, e, None] * expert(flat)
        return out.view(x.shape)
