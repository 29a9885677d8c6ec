"""Model configuration: the layer pattern and the settings of each kind of sublayer.

The **layer pattern** is the single source of truth for the architecture. It is a Megatron-style string
with one character per residual sublayer:

====  ==========================================
``*``  attention mixer
``M``  Mamba (Mamba-1, selective scan) mixer
``S``  Mamba-2 (SSD, "structured state-space duality") mixer
``-``  dense SwiGLU MLP
``E``  mixture-of-experts SwiGLU FFN
====  ==========================================

The paper's "layer" is a mixer followed by an FFN, so pure attention is ``*-*-...``, pure Mamba (as in the
paper's ablations, Mamba interleaved with MLPs) is ``M-M-...``, the 1:7 block is ``M-M-M-M-*-M-M-M-`` and
Jamba-v0.1 is ``(M-MEM-ME*-MEM-ME)x4``. A group in parentheses followed by ``xN`` is repeated N times.

The paper's shorthand is accepted too (:class:`LayoutConfig`): ``l`` layers, an attention-to-Mamba ratio
``a:m`` with the position of the attention layer(s) in each period, MoE every ``e`` layers at an offset;
``n`` experts and top-``K`` live in :class:`MoEConfig`. :func:`expand_layout` turns it into the string and
:func:`describe_pattern` recovers the shorthand from a string, so a plan can show both.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from harness.config_errors import ConfigError
from harness.config_schema import later_field, runtime_field

# "S" for Mamba-2's SSD: "M" stays Mamba-1, the paper's (and Jamba's) choice, so every existing pattern keeps
# its meaning.
MIXERS = {"*": "attention", "M": "mamba", "S": "mamba2"}
FFNS = {"-": "mlp", "E": "moe"}
SYMBOLS = {**MIXERS, **FFNS}


@dataclass
class AttentionConfig:
    """Causal self-attention with grouped-query heads and optional rotary embeddings."""

    n_heads: int = 8
    # Key/value heads for grouped-query attention; None means n_heads (multi-head attention).
    n_kv_heads: int | None = None
    # None means d_model // n_heads.
    head_dim: int | None = None
    # Jamba uses no positional information at all (the paper's Table 8 compares with RoPE).
    rope: bool = False
    rope_theta: float = 10000.0
    # Learned absolute positions (GPT-2's, and Zoology's attention models'): a table of this many rows added
    # to the token embeddings before the first block, which bounds the context; 0: none. Not with RoPE.
    learned_positions: int = later_field(0)
    # Dropout on the attention probabilities while training (Zoology's MHA: 0.1); 0 for the paper's models.
    dropout: float = later_field(0.0)

    def __post_init__(self) -> None:
        if self.n_heads < 1:
            raise ConfigError(f"must be >= 1, got {self.n_heads}", key="n_heads")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise ConfigError(
                f"n_kv_heads={self.n_kv_heads} must be >= 1 and divide n_heads={self.n_heads}",
                key="n_kv_heads",
            )
        if self.head_dim is not None and self.head_dim < 1:
            raise ConfigError(f"must be >= 1, got {self.head_dim}", key="head_dim")
        if self.rope and self.head_dim is not None and self.head_dim % 2:
            raise ConfigError(f"RoPE needs an even head_dim, got {self.head_dim}", key="head_dim")
        if self.learned_positions < 0:
            raise ConfigError(
                f"must be >= 0 (0: none), got {self.learned_positions}", key="learned_positions"
            )
        if self.learned_positions and self.rope:
            raise ConfigError(
                "choose one positional encoding: rope: true or learned_positions > 0, not both",
                key="learned_positions",
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"must be in [0, 1), got {self.dropout}", key="dropout")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads


@dataclass
class MambaConfig:
    """Mamba-1 mixer settings; names follow mamba_ssm's ``Mamba`` module."""

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    # None means ceil(d_model / 16), mamba_ssm's default.
    dt_rank: int | None = None
    # RMSNorm on the x_proj outputs dt, B and C: the paper's stabilizer against loss spikes at scale.
    inner_rmsnorm: bool = True
    conv_bias: bool = True
    proj_bias: bool = False
    # dt is initialised log-uniform in [dt_min, dt_max] through an inverse softplus of the dt_proj bias.
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    # Which selective-scan implementation runs (harness/kernels/selective_scan.py): a run-time choice, not
    # part of the architecture, so it is left out of run ids.
    scan_backend: Literal["auto", "reference", "cpu", "cuda", "triton"] = runtime_field("auto")

    def __post_init__(self) -> None:
        for name in ("d_state", "d_conv", "expand"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=name)
        if self.dt_rank is not None and self.dt_rank < 1:
            raise ConfigError(f"must be >= 1, got {self.dt_rank}", key="dt_rank")
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"need 0 < dt_min <= dt_max, got {self.dt_min} and {self.dt_max}", key="dt_min")


