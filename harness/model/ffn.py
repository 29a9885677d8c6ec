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

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.kernels.opaque import outside_compiled_graphs
from harness.model.config import ModelConfig

V = TypeVar("V")


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


class Experts(nn.Module):
    """n SwiGLU experts' weights, stacked: ``gate_up_proj`` (n, 2 * d_ff, d_model), each expert's gate rows
    then its up rows, and ``down_proj`` (n, d_model, d_ff); transformers 5's ``JambaExperts`` layout.

    Stacked, the grouped GEMM reads them as they are: kept as one ``nn.Linear`` per expert, they had to be
    stacked again on every step (a copy of all expert weights forward, another of their gradients
    backward, and the stack saved for backward: ~7 GB at the 1.3b MoE arm). Checkpoints written with one
    ``{e}.{gate,up,down}_proj.weight`` per expert (this project's before, Jamba-v0.1's) still load.
    """

    def __init__(self, n_experts: int, d_model: int, d_ff: int):
        super().__init__()
        self.d_ff = d_ff
        self.gate_up_proj = nn.Parameter(torch.empty(n_experts, 2 * d_ff, d_model))
        self.down_proj = nn.Parameter(torch.empty(n_experts, d_model, d_ff))
        self.register_load_state_dict_pre_hook(_stack_per_expert_weights)
        self._init_each(lambda w: nn.init.kaiming_uniform_(w, a=math.sqrt(5)))  # nn.Linear's default

    @torch.no_grad()
    def _init_each(
        self, init: Callable[[Tensor], object], down: Callable[[Tensor], object] | None = None
    ) -> None:
        """Apply ``init`` to each expert's gate, up and down weight (``down`` to the latter when given), in
        the order of one ``nn.Linear`` per expert: a seed draws the weights it drew before the experts were
        stacked."""
        for gate_up, down_w in zip(self.gate_up_proj, self.down_proj, strict=True):
            init(gate_up[: self.d_ff])
            init(gate_up[self.d_ff :])
            (down or init)(down_w)

    def reset_parameters(self, std: float, out_std: float) -> None:
        """Normal(0, std) gate and up, normal(0, out_std) down (:meth:`HybridLM.reset_parameters`)."""
        self._init_each(lambda w: nn.init.normal_(w, 0.0, std), lambda w: nn.init.normal_(w, 0.0, out_std))

    def forward(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        """Expert e's SwiGLU on ``inputs[e]`` (..., d_model), for every expert. The stacks are unbound once,
        so backward joins the experts' gradients in one copy (indexing them per expert would build a zero
        tensor the size of all the experts for each)."""
        outputs = []
        for x, gate_up, down in zip(inputs, self.gate_up_proj.unbind(), self.down_proj.unbind(), strict=True):
            gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
            outputs.append(F.linear(F.silu(gate) * up, down))
        return outputs


def stack_experts(gates: list[Tensor], ups: list[Tensor], downs: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-expert (d_ff, d_model) gate and up and (d_model, d_ff) down weights -> :class:`Experts`'
    ``gate_up_proj`` and ``down_proj``."""
    gate_up = torch.stack([torch.cat([g, u]) for g, u in zip(gates, ups, strict=True)])
    return gate_up, torch.stack(downs)


# A parameter of one expert in the per-expert layout: ``<...>.experts.{e}.{gate,up,down}_proj.weight``.
PER_EXPERT_KEY = re.compile(
    r"^(?P<experts>(?:.*\.)?experts)\.(?P<e>\d+)\.(?P<kind>gate_proj|up_proj|down_proj)\.weight$"
)
EXPERT_KINDS = ("gate_proj", "up_proj", "down_proj")


def stack_per_expert(
    entries: Mapping[str, V], stack: Callable[[list[V], list[V], list[V]], tuple[V, V]] = stack_experts
) -> dict[str, V]:
    """``entries`` keyed by parameter name (weights, an optimizer's per-parameter state, ...) with every
    per-expert ``<p>.experts.{e}.{gate,up,down}_proj.weight`` entry replaced by ``<p>.experts.gate_up_proj``
    and ``<p>.experts.down_proj``, which ``stack`` makes from the experts' gate, up and down entries in
    expert order (:func:`stack_experts` for weights). The pair takes the place of the first per-expert
    entry; everything else passes through in order. ValueError names experts that are incomplete."""
    out: dict[str, Any] = {}
    groups: dict[str, dict[int, dict[str, V]]] = {}
    for key, value in entries.items():
        m = PER_EXPERT_KEY.match(key)
        if m is None:
            out[key] = value
            continue
        if m["experts"] not in groups:
            out[m["experts"] + ".gate_up_proj"] = out[m["experts"] + ".down_proj"] = None  # their place
        groups.setdefault(m["experts"], {}).setdefault(int(m["e"]), {})[m["kind"]] = value
    for prefix, experts in groups.items():
        n = len(experts)
        if sorted(experts) != list(range(n)) or any(len(e) != 3 for e in experts.values()):
            raise ValueError(f"incomplete experts under {prefix!r}: found {sorted(experts)}")
        by_kind = ([experts[e][kind] for e in range(n)] for kind in EXPERT_KINDS)
        out[prefix + ".gate_up_proj"], out[prefix + ".down_proj"] = stack(*by_kind)
    return out


def _stack_per_expert_weights(module: Experts, state_dict: dict, prefix: str, *_: object) -> None:
    """load_state_dict pre-hook: per-expert weights under ``prefix`` -> the stacked pair, so checkpoints
    from before the experts were stacked load unchanged."""
    mine = {key: value for key, value in state_dict.items() if key.startswith(prefix)}
    try:
        stacked = stack_per_expert(mine)
    except ValueError:
        return  # incomplete: load_state_dict then names what is missing and what is unexpected
    for key in mine:
        del state_dict[key]
    state_dict.update(stacked)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype matmuls on ``x`` run in: autocast's where it is on (it does not cover ``_grouped_mm``)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class DispatchRows(torch.autograd.Function):
    """``flat.index_select(0, token)`` (each token K times, rows sorted by expert) with a backward free of
    atomics: autograd's would ``index_add_`` the K row gradients of each token, whose order, and in bf16
    whose sum, CUDA leaves to chance. Here each token's K gradients are gathered back into choice order
    through the inverse permutation ``unsort`` and summed, the same every run (as the forward's combine)."""

    @staticmethod
    def forward(ctx, flat: Tensor, token: Tensor, unsort: Tensor, top_k: int) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(unsort)
        ctx.top_k = top_k
        return flat.index_select(0, token)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # noqa: ANN001
        (unsort,) = ctx.saved_tensors
        rows = grad.index_select(0, unsort).view(-1, ctx.top_k, grad.shape[-1])
        return rows.sum(dim=1), None, None, None


def load_balancing_loss(probs: Tensor, top_idx: Tensor, n_experts: int) -> Tensor:
    """Switch-style loss: probs (tokens, n) router softmax, top_idx (tokens, K) chosen experts."""
    mask = F.one_hot(top_idx, n_experts).float()  # (tokens, K, n)
    tokens_per_expert = mask.mean(dim=0)  # (K, n)
    prob_per_expert = probs.mean(dim=0)  # (n,)
    return n_experts * (tokens_per_expert * prob_per_expert[None, :]).sum()


def grouped_unsupported(x: Tensor, d_ff: int, dtype: torch.dtype) -> str | None:
    """Why ``torch._grouped_mm`` cannot run the experts on ``x`` without a host sync (None: it can).

    On CUDA only bf16 operands on compute capability 9.x/10.x take its CUTLASS kernel; any other dtype or
    GPU falls back inside ATen to a loop that copies the group offsets to the host, which is what this
    path exists to avoid. On CPU that fallback (per-group ``mm``) is exact and costs no sync. Every operand
    stride must be a multiple of 16 bytes, so ``d_model`` and ``d_ff`` must be multiples of
    16 / element size."""
    if not hasattr(torch, "_grouped_mm"):
        return f"torch {torch.__version__} has no _grouped_mm"
    # CPU runs ATen's composite fallback; CUDA needs its own kernel (the fallback there syncs).
    if x.device.type == "cpu":
        runs = torch._C._dispatch_has_computed_kernel_for_dispatch_key("aten::_grouped_mm", "CPU")
    else:
        runs = x.device.type == "cuda" and torch._C._dispatch_has_kernel_for_dispatch_key(
            "aten::_grouped_mm", "CUDA"
        )
    if not runs:
        return f"torch {torch.__version__} has no _grouped_mm kernel for {x.device.type}"
    if torch.compiler.is_compiling() and dtype != torch.bfloat16:
        # torch.compile traces the op through its meta function, which accepts bf16 only (eager CPU runs
        # the composite fallback in any dtype)
        return f"under torch.compile, _grouped_mm takes bf16 only, got {dtype}"
    if x.device.type == "cuda":
        if dtype != torch.bfloat16:
            return f"the CUDA grouped GEMM kernel takes bf16 only, got {dtype}"
        if torch.cuda.get_device_capability(x.device)[0] not in (9, 10):
            return "the CUDA grouped GEMM kernel needs compute capability 9.x or 10.x"
    align = 16 // dtype.itemsize
    if x.shape[-1] % align or d_ff % align:
        return f"d_model {x.shape[-1]} and d_ff {d_ff} must be multiples of {align} for {dtype}"
    return None


def takes_grouped(backend: str, x: Tensor, d_ff: int, dtype: torch.dtype) -> bool:
    """Whether MoE ``backend`` (auto, loop or grouped) runs experts of width ``d_ff`` on ``x`` in ``dtype``
    through the grouped path; ``grouped`` where it cannot run is an error."""
    if backend == "loop":
        return False
    reason = grouped_unsupported(x, d_ff, dtype)
    if reason is not None and backend == "grouped":
        raise ValueError(f"moe.backend 'grouped' cannot run here: {reason}")
    return reason is None


@outside_compiled_graphs
def _experts_in_turn(experts: Experts, rows: Tensor, counts: Tensor) -> Tensor:
    """The ``loop`` backend: each expert on its slice of ``rows`` (sorted by expert, ``counts`` per expert).

    An expert that no token picked still runs (on zero rows), so its parameters get a zero gradient rather
    than none: data-parallel reductions then see the same tensors on every rank. The slice sizes are data,
    read on the host; traced by ``torch.compile`` they would specialise the graph on each step's counts, a
    recompile per step until dynamo's recompile limit and then eager anyway, so this runs eagerly between
    the compiled graphs."""
    return torch.cat(experts(rows.split(counts.tolist())))


class MoE(nn.Module):
    """Top-K mixture of SwiGLU experts.

    The experts' weights are stacked (:class:`Experts`), whichever ``backend`` runs them:

    * ``loop``: the assignments sorted by expert, split by the per-expert counts (one host sync per layer)
      and each expert applied to its slice;
    * ``grouped``: the same sorted rows through two ``torch._grouped_mm`` calls over the stacked weights,
      with the group offsets kept on the device: no per-expert launch, no host sync;
    * ``auto``: ``grouped`` where :func:`grouped_unsupported` has no objection, else ``loop``.

    The backend is a run-time setting (``moe.backend``, :meth:`HybridLM.set_moe_backend`), like the scan
    backend: both give the same mixture.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.moe is not None
        self.n_experts = cfg.moe.n_experts
        self.top_k = cfg.moe.top_k
        self.renormalize = cfg.moe.renormalize
        self.backend = cfg.moe.backend
        self.d_ff = cfg.expert_d_ff
        self.router = nn.Linear(cfg.d_model, self.n_experts, bias=False)
        self.experts = Experts(self.n_experts, cfg.d_model, cfg.expert_d_ff)

    def route(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """flat (tokens, d) -> router probs (tokens, n), top-K weights and indices (tokens, K)."""
        probs = self.router(flat).float().softmax(dim=-1)
        weights, idx = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return probs, weights, idx

    def use_grouped(self, flat: Tensor) -> bool:
        """Whether this call takes the grouped path (:func:`takes_grouped` for this layer's backend)."""
        return takes_grouped(self.backend, flat, self.d_ff, _compute_dtype(flat))

    def forward(self, x: Tensor) -> tuple[Tensor, Routing]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs, weights, idx = self.route(flat)
        # Sort the (token, choice) assignments by expert so each expert reads one contiguous slice.
        choice_expert = idx.flatten()
        order = torch.argsort(choice_expert, stable=True)
        token = order // self.top_k
        # scatter_add rather than bincount: CUDA's bincount reads the maximum back to the host.
        counts = torch.zeros(self.n_experts, dtype=torch.long, device=flat.device)
        counts = counts.scatter_add(0, choice_expert, torch.ones_like(choice_expert))
        # unsort[i]: where (token i // K, choice i % K) sits among the sorted rows.
        unsort = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
        gathered = DispatchRows.apply(flat, token, unsort, self.top_k)
        if self.use_grouped(flat):
            y = self._grouped(gathered, counts)
        else:
            y = _experts_in_turn(self.experts, gathered, counts)
        # Combine by gathering each (token, choice) row back into place and summing a token's top-K choices
        # in choice order: no atomics (an index_add_ over the sorted rows is one per row on CUDA, so its sums'
        # order, and in bf16 their values, vary run to run), and the backward of a permutation has none.
        y = y.index_select(0, unsort).view(-1, self.top_k, shape[-1])
        out = (y * weights[..., None].to(y.dtype)).sum(dim=1).to(flat.dtype)
        routing = Routing(load_balancing_loss(probs, idx, self.n_experts), counts)
        return out.view(shape), routing

    def _grouped(self, rows: Tensor, counts: Tensor) -> Tensor:
        """Every expert's SwiGLU on its slice of ``rows`` (sorted by expert, ``counts`` per expert): one
        grouped GEMM for gate and up together, one for down, reading the stacked weights in place (a cast
        to autocast's dtype aside, as the loop path's ``F.linear`` makes)."""
        dtype = _compute_dtype(rows)
        gate_up = self.experts.gate_up_proj.to(dtype).transpose(1, 2)  # (n, d_model, 2 d_ff)
        down = self.experts.down_proj.to(dtype).transpose(1, 2)  # (n, d_ff, d_model)
        offs = counts.cumsum(0).to(torch.int32)
        gate, up = torch._grouped_mm(rows.to(dtype), gate_up, offs=offs).chunk(2, dim=-1)
        return torch._grouped_mm(F.silu(gate) * up, down, offs=offs)

    def decode(self, x: Tensor) -> Tensor:
        """The same mixture for a decoding step, without a host sync: every expert runs on every row and
        unchosen experts get weight 0.

        ``forward``'s loop backend splits rows by expert, which needs the per-expert counts on the host and
        so cannot be captured in a CUDA graph; at one token per row the extra expert FLOPs are cheaper than
        that sync. The chosen experts' outputs are weighted and summed in choice order, as ``forward`` does.
        """
        flat = x.reshape(-1, x.shape[-1])
        _, weights, idx = self.route(flat)
        every = torch.stack(self.experts([flat] * self.n_experts), dim=1)  # (rows, n_experts, d)
        chosen = every.gather(1, idx[..., None].expand(-1, -1, flat.shape[-1]))  # (rows, K, d)
        return (chosen * weights[..., None].to(chosen.dtype)).sum(dim=1).to(flat.dtype).view(x.shape)
