"""Causal self-attention with grouped-query heads, optional RoPE, a KV cache, and probability capture.

The fast path is ``F.scaled_dot_product_attention`` (FlashAttention on CUDA). Analysis needs the attention
probabilities themselves (induction heads, label attention), which fused kernels never materialise, so
``return_probs=True`` switches to an explicit softmax(QK^T) path with identical outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.model.config import ModelConfig


@dataclass
class KVCache:
    """Keys and values of one attention layer, preallocated: (batch, kv_heads, max_len, head_dim).

    Allocated once for the longest sequence a decode will reach and written in place, so a decoding step
    never reallocates (and its tensors keep their addresses, which a captured CUDA graph relies on).
    """

    k: Tensor
    v: Tensor

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def write(self, k: Tensor, v: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """Store (batch, kv_heads, tokens, head_dim) at positions start.. and return every key and value
        so far (views, no copy)."""
        end = start + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} tokens; writing up to position {end}")
        self.k[:, :, start:end].copy_(k)
        self.v[:, :, start:end].copy_(v)
        return self.k[:, :, :end], self.v[:, :, :end]

    def write_at(self, k: Tensor, v: Tensor, position: Tensor) -> None:
        """Store one token's (batch, kv_heads, 1, head_dim) at ``position`` (a (1,) device tensor), without
        reading the position on the host."""
        self.k.index_copy_(2, position, k)
        self.v.index_copy_(2, position, v)


def rotary_cos_sin(
    positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos and sin tables (tokens, head_dim) for the half-split ("rotate_half") RoPE convention."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (batch, heads, tokens, head_dim) by position-dependent angles."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.attention.n_heads
        self.n_kv_heads = cfg.attention.kv_heads
        self.head_dim = cfg.head_dim
        self.rope = cfg.attention.rope
        self.rope_theta = cfg.attention.rope_theta
        self.dropout = cfg.attention.dropout
        self.q_proj = nn.Linear(cfg.d_model, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.d_model, bias=False)

    def _qkv(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (batch, tokens, d_model) -> q, k, v as (batch, heads, tokens, head_dim), rotated if RoPE."""
        batch, tokens, _ = x.shape
        q = self.q_proj(x).view(batch, tokens, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, tokens, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, tokens, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope:
            cos, sin = rotary_cos_sin(positions, self.head_dim, self.rope_theta, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v

    def forward(
        self, x: Tensor, cache: KVCache | None = None, past: int = 0, return_probs: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x: (batch, tokens, d_model), continuing ``past`` tokens held in ``cache``. Returns the output and,
        if asked, probabilities (b, h, t, s)."""
        batch, tokens, _ = x.shape
        q, k, v = self._qkv(x, torch.arange(past, past + tokens, device=x.device))
        if cache is not None:
            k, v = cache.write(k, v, past)
        keys = k.shape[2]
        probs = None
        if return_probs:
            groups = self.n_heads // self.n_kv_heads
            kk = k.repeat_interleave(groups, dim=1)
            vv = v.repeat_interleave(groups, dim=1)
            scores = (q.float() @ kk.float().transpose(-1, -2)) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~self._causal_mask(tokens, keys, x.device), float("-inf"))
            probs = scores.softmax(dim=-1)
            out = (probs @ vv.float()).to(q.dtype)
        else:
            gqa = {"enable_gqa": True} if self.n_kv_heads != self.n_heads else {}
            if self.dropout and self.training:
                gqa["dropout_p"] = self.dropout
            if past == 0 or tokens == 1:
                # No cache prefix (plain causal), or one new token that may see everything before it.
                out = F.scaled_dot_product_attention(q, k, v, is_causal=past == 0 and tokens > 1, **gqa)
            else:
                # A chunk continuing the cache: each query sees the whole prefix and the chunk causally.
                # The lower-right causal bias is that mask without materialising it (tokens x keys booleans,
                # gigabytes for a long cache): flash / memory-efficient kernels apply it in-kernel on CUDA.
                # Imported here: torch.nn.attention.bias imports torch._dynamo (~3.5 s; kernels/opaque.py).
                from torch.nn.attention.bias import causal_lower_right

                mask = causal_lower_right(tokens, keys)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **gqa)
        out = out.transpose(1, 2).reshape(batch, tokens, self.n_heads * self.head_dim)
        return self.o_proj(out), probs

    def step(self, x: Tensor, cache: KVCache, position: Tensor, slots: Tensor) -> Tensor:
        """One token per row, x (batch, 1, d_model), at ``position`` ((1,) device tensor), attending over
        the whole preallocated cache with the slots after ``position`` masked out.

        Every shape is fixed by the cache (``slots`` is ``arange(capacity)``) and the position is never read
        on the host, so the step can be captured once in a CUDA graph and replayed at every position.
        """
        batch = x.shape[0]
        q, k, v = self._qkv(x, position)
        cache.write_at(k, v, position)
        mask = (slots <= position)[None]  # (1 query, capacity): broadcasts over batch and heads
        gqa = {"enable_gqa": True} if self.n_kv_heads != self.n_heads else {}
        out = F.scaled_dot_product_attention(q, cache.k, cache.v, attn_mask=mask, **gqa)
        return self.o_proj(out.transpose(1, 2).reshape(batch, 1, self.n_heads * self.head_dim))

    @staticmethod
    def _causal_mask(tokens: int, keys: int, device: torch.device) -> Tensor:
        """Query i (the (keys - tokens + i)-th position overall) may attend to keys 0..keys-tokens+i."""
        q_pos = torch.arange(keys - tokens, keys, device=device)[:, None]
        k_pos = torch.arange(keys, device=device)[None, :]
        return k_pos <= q_pos