@dataclass
class Mamba2Config:
    """Mamba-2 (SSD) mixer settings; names follow mamba_ssm's ``Mamba2`` module."""

    d_state: int = 64  # state size per head (Mamba-2 uses 64-128; Mamba-1's 16 is per channel)
    d_conv: int = 4
    expand: int = 2
    head_dim: int = 64  # channels per head: heads = expand * d_model / head_dim
    n_groups: int = 1  # B and C are shared by heads / n_groups heads each (as GQA shares keys)
    chunk_size: int = 256  # tokens per chunk of the SSD scan (a speed setting of the kernels, not the maths)
    conv_bias: bool = True
    proj_bias: bool = False
    # dt is initialised log-uniform in [dt_min, dt_max] through an inverse softplus of dt_bias; A uniformly.
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    A_init_range: tuple[float, float] = (1.0, 16.0)
    # Which SSD implementation runs (harness/kernels/ssd.py): a run-time choice, left out of run ids.
    scan_backend: Literal["auto", "reference", "cuda"] = runtime_field("auto")

    def __post_init__(self) -> None:
        for name in ("d_state", "d_conv", "expand", "head_dim", "n_groups", "chunk_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=name)
        self.A_init_range = tuple(self.A_init_range)
        if len(self.A_init_range) != 2 or not 0 < self.A_init_range[0] <= self.A_init_range[1]:
            raise ConfigError(
                f"must be [low, high] with 0 < low <= high, got {self.A_init_range}", key="A_init_range"
            )
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"need 0 < dt_min <= dt_max, got {self.dt_min} and {self.dt_max}", key="dt_min")


@dataclass
class MoEConfig:
    """Mixture of experts: n experts, top-K softmax router, Switch-style load-balancing loss."""

    n_experts: int = 16
    top_k: int = 2
    # Jamba does not renormalise the selected top-K probabilities; Mixtral does.
    renormalize: bool = False
    # Load-balancing loss coefficient (0.001 is Hugging Face Jamba's default; the paper does not say).
    aux_loss_coef: float = 0.001
    # Hidden width of each expert; None means the dense MLP's d_ff.
    d_ff: int | None = None
    # How the experts run (harness/model/ffn.py): one grouped GEMM over all experts, a loop over them, or
    # auto (grouped where torch's grouped GEMM runs without a host sync). A run-time choice, not part of
    # the architecture; added after runs were made, so left out of run ids whatever its value.
    backend: Literal["auto", "loop", "grouped"] = runtime_field("auto", later=True)

    def __post_init__(self) -> None:
        if self.n_experts < 1:
            raise ConfigError(f"must be >= 1, got {self.n_experts}", key="n_experts")
        if not 1 <= self.top_k <= self.n_experts:
            raise ConfigError(
                f"top_k (K) = {self.top_k} must be between 1 and n_experts (n) = {self.n_experts}",
                key="top_k",
            )
        if self.aux_loss_coef < 0:
            raise ConfigError(f"must be >= 0, got {self.aux_loss_coef}", key="aux_loss_coef")
        if self.d_ff is not None and self.d_ff < 1:
            raise ConfigError(f"must be >= 1, got {self.d_ff}", key="d_ff")


