"""The hybrid language model: embeddings, a stack of pre-norm residual sublayers, a final norm, an LM head.

Each character of ``ModelConfig.pattern`` becomes one :class:`Block` (``x + sublayer(norm(x))``), so the
model reads top to bottom like the pattern: ``M-M-M-M-*-M-M-M-`` is eight layers, each a mixer block then
an FFN block. Incremental decoding goes through :class:`InferenceCache`, which holds a preallocated KV
cache for every attention block and a conv/SSM state for every Mamba block; :meth:`HybridLM.prefill` fills
it (in one pass or in chunks) and :meth:`HybridLM.decode_step` is the fixed-shape one-token step over it
that :class:`harness.model.decode.Decoder` runs (or replays as a CUDA graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.config_errors import ConfigError
from harness.kernels import fused
from harness.model.attention import Attention, KVCache
from harness.model.config import ModelConfig
from harness.model.decode import Decoder, InferenceCache
from harness.model.ffn import MoE, Routing, SwiGLU
from harness.model.mamba import MambaMixer, MambaState
from harness.model.mamba2 import Mamba2Mixer, Mamba2State
from harness.model.norm import RMSNorm

RecurrentState = KVCache | MambaState | Mamba2State  # what a block keeps between decoding calls


class Block(nn.Module):
    """One residual sublayer: ``x + layer(norm(x))``; ``symbol`` is its pattern character."""

    def __init__(self, symbol: str, cfg: ModelConfig):
        super().__init__()
        self.symbol = symbol
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.kernels)
        if symbol == "*":
            self.layer: nn.Module = Attention(cfg)
        elif symbol == "M":
            self.layer = MambaMixer(cfg)
        elif symbol == "S":
            self.layer = Mamba2Mixer(cfg)
        elif symbol == "-":
            self.layer = SwiGLU(cfg.d_model, cfg.d_ff)
        elif symbol == "E":
            self.layer = MoE(cfg)
        else:  # the config validates patterns; this guards direct construction
            raise ValueError(f"unknown pattern symbol {symbol!r}")

    def forward(
        self,
        x: Tensor,
        state: RecurrentState | None = None,
        past: int = 0,
        return_attentions: bool = False,
    ) -> tuple[Tensor, Tensor | Routing | None]:
        """Returns the new residual stream and what the sublayer reports: attention probabilities (when
        asked) or MoE routing. ``past`` is how many tokens ``state`` already holds."""
        h = self.norm(x)
        extra = None
        if isinstance(self.layer, Attention):
            h, extra = self.layer(h, cache=state, past=past, return_probs=return_attentions)
        elif isinstance(self.layer, (MambaMixer, Mamba2Mixer)):
            h = self.layer(h, state=state, fresh=past == 0)
        elif isinstance(self.layer, MoE):
            h, extra = self.layer(h)
        else:
            h = self.layer(h)
        return x + h, extra

    def step(self, x: Tensor, state: RecurrentState | None, position: Tensor, slots: Tensor) -> Tensor:
        """One decoding step, x (batch, 1, d_model), with fixed shapes and no host sync (see
        :meth:`HybridLM.decode_step`)."""
        h = self.norm(x)
        if isinstance(self.layer, Attention):
            h = self.layer.step(h, state, position, slots)
        elif isinstance(self.layer, (MambaMixer, Mamba2Mixer)):
            h = self.layer.step(h[:, 0], state)[:, None]
        elif isinstance(self.layer, MoE):
            h = self.layer.decode(h)
        else:
            h = self.layer(h)
        return x + h


@dataclass
class LMOutput:
    logits: Tensor | None  # (batch, tokens, vocab); None when the fused loss never formed them (forward)
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
        self.kernels = cfg.kernels  # the loss's; each norm and Mamba conv holds its own (set_kernels)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        positions = cfg.attention.learned_positions
        self.embed_positions = nn.Embedding(positions, cfg.d_model) if positions else None
        self.embed_dropout = nn.Dropout(cfg.embed_dropout) if cfg.embed_dropout else None
        self.blocks = nn.ModuleList(Block(symbol, cfg) for symbol in cfg.pattern)
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.kernels)
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
            if name.endswith(".experts.gate_up_proj"):  # with its down_proj, in per-expert order
                self.get_submodule(name.removesuffix(".gate_up_proj")).reset_parameters(std, out_std)
            elif name.endswith(".experts.down_proj"):
                continue
            elif name.endswith(("o_proj.weight", "out_proj.weight", "down_proj.weight")):
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
        """Choose the scan implementation of every Mamba block (auto/reference/cpu/cuda/triton). Mamba-2 has
        no CPU-specific path (``cpu`` gives it the reference, chunked PyTorch SSD), and its ``cuda`` is
        mamba_ssm's Triton SSD, which ``triton`` (our Mamba-1 scan) leaves to ``auto``."""
        for block in self.blocks:
            if isinstance(block.layer, MambaMixer):
                block.layer.scan_backend = backend
            elif isinstance(block.layer, Mamba2Mixer):
                block.layer.scan_backend = {"cpu": "reference", "triton": "auto"}.get(backend, backend)

    def set_moe_backend(self, backend: str) -> None:
        """Choose how every MoE layer runs its experts (auto/loop/grouped: :class:`MoE`)."""
        for block in self.blocks:
            if isinstance(block.layer, MoE):
                block.layer.backend = backend

    def set_kernels(self, kernels: str) -> None:
        """Choose eager or fused kernels (auto/eager/fused) for every norm, Mamba conv and the training loss
        (:mod:`harness.kernels.fused`)."""
        for module in self.modules():
            if isinstance(module, (HybridLM, RMSNorm, MambaMixer, Mamba2Mixer)):
                module.kernels = kernels

    def new_cache(
        self,
        batch: int,
        max_len: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> InferenceCache:
        """A zeroed decoding cache for ``batch`` sequences of at most ``max_len`` tokens (prompt included)."""
        if self.embed_positions is not None and max_len > self.embed_positions.num_embeddings:
            raise ValueError(
                f"a cache of {max_len} tokens exceeds the {self.embed_positions.num_embeddings} learned "
                "positions (attention.learned_positions bounds the context)"
            )
        device = device or self.embed_tokens.weight.device
        dtype = dtype or self.embed_tokens.weight.dtype
        states: dict[int, RecurrentState] = {}
        for i, block in enumerate(self.blocks):
            if isinstance(block.layer, Attention):
                shape = (batch, block.layer.n_kv_heads, max_len, block.layer.head_dim)
                k, v = (torch.zeros(shape, device=device, dtype=dtype) for _ in "kv")
                states[i] = KVCache(k, v)
            elif isinstance(block.layer, (MambaMixer, Mamba2Mixer)):
                states[i] = block.layer.new_state(batch, device, dtype)
            elif not isinstance(block.layer, (SwiGLU, MoE)):  # a mixer with no decoding state (yet)
                raise ConfigError(
                    f"block {i} ('{block.symbol}', {type(block.layer).__name__}) keeps no decoding state, so "
                    "this model cannot generate token by token; the suites that only score text (perplexity, "
                    "lm-eval's log-likelihood tasks) still run. docs/extending.md says what a mixer needs",
                    key="pattern",
                )
        return InferenceCache(
            states,
            max_len,
            position=torch.zeros(1, dtype=torch.long, device=device),
            slots=torch.arange(max_len, device=device),
        )

    def forward(
        self,
        input_ids: Tensor,
        targets: Tensor | None = None,
        cache: InferenceCache | None = None,
        return_attentions: bool = False,
        last_only: bool = False,
    ) -> LMOutput:
        """input_ids (batch, tokens). ``targets`` (batch, tokens) gives the loss (-100 is ignored).

        With ``cache``, the tokens continue the cached sequence and the cache is updated; one token after
        a prefill goes through :meth:`decode_step`. ``last_only`` computes the logits of the last position
        only (batch, 1, vocab): a long prefill then never materialises (batch, tokens, vocab) logits.
        """
        tokens = input_ids.shape[1]
        if cache is not None and cache.seen > 0 and tokens == 1 and not return_attentions and targets is None:
            cache.count_step()
            logits = self.decode_step(input_ids[:, 0], cache)[:, None]
            return LMOutput(logits=logits, aux_loss=logits.new_zeros(()))
        past = cache.seen if cache is not None else 0
        x = self._embed(input_ids, past)
        attentions: dict[int, Tensor] = {}
        aux_terms, counts = [], []
        for i, block in enumerate(self.blocks):
            state = cache.states.get(i) if cache is not None else None
            x, extra = block(x, state=state, past=past, return_attentions=return_attentions)
            if isinstance(extra, Routing):
                aux_terms.append(extra.aux_loss)
                counts.append(extra.expert_counts)
            elif extra is not None:
                attentions[i] = extra
        if cache is not None:
            cache.seen += tokens
            cache.position.fill_(cache.seen)
        hidden = self.final_norm(x[:, -1:] if last_only else x)
        # A training step's loss through the fused kernel: the (tokens x vocab) logits are never formed.
        fused_loss = targets is not None and torch.is_grad_enabled() and fused.use_fused(self.kernels, x)
        logits = None if fused_loss else self.lm_head(hidden)
        out = LMOutput(logits=logits, attentions=attentions)
        if aux_terms:
            out.moe_aux = torch.stack(aux_terms).mean()
            out.aux_loss = self.cfg.moe.aux_loss_coef * out.moe_aux
            out.expert_counts = torch.stack(counts)
        else:
            out.aux_loss = x.new_zeros((), dtype=torch.float32)
        if fused_loss:
            out.ce_loss = fused.linear_cross_entropy(hidden, self.lm_head.weight, targets, ignore_index=-100)
        elif targets is not None:
            out.ce_loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
            )
        if targets is not None:
            out.loss = out.ce_loss + out.aux_loss
        return out

    def _embed(self, input_ids: Tensor, past: int) -> Tensor:
        """Token embeddings (batch, tokens, d_model) of a chunk starting at position ``past``, plus learned
        positions when the model has them, then embedding dropout (training only)."""
        x = self.embed_tokens(input_ids)
        if self.embed_positions is not None:
            end = past + input_ids.shape[1]
            if end > self.embed_positions.num_embeddings:
                raise ValueError(
                    f"position {end - 1} is beyond the {self.embed_positions.num_embeddings} learned "
                    "positions (attention.learned_positions bounds the context)"
                )
            x = x + self.embed_positions(torch.arange(past, end, device=input_ids.device))
        return self.embed_dropout(x) if self.embed_dropout is not None else x

    def prefill(self, input_ids: Tensor, cache: InferenceCache, chunk: int | None = None) -> Tensor:
        """Run the prompts input_ids (batch, tokens) into ``cache``; returns the last logits (batch, vocab).

        ``chunk`` feeds at most that many tokens per forward pass, each continuing the cache (None: one
        pass). The result is the one-pass result, but the transient activations of a pass (Mamba's
        in_proj/conv/scan tensors, the FFN's hidden layer: tens of KB per token at 1.3B) scale with the
        chunk instead of the prompt, so the longest context that fits is bounded by the caches, as in a
        serving engine's chunked prefill.
        """
        if input_ids.shape[1] == 0 or (chunk is not None and chunk < 1):
            raise ValueError(
                f"a prefill needs tokens and chunks of at least one, got {input_ids.shape[1]}, {chunk}"
            )
        step = chunk or input_ids.shape[1]
        for start in range(0, input_ids.shape[1], step):
            logits = self(input_ids[:, start : start + step], cache=cache, last_only=True).logits
        return logits[:, -1]

    def decode_step(self, tokens: Tensor, cache: InferenceCache) -> Tensor:
        """Logits (batch, vocab) after one more token per row, tokens (batch,), at ``cache.position``.

        Fixed shapes, in-place cache updates and no host sync (MoE layers use their dense
        :meth:`MoE.decode`): the function a CUDA graph captures. Advances ``cache.position``, not
        ``cache.seen``.
        """
        x = self.embed_tokens(tokens)[:, None]
        if self.embed_positions is not None:  # new_cache bounds the positions by the table
            x = x + self.embed_positions(cache.position)
        for i, block in enumerate(self.blocks):
            x = block.step(x, cache.states.get(i), cache.position, cache.slots)
        cache.position.add_(1)
        return self.lm_head(self.final_norm(x))[:, 0]

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop_token: int | None = None,
        generator: torch.Generator | None = None,
        cuda_graphs: bool = False,
    ) -> Tensor:
        """Continue ``input_ids`` (batch, tokens) with the static decoding cache; greedy when temperature
        is 0. ``cuda_graphs`` replays the decoding step as a CUDA graph (on CUDA only; capture costs a
        few steps, so it pays off for long generations).

        Returns only the new tokens (batch, <= max_new_tokens); stops early once every row emitted
        ``stop_token``.
        """
        batch, tokens = input_ids.shape
        decoder = Decoder(self, batch, tokens + max_new_tokens, cuda_graphs=cuda_graphs)
        return decoder.generate(input_ids, max_new_tokens, temperature, stop_token, generator)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
