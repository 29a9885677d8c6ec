"""The hybrid language model: embeddings, a stack of pre-norm residual sublayers, a final norm, an LM head.

Each character of ``ModelConfig.pattern`` becomes one :class:`Block` (``x + sublayer(norm(x))``), so the
model reads top to bottom like the pattern: ``M-M-M-M-*-M-M-M-`` is eight layers, each a mixer block then
an FFN block. Incremental decoding goes through :class:`InferenceCache`, which holds a KV cache for every
attention block and a conv/SSM state for every Mamba block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.model.attention import Attention, KVCache
from harness.model.config import ModelConfig
from harness.model.ffn import MoE, Routing, SwiGLU
from harness.model.mamba import MambaMixer, MambaState
from harness.model.norm import RMSNorm


class Block(nn.Module):
    """One residual sublayer: ``x + layer(norm(x))``; ``symbol`` is its pattern character."""

    def __init__(self, symbol: str, cfg: ModelConfig):
        super().__init__()
        self.symbol = symbol
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        if symbol == "*":
            self.layer: nn.Module = Attention(cfg)
        elif symbol == "M":
            self.layer = MambaMixer(cfg)
        elif symbol == "-":
            self.layer = SwiGLU(cfg.d_model, cfg.d_ff)
        elif symbol == "E":
            self.layer = MoE(cfg)
        else:  # the config validates patterns; this guards direct construction
            raise ValueError(f"unknown pattern symbol {symbol!r}")

    def forward(
        self,
        x: Tensor,
        state: KVCache | MambaState | None = None,
        fresh: bool = True,
        return_attentions: bool = False,
    ) -> tuple[Tensor, Tensor | Routing | None]:
        """Returns the new residual stream and what the sublayer reports: attention probabilities (when
        asked) or MoE routing."""
        h = self.norm(x)
        extra = None
        if isinstance(self.layer, Attention):
            h, extra = self.layer(h, cache=state, return_probs=return_attentions)
        elif isinstance(self.layer, MambaMixer):
            h = self.layer(h, state=state, fresh=fresh)
        elif isinstance(self.layer, MoE):
            h, extra = self.layer(h)
        else:
            h = self.layer(h)
        return x + h, extra


@dataclass
class InferenceCache:
    """Per-block decoding state plus the number of tokens already processed."""

    states: dict[int, KVCache | MambaState] = field(default_factory=dict)
    seen: int = 0

    def kv_bytes(self) -> int:
        return sum(
            s.k.nbytes + s.v.nbytes
            for s in self.states.values()
            if isinstance(s, KVCache) and s.k is not None
        )

    def mamba_bytes(self) -> int:
        return sum(s.conv.nbytes + s.ssm.nbytes for s in self.states.values() if isinstance(s, MambaState))


@dataclass
class LMOutput:
    logits: Tensor  # (batch, tokens, vocab)
    loss: Tensor | None = None  # cross-entropy + aux_loss, when targets are given
    ce_loss: Tensor | None = None
    aux_loss: Tensor | None = None  # MoE load balancing, coefficient applied (0 without MoE)
    moe_aux: Tensor | None = None  # mean over MoE layers, before the coefficient
    expert_counts: Tensor | None = None  # (moe_layers, n_experts) token assignments
    attentions: dict[int, Tensor] = field(default_factory=dict)  # block index -> (b, heads, t, s)


class HybridLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(symbol, cfg) for symbol in cfg.pattern)
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) for embeddings and projections; residual output projections are scaled by
        1/sqrt(2 * layers) (GPT-2 / mamba_ssm prenorm rescaling); Mamba's own dt/A/D init is kept."""
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * max(self.cfg.n_layers, 1))
        for name, p in self.named_parameters():
            if getattr(p, "_no_reinit", False) or name.endswith(".A_log") or p.dim() < 2:
                continue
            if name.endswith(("o_proj.weight", "out_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, out_std)
            elif "conv1d" in name:
                continue  # keep PyTorch's default (kaiming-uniform) conv init, as mamba_ssm does
            else:
                nn.init.normal_(p, 0.0, std)
        for module in self.modules():
            if (
                isinstance(module, nn.Linear)
                and module.bias is not None
                and not getattr(module.bias, "_no_reinit", False)
            ):
                nn.init.zeros_(module.bias)

    def set_scan_backend(self, backend: str) -> None:
        """Choose the selective-scan implementation of every Mamba block (auto/reference/cpu/cuda)."""
        for block in self.blocks:
            if isinstance(block.layer, MambaMixer):
                block.layer.scan_backend = backend

    def new_cache(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
        device = device or self.embed_tokens.weight.device
        dtype = dtype or self.embed_tokens.weight.dtype
        cache = InferenceCache()
        for i, block in enumerate(self.blocks):
            if isinstance(block.layer, Attention):
                cache.states[i] = KVCache()
            elif isinstance(block.layer, MambaMixer):
                cache.states[i] = block.layer.new_state(batch, device, dtype)
        return cache

    def forward(
        self,
        input_ids: Tensor,
        targets: Tensor | None = None,
        cache: InferenceCache | None = None,
        return_attentions: bool = False,
    ) -> LMOutput:
        """input_ids (batch, tokens). ``targets`` (batch, tokens) gives the loss (-100 is ignored).

        With ``cache``, the tokens continue the cached sequence and the cache is updated.
        """
        x = self.embed_tokens(input_ids)
        fresh = cache is None or cache.seen == 0
        attentions: dict[int, Tensor] = {}
        aux_terms, counts = [], []
        for i, block in enumerate(self.blocks):
            state = cache.states.get(i) if cache is not None else None
            x, extra = block(x, state=state, fresh=fresh, return_attentions=return_attentions)
            if isinstance(extra, Routing):
                aux_terms.append(extra.aux_loss)
                counts.append(extra.expert_counts)
            elif extra is not None:
                attentions[i] = extra
        if cache is not None:
            cache.seen += input_ids.shape[1]
        logits = self.lm_head(self.final_norm(x))
        out = LMOutput(logits=logits, attentions=attentions)
        if aux_terms:
            out.moe_aux = torch.stack(aux_terms).mean()
            out.aux_loss = self.cfg.moe.aux_loss_coef * out.moe_aux
            out.expert_counts = torch.stack(counts)
        else:
            out.aux_loss = logits.new_zeros(())
        if targets is not None:
            out.ce_loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
            )
            out.loss = out.ce_loss + out.aux_loss
        return out

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop_token: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue ``input_ids`` (batch, tokens) with the decoding cache; greedy when temperature is 0.

        Returns only the new tokens (batch, <= max_new_tokens); stops early once every row emitted
        ``stop_token``.
        """
        cache = self.new_cache(input_ids.shape[0])
        logits = self(input_ids, cache=cache).logits[:, -1]
        new = []
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            if temperature > 0:
                probs = (logits.float() / temperature).softmax(-1)
                token = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                token = logits.argmax(-1)
            new.append(token)
            if stop_token is not None:
                done |= token == stop_token
                if bool(done.all()):
                    break
            logits = self(token[:, None], cache=cache).logits[:, -1]
        return torch.stack(new, dim=1) if new else input_ids.new_zeros(input_ids.shape[0], 0)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