@dataclass
class LayoutConfig:
    """The paper's shorthand for a layer pattern.

    ``layers`` is l; ``attn_mamba`` is a:m ("1:7", "1:3", "1:0" for pure attention, "0:1" for pure Mamba);
    each period of a+m layers holds its a attention layers starting at ``attn_offset`` (None: the middle of
    the period, which for 1:7 gives Jamba's offset 4); ``ssm`` says whether the m layers are Mamba-1 or
    Mamba-2. ``moe_every`` is e (0: no MoE); MoE replaces the MLP
    of the layers i with i % e == ``moe_offset`` (None: e - 1, Jamba's odd layers for e = 2).
    """

    layers: int
    attn_mamba: str = "1:7"
    attn_offset: int | None = None
    moe_every: int = 0
    moe_offset: int | None = None
    # Which Mamba the m layers are: Mamba-1 ('M', the paper's) or Mamba-2 ('S').
    ssm: Literal["mamba", "mamba2"] = later_field("mamba")


@dataclass
class ModelConfig:
    """A hybrid attention / Mamba / MoE decoder-only language model."""

    vocab_size: int
    d_model: int
    # Hidden width of the dense SwiGLU MLP.
    d_ff: int
    # Exactly one of `pattern` and `layout` is given; `pattern` is filled in from `layout`.
    pattern: str | None = None
    layout: LayoutConfig | None = None
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    mamba: MambaConfig = field(default_factory=MambaConfig)
    # Mamba-2 ('S' layers); filled in with the defaults when the pattern has one. Added after runs were
    # made: absent (None) for every other model, so their run ids are unchanged.
    mamba2: Mamba2Config | None = later_field(None)
    moe: MoEConfig | None = None
    # The paper's layers pair a mixer with an FFN; set false to allow e.g. original-Mamba "MMMM" stacks.
    require_ffn: bool = True
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    init_std: float = 0.02
    # Dropout on the (token + position) embeddings while training (Zoology's Transformers: 0.1); 0 for the
    # paper's models.
    embed_dropout: float = later_field(0.0)
    # Which kernels run the RMSNorms, Mamba's conv and the training loss (harness/kernels/fused.py): eager
    # PyTorch, or fused Triton kernels (auto: fused on CUDA when liger-kernel is installed). Same maths; a
    # run-time choice added after runs were made, so left out of run ids whatever its value.
    kernels: Literal["auto", "eager", "fused"] = runtime_field("auto", later=True)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "d_ff"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=name)
        if (self.pattern is None) == (self.layout is None):
            raise ConfigError(
                "give exactly one of 'pattern' (e.g. 'M-M-M-M-*-M-M-M-') and 'layout' "
                "(e.g. {layers: 8, attn_mamba: '1:7'})",
                key="pattern",
            )
        if self.layout is not None:
            self.pattern = expand_layout(self.layout)
            self.layout = None
        self.pattern = normalize_pattern(self.pattern, require_ffn=self.require_ffn)
        if "E" in self.pattern and self.moe is None:
            raise ConfigError(
                "the pattern has MoE sublayers ('E') but there is no 'moe' section; add e.g. "
                "moe: {n_experts: 16, top_k: 2}",
                key="moe",
            )
        if "S" in self.pattern:
            if self.mamba2 is None:
                self.mamba2 = Mamba2Config()
            m2 = self.mamba2
            if (m2.expand * self.d_model) % m2.head_dim:
                raise ConfigError(
                    f"mamba2: expand x d_model = {m2.expand * self.d_model} is not a multiple of head_dim "
                    f"{m2.head_dim}",
                    key="mamba2.head_dim",
                )
            if (m2.expand * self.d_model // m2.head_dim) % m2.n_groups:
                raise ConfigError(
                    f"mamba2: {m2.expand * self.d_model // m2.head_dim} heads do not split into n_groups "
                    f"{m2.n_groups}",
                    key="mamba2.n_groups",
                )
        if "*" in self.pattern:
            head_dim = self.attention.head_dim or self.d_model // self.attention.n_heads
            if self.attention.head_dim is None and self.d_model % self.attention.n_heads:
                raise ConfigError(
                    f"d_model={self.d_model} is not divisible by n_heads={self.attention.n_heads}; "
                    "set attention.head_dim explicitly",
                    key="attention.n_heads",
                )
            if self.attention.rope and head_dim % 2:
                raise ConfigError(f"RoPE needs an even head dimension, got {head_dim}", key="attention.rope")
        elif self.attention.learned_positions:
            raise ConfigError(
                f"learned_positions is an attention option, but the pattern {self.pattern!r} has no "
                "attention layer ('*'); set it to 0",
                key="attention.learned_positions",
            )
        if not 0 <= self.embed_dropout < 1:
            raise ConfigError(f"must be in [0, 1), got {self.embed_dropout}", key="embed_dropout")

    # Derived sizes, named as in mamba_ssm / transformers.
    @property
    def head_dim(self) -> int:
        return self.attention.head_dim or self.d_model // self.attention.n_heads

    @property
    def d_inner(self) -> int:
        return self.mamba.expand * self.d_model

    @property
    def dt_rank(self) -> int:
        return self.mamba.dt_rank or math.ceil(self.d_model / 16)

    @property
    def expert_d_ff(self) -> int:
        return (self.moe.d_ff if self.moe and self.moe.d_ff else None) or self.d_ff

    @property
    def n_layers(self) -> int:
        """Number of mixers: the paper's layer count."""
        return sum(c in MIXERS for c in self.pattern)

    def count(self, symbol: str) -> int:
        return self.pattern.count(symbol)


_GROUP = re.compile(r"\(([^()]*)\)x(\d+)")
# The paper's largest models have 64 sublayers; a pattern that expands beyond this is a typo (an extra
# digit in a repeat count), refused before it is expanded.
MAX_SUBLAYERS = 10_000


def _pattern_error(pattern: str, pos: int, message: str) -> ConfigError:
    pointer = " " * pos + "^"
    return ConfigError(f"{message}\n    {pattern}\n    {pointer}", key="pattern")


def normalize_pattern(pattern: str, *, require_ffn: bool = True) -> str:
    """Expand ``(group)xN`` repetitions, strip whitespace and validate; returns the flat pattern."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError("the pattern is empty; e.g. 'M-M-M-M-*-M-M-M-'", key="pattern")
    flat = re.sub(r"\s+", "", pattern)
    while True:
        groups = list(_GROUP.finditer(flat))
        if not groups:
            break
        length = len(flat)
        for m in groups:
            count = int(m.group(2)) if len(m.group(2)) <= 6 else MAX_SUBLAYERS + 1
            length += len(m.group(1)) * count - len(m.group(0))
            if length > MAX_SUBLAYERS:
                group = m.group(0) if len(m.group(0)) <= 40 else f"{m.group(0)[:20]}...{m.group(0)[-16:]}"
                raise ConfigError(
                    f"the pattern expands to more than {MAX_SUBLAYERS:,} sublayers (the group '{group}' "
                    f"repeats {m.group(2)[:12]} times); the paper's largest models have 64",
                    key="pattern",
                )
        flat = _GROUP.sub(lambda m: m.group(1) * int(m.group(2)), flat)
    if len(flat) > MAX_SUBLAYERS:
        raise ConfigError(
            f"the pattern has {len(flat):,} sublayers, more than {MAX_SUBLAYERS:,}", key="pattern"
        )
    for pos, ch in enumerate(flat):
        if ch not in SYMBOLS:
            known = ", ".join(f"'{s}' {n}" for s, n in SYMBOLS.items())
            raise _pattern_error(
                flat, pos, f"unknown symbol '{ch}' at position {pos}; valid symbols: {known}"
            )
    if require_ffn:
        for pos, ch in enumerate(flat):
            if pos % 2 == 0 and ch not in MIXERS:
                raise _pattern_error(
                    flat,
                    pos,
                    f"position {pos} should start a layer with a mixer ('*', 'M' or 'S'), found '{ch}'",
                )
            if pos % 2 == 1 and ch not in FFNS:
                raise _pattern_error(
                    flat,
                    pos - 1,
                    f"mixer '{flat[pos - 1]}' at position {pos - 1} is followed by another mixer; every "
                    "mixer needs an FFN ('-' or 'E') after it (or set require_ffn: false)",
                )
        if len(flat) % 2:
            raise _pattern_error(
                flat,
                len(flat) - 1,
                f"the last mixer '{flat[-1]}' has no FFN after it; end the pattern with '-' or 'E'",
            )
    return flat


def parse_ratio(text: str) -> tuple[int, int]:
    """Parse "a:m" into (a, m)."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) + int(m.group(2)) == 0:
        raise ConfigError(
            f"attn_mamba must look like '1:7' (attention:Mamba), got {text!r}", key="layout.attn_mamba"
        )
    return int(m.group(1)), int(m.group(2))


def expand_layout(layout: LayoutConfig) -> str:
    """The paper's shorthand (l, a:m + offset, e + offset) as a flat pattern string."""
    a, m = parse_ratio(layout.attn_mamba)
    period = a + m
    if not 1 <= layout.layers <= MAX_SUBLAYERS // 2:
        raise ConfigError(f"must be in [1, {MAX_SUBLAYERS // 2}], got {layout.layers}", key="layout.layers")
    if layout.layers % period:
        raise ConfigError(
            f"a:m = {a}:{m} has a period of {period} layers, which does not divide layers = {layout.layers}; "
            f"use a multiple of {period}",
            key="layout.attn_mamba",
        )
    offset = layout.attn_offset if layout.attn_offset is not None else period // 2
    if a and m and not 0 <= offset <= period - a:
        raise ConfigError(
            f"attn_offset = {offset} must be between 0 and {period - a} for a:m = {a}:{m}",
            key="layout.attn_offset",
        )
    e = layout.moe_every
    if e < 0:
        raise ConfigError(f"moe_every (e) must be >= 0, got {e}", key="layout.moe_every")
    moe_offset = layout.moe_offset if layout.moe_offset is not None else max(e - 1, 0)
    if e and not 0 <= moe_offset < e:
        raise ConfigError(
            f"moe_offset = {moe_offset} must be between 0 and {e - 1} for moe_every = {e}",
            key="layout.moe_offset",
        )
    chars = []
    for i in range(layout.layers):
        attention = m == 0 or (a > 0 and offset <= i % period < offset + a)
        chars.append("*" if attention else "S" if layout.ssm == "mamba2" else "M")
        chars.append("E" if e and i % e == moe_offset else "-")
    return "".join(chars)


def compact_pattern(pattern: str) -> str:
    """Shortest ``(unit)xN`` form of a pattern (the pattern itself when it does not repeat)."""
    n = len(pattern)
    for size in range(1, n // 2 + 1):
        if n % size == 0 and pattern[:size] * (n // size) == pattern:
            return f"({pattern[:size]})x{n // size}"
    return pattern


def describe_pattern(pattern: str, moe: MoEConfig | None = None) -> str:
    """The paper's shorthand for a pattern, e.g. ``l=32 a:m=1:7 (offset 4) e=2 (offset 1) n=16 K=2``.

    Falls back to counts when the pattern is not periodic in the paper's sense, or holds a mixer the
    paper's a:m notation has no letter for (a new one: docs/extending.md).
    """
    ssms = {pattern[i] for i in range(0, len(pattern), 2)} - {"*"}
    if len(pattern) % 2 or not ssms <= {"M"} and not ssms <= {"S"}:
        counts = ", ".join(f"{pattern.count(s)} {n}" for s, n in SYMBOLS.items() if s in pattern)
        return f"{len(pattern)} sublayers ({counts})"
    mixers = pattern[0::2].replace("S", "M")
    ffns = pattern[1::2]
    layers = len(mixers)
    parts = [f"l={layers}"]
    n_attn = mixers.count("*")
    if n_attn == 0:
        parts.append("a:m=0:1")
    elif n_attn == layers:
        parts.append("a:m=1:0")
    else:
        ratio = None
        for period in range(2, layers + 1):
            if layers % period or mixers[:period] * (layers // period) != mixers:
                continue
            unit = mixers[:period]
            a = unit.count("*")
            first = unit.index("*")
            if unit[first : first + a] == "*" * a:
                ratio = f"a:m={a}:{period - a} (offset {first})"
            break
        parts.append(ratio or f"{n_attn} attention + {layers - n_attn} Mamba layers, irregular")
    n_moe = ffns.count("E")
    if n_moe:
        described = False
        for e in range(1, layers + 1):
            offsets = {i % e for i, c in enumerate(ffns) if c == "E"}
            if len(offsets) == 1 and all((c == "E") == (i % e in offsets) for i, c in enumerate(ffns)):
                parts.append(f"e={e} (offset {offsets.pop()})")
                described = True
                break
        if not described:
            parts.append(f"{n_moe} MoE layers, irregular")
        if moe is not None:
            parts.append(f"n={moe.n_experts} K={moe.top_k}")
    if ssms == {"S"}:
        parts.append("Mamba-2")
    return " ".join(parts)
