"""Compute accounting from a config alone: parameters, cache sizes, FLOPs and GPU-hours before launch.

Everything here is analytic (no model is instantiated, so a 52B plan costs nothing); the test suite checks
the parameter formulas against instantiated models of every tiny arm.

Conventions (stated because papers differ):

* Parameters include the input embedding and, when untied, the LM head, as the Jamba paper's Table 1 does.
  *Active* parameters count only the top-K experts of each MoE layer (router included).
* KV cache: ``attention layers x kv_heads x head_dim x 2 (K and V) x bytes x tokens``; 16-bit by default.
* Mamba state: per Mamba layer ``d_inner x d_state`` (SSM) + ``d_inner x d_conv`` (conv window), same dtype;
  per Mamba-2 layer ``d_inner x d_state`` + ``(d_inner + 2 x groups x d_state) x d_conv``.
* FLOPs per token are forward + backward = 3 x forward. Forward counts 2 FLOPs per multiply-add of every
  matmul weight that a token touches (LM head included, embedding lookup excluded), attention scores and
  values ``2 x 2 x (context / 2) x n_heads x head_dim`` per attention layer (causal: on average a token
  attends to half the context), the selective scan ``9 x d_inner x d_state`` and the depthwise conv
  ``2 x d_inner x d_conv`` per Mamba layer; per Mamba-2 layer the SSD counted as its recurrence, ``6 x
  d_inner x d_state`` (decay, input and output: three multiply-adds per state entry), and its conv.
* GPU-hours = tokens x FLOPs per token / (peak FLOP/s x MFU) / 3600.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from harness.model.config import ModelConfig, compact_pattern, describe_pattern

# Dense bf16 peak FLOP/s (vendor figures, no sparsity).
GPU_PEAK_FLOPS = {"a100": 312e12, "h100": 989e12, "h200": 989e12}
GIB = 2**30


def attention_params(cfg: ModelConfig) -> int:
    h, kv, hd, d = cfg.attention.n_heads, cfg.attention.kv_heads, cfg.head_dim, cfg.d_model
    return d * h * hd + 2 * d * kv * hd + h * hd * d


def mamba_params(cfg: ModelConfig) -> int:
    d, di, n, r, k = cfg.d_model, cfg.d_inner, cfg.mamba.d_state, cfg.dt_rank, cfg.mamba.d_conv
    total = d * 2 * di + di * k + di * (r + 2 * n) + (r * di + di) + di * n + di + di * d
    if cfg.mamba.proj_bias:
        total += 2 * di + d
    if cfg.mamba.conv_bias:
        total += di
    if cfg.mamba.inner_rmsnorm:
        total += r + 2 * n
    return total


def mamba2_dims(cfg: ModelConfig) -> tuple[int, int, int]:
    """d_inner, heads and the conv's channels (x, B and C) of a Mamba-2 layer."""
    m = cfg.mamba2
    d_inner = m.expand * cfg.d_model
    return d_inner, d_inner // m.head_dim, d_inner + 2 * m.n_groups * m.d_state


def mamba2_params(cfg: ModelConfig) -> int:
    d, m = cfg.d_model, cfg.mamba2
    di, heads, conv = mamba2_dims(cfg)
    total = d * (di + conv + heads) + conv * m.d_conv + 3 * heads + di + di * d  # dt_bias, A_log, D; norm
    if m.proj_bias:
        total += di + conv + heads + d
    if m.conv_bias:
        total += conv
    return total


def mlp_params(d_model: int, d_ff: int) -> int:
    return 3 * d_model * d_ff


def moe_params(cfg: ModelConfig, active: bool) -> int:
    experts = cfg.moe.top_k if active else cfg.moe.n_experts
    return cfg.d_model * cfg.moe.n_experts + experts * mlp_params(cfg.d_model, cfg.expert_d_ff)


def param_breakdown(cfg: ModelConfig, active: bool = False) -> dict[str, int]:
    """Parameter counts per component (total, or active with ``active=True``)."""
    out = {
        "embedding": (cfg.vocab_size + cfg.attention.learned_positions) * cfg.d_model,
        "lm_head": 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model,
        "attention": cfg.count("*") * attention_params(cfg),
        "mamba": cfg.count("M") * mamba_params(cfg),
        "mamba2": cfg.count("S") * mamba2_params(cfg) if cfg.mamba2 else 0,
        "mlp": cfg.count("-") * mlp_params(cfg.d_model, cfg.d_ff),
        "moe": cfg.count("E") * moe_params(cfg, active) if cfg.moe else 0,
        "norms": (len(cfg.pattern) + 1) * cfg.d_model,
    }
    return out


def matmul_params_per_token(cfg: ModelConfig) -> int:
    """Weights a token multiplies through (active experts only), for the 2N-FLOPs-per-token rule."""
    d, di, n, r = cfg.d_model, cfg.d_inner, cfg.mamba.d_state, cfg.dt_rank
    mamba = d * 2 * di + di * (r + 2 * n) + r * di + di * d
    total = cfg.vocab_size * cfg.d_model  # LM head, tied or not
    total += cfg.count("*") * attention_params(cfg) + cfg.count("M") * mamba
    if cfg.mamba2:
        di, heads, conv = mamba2_dims(cfg)
        total += cfg.count("S") * (d * (di + conv + heads) + di * d)
    total += cfg.count("-") * mlp_params(cfg.d_model, cfg.d_ff)
    if cfg.moe:
        total += cfg.count("E") * moe_params(cfg, active=True)
    return total


def flops_breakdown(cfg: ModelConfig, context: int) -> dict[str, float]:
    """Forward + backward FLOPs per token at a training context length, per component."""
    attention = cfg.count("*") * 2 * 2 * (context / 2) * cfg.attention.n_heads * cfg.head_dim
    ssm = cfg.count("M") * (9 * cfg.d_inner * cfg.mamba.d_state + 2 * cfg.d_inner * cfg.mamba.d_conv)
    if cfg.mamba2:
        di, _, conv = mamba2_dims(cfg)
        ssm += cfg.count("S") * (6 * di * cfg.mamba2.d_state + 2 * conv * cfg.mamba2.d_conv)
    return {
        "matmul": 3 * 2 * matmul_params_per_token(cfg),
        "attention": 3 * attention,
        "ssm": 3 * ssm,
    }


def kv_cache_bytes(cfg: ModelConfig, context: int, batch: int = 1, bytes_per_element: int = 2) -> int:
    return cfg.count("*") * cfg.attention.kv_heads * cfg.head_dim * 2 * bytes_per_element * context * batch


def mamba_state_bytes(cfg: ModelConfig, batch: int = 1, bytes_per_element: int = 2) -> int:
    per_layer = cfg.d_inner * (cfg.mamba.d_state + cfg.mamba.d_conv)
    total = cfg.count("M") * per_layer
    if cfg.mamba2:
        di, _, conv = mamba2_dims(cfg)
        total += cfg.count("S") * (di * cfg.mamba2.d_state + conv * cfg.mamba2.d_conv)
    return total * bytes_per_element * batch


@dataclass
class ComputePlan:
    """What a model costs; ``to_json`` gives the stable keys that scripts and the sweep planner read."""

    name: str
    pattern: str
    pattern_compact: str
    shorthand: str
    context: int
    params_total: int
    params_active: int
    params_by_component: dict[str, int]
    active_by_component: dict[str, int]
    kv_cache_bytes: int
    mamba_state_bytes: int
    flops_per_token: float
    flops_by_component: dict[str, float]
    paper: dict[str, str] = field(default_factory=dict)

    def gpu_hours(self, tokens: float, mfu: float = 0.4, gpu: str = "h100") -> float:
        """Estimated GPU-hours to train on ``tokens`` tokens at model-FLOPs utilisation ``mfu``."""
        if gpu not in GPU_PEAK_FLOPS:
            raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPU_PEAK_FLOPS)}")
        if not 0 < mfu <= 1:
            raise ValueError(f"mfu must be in (0, 1], got {mfu}")
        return tokens * self.flops_per_token / (GPU_PEAK_FLOPS[gpu] * mfu) / 3600

    def to_json(self) -> dict:
        return asdict(self)


def plan_model(
    cfg: ModelConfig, name: str = "model", context: int = 4096, paper: dict | None = None
) -> ComputePlan:
    total = param_breakdown(cfg)
    active = param_breakdown(cfg, active=True)
    flops = flops_breakdown(cfg, context)
    return ComputePlan(
        name=name,
        pattern=cfg.pattern,
        pattern_compact=compact_pattern(cfg.pattern),
        shorthand=describe_pattern(cfg.pattern, cfg.moe),
        context=context,
        params_total=sum(total.values()),
        params_active=sum(active.values()),
        params_by_component=total,
        active_by_component=active,
        kv_cache_bytes=kv_cache_bytes(cfg, context),
        mamba_state_bytes=mamba_state_bytes(cfg),
        flops_per_token=sum(flops.values()),
        flops_by_component=flops,
        paper=dict(paper or {}),
    )


def format_params(n: float) -> str:
    """6.74e9 -> '6.74B'; 1.2e6 -> '1.20M'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def format_bytes(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def matches_printed(value: float, printed: str, scale: float) -> bool:
    """True when ``value / scale`` rounds to ``printed`` at the number of decimals it was printed with."""
    text = printed.rstrip("BGM").strip()
    decimals = len(text.split(".")[1]) if "." in text else 0
    return round(value / scale, decimals) == float(text)
