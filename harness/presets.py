"""Named model configurations: the paper's reference models and the ablation families.

Reference models (``llama-2-7b`` ... ``jamba-v0.1``) use the published Hugging Face config values and carry
the paper's Table 1 cells for side-by-side checks.

Ablation families (``tiny``, ``mini``, ``1.3b``, ``7b``) hold every arm of the paper's study. A name is
``<family>-<arm>[-moe][-rope][-nonorm]``:

* arm: ``attention`` (a:m = 1:0), ``mamba`` (0:1, Mamba interleaved with MLPs, as in the paper's
  ablations), ``1to3`` (1:3) and ``1to7`` (1:7, Jamba's ratio, attention at offset period/2);
* ``-moe``: MoE with n = 16 experts, top K = 2, every e = 2 layers (the paper's Table 7 setting);
* ``-rope``: rotary position embeddings in the attention layers (Table 8); not offered for pure Mamba;
* ``-nonorm``: no RMSNorm inside Mamba (Fig. 8); not offered for pure attention.
* ``-m2``: Mamba-2 (SSD) layers in place of Mamba-1 (beyond the paper: which Mamba a hybrid wants), for
  ``mamba``, ``1to3`` and ``1to7``, alone or with ``-moe``; its own ``d_ff`` matches the parameter target.

**Parameter matching.** The paper does not publish its ablation dimensions. Within a family every arm has
the same width, depth, heads and vocabulary, so depth-dependent phenomena (such as which layer hosts an
induction head) compare like with like; the arms differ in how many parameters a mixer costs (an
attention layer ~2.5 d^2 with 4:1 grouped-query heads, a Mamba layer ~6.3 d^2). Each arm's dense MLP width
``d_ff`` is therefore solved so that its *total* parameter count hits the family target, rounded to a
multiple of 64 (8 for ``tiny``), which keeps every arm within +-3% of the target (the tests check it;
beyond ``tiny`` the error is under 0.5%). The ``-moe``, ``-rope`` and ``-nonorm`` variants reuse their
arm's ``d_ff`` (experts have that width too), so they differ from the arm only in the feature under study.

Family dimensions, and why:

* ``tiny`` (~1M): d 64, 8 layers (the smallest depth where 1:7 fits), 4 heads / 2 KV heads, vocab 4096.
  Unit tests and CPU demos in seconds.
* ``mini`` (~100M): d 512, 8 layers, 8 / 2 heads, GPT-2 vocab padded to 50304. Minutes on one GPU
  (about 300-500K tokens/s on an H100, so 50M tokens per arm in under 3 minutes).
* ``1.3b``: d 2048, 24 layers, 16 / 4 heads (head dim 128), vocab 65536 (the paper's tokenizer size).
  24 layers is what the paper's induction-head figure implies for its 1:7 model (attention in layers 4,
  12 and 20) and is divisible by both 4 (1:3) and 8 (1:7).
* ``7b``: d 4096, 32 layers, 32 / 8 heads, vocab 65536: Jamba-v0.1's width, depth and heads.

Mamba-2 settings per family (:data:`MAMBA2`): head dim 64 and d_state 64 (``mini``) or 128 (``1.3b``, ``7b``)
as in the Mamba-2 paper's language models; ``tiny`` takes head dim 16, d_state 16 and 64-token chunks so
that its eight heads and the CPU reference scan stay small.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache

from harness.config_errors import ConfigError, did_you_mean
from harness.model.config import (
    AttentionConfig,
    LayoutConfig,
    Mamba2Config,
    MambaConfig,
    ModelConfig,
    MoEConfig,
)

PAPER_MODELS: dict[str, dict] = {
    "llama-2-7b": dict(
        config=dict(
            vocab_size=32000, d_model=4096, d_ff=11008, pattern="(*-)x32", attention=dict(n_heads=32)
        ),
        paper={"params_total": "6.7B", "params_active": "6.7B", "kv_cache_256k": "128GB"},
    ),
    "llama-2-13b": dict(
        config=dict(
            vocab_size=32000, d_model=5120, d_ff=13824, pattern="(*-)x40", attention=dict(n_heads=40)
        ),
    ),
    "llama-2-70b": dict(
        config=dict(
            vocab_size=32000,
            d_model=8192,
            d_ff=28672,
            pattern="(*-)x80",
            attention=dict(n_heads=64, n_kv_heads=8),
        ),
    ),
    "mistral-7b": dict(
        config=dict(
            vocab_size=32000,
            d_model=4096,
            d_ff=14336,
            pattern="(*-)x32",
            attention=dict(n_heads=32, n_kv_heads=8),
        ),
        paper={"params_total": "7.2B", "params_active": "7.2B", "kv_cache_256k": "32GB"},
    ),
    "mixtral-8x7b": dict(
        config=dict(
            vocab_size=32000,
            d_model=4096,
            d_ff=14336,
            pattern="(*E)x32",
            attention=dict(n_heads=32, n_kv_heads=8),
            moe=dict(n_experts=8, top_k=2, renormalize=True),
        ),
        paper={"params_total": "46.7B", "params_active": "12.9B", "kv_cache_256k": "32GB"},
    ),
    "jamba-v0.1": dict(
        config=dict(
            vocab_size=65536,
            d_model=4096,
            d_ff=14336,
            pattern="(M-MEM-ME*-MEM-ME)x4",
            attention=dict(n_heads=32, n_kv_heads=8),
            mamba=dict(d_state=16, d_conv=4, expand=2, dt_rank=256, inner_rmsnorm=True),
            moe=dict(n_experts=16, top_k=2, renormalize=False, aux_loss_coef=0.001),
        ),
        paper={"params_total": "52B", "params_active": "12B", "kv_cache_256k": "4GB"},
    ),
}

# Table 1 order.
TABLE1 = ("llama-2-7b", "mistral-7b", "mixtral-8x7b", "jamba-v0.1")

ARMS = {"attention": "1:0", "mamba": "0:1", "1to3": "1:3", "1to7": "1:7"}
MOE_SETTING = dict(n_experts=16, top_k=2, moe_every=2)


@dataclass(frozen=True)
class Family:
    name: str
    target_params: int
    d_model: int
    layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    purpose: str
    # d_ff is rounded to this multiple; small enough to keep every arm within +-3% of the target.
    d_ff_multiple: int = 64


FAMILIES = {
    f.name: f
    for f in (
        Family("tiny", 1_000_000, 64, 8, 4, 2, 4096, "CPU unit tests and demos, seconds", d_ff_multiple=8),
        Family("mini", 100_000_000, 512, 8, 8, 2, 50304, "one GPU, minutes"),
        Family("1.3b", 1_300_000_000, 2048, 24, 16, 4, 65536, "the paper's 1.3B ablations (Tables 4, 6, 8)"),
        Family("7b", 7_000_000_000, 4096, 32, 32, 8, 65536, "the paper's 7B ablations (Tables 5, 7)"),
    )
}


# Mamba-2 (``-m2``) settings per family: head_dim, d_state, chunk_size.
MAMBA2 = {"tiny": (16, 16, 64), "mini": (64, 64, 256), "1.3b": (64, 128, 256), "7b": (64, 128, 256)}
M2_ARMS = ("mamba", "1to3", "1to7")


def _family_config(
    family: Family, arm: str, d_ff: int, moe: bool, rope: bool, mamba_norm: bool, m2: bool = False
) -> ModelConfig:
    head_dim, d_state, chunk = MAMBA2[family.name]
    return ModelConfig(
        vocab_size=family.vocab_size,
        d_model=family.d_model,
        d_ff=d_ff,
        layout=LayoutConfig(
            layers=family.layers,
            attn_mamba=ARMS[arm],
            moe_every=MOE_SETTING["moe_every"] if moe else 0,
            ssm="mamba2" if m2 else "mamba",
        ),
        attention=AttentionConfig(n_heads=family.n_heads, n_kv_heads=family.n_kv_heads, rope=rope),
        mamba=MambaConfig(inner_rmsnorm=mamba_norm),
        mamba2=Mamba2Config(head_dim=head_dim, d_state=d_state, chunk_size=chunk) if m2 else None,
        moe=MoEConfig(n_experts=MOE_SETTING["n_experts"], top_k=MOE_SETTING["top_k"]) if moe else None,
    )


@cache
def matched_d_ff(family_name: str, arm: str, m2: bool = False) -> int:
    """The MLP width that brings ``arm`` of ``family`` (with Mamba-2 layers if ``m2``) to the family's
    parameter target."""
    from harness.accounting import param_breakdown

    family = FAMILIES[family_name]

    def total(d_ff: int) -> int:
        return sum(param_breakdown(_family_config(family, arm, d_ff, False, False, True, m2)).values())

    step = family.d_ff_multiple
    base = total(step)
    per_unit = (total(2 * step) - base) / step
    d_ff = step + (family.target_params - base) / per_unit
    if d_ff < step:
        raise ValueError(
            f"family {family_name}: arm {arm} exceeds the parameter target even with a minimal MLP"
        )
    return int(round(d_ff / step)) * step


def family_preset_names() -> list[str]:
    names = []
    for family in FAMILIES:
        for arm in ARMS:
            for moe in (False, True):
                for rope in (False, True):
                    for norm in (True, False):
                        if (rope and arm == "mamba") or (not norm and arm == "attention"):
                            continue
                        names.append(
                            f"{family}-{arm}"
                            + ("-moe" if moe else "")
                            + ("-rope" if rope else "")
                            + ("" if norm else "-nonorm")
                        )
            if arm in M2_ARMS:
                names += [f"{family}-{arm}-m2", f"{family}-{arm}-moe-m2"]
    return names


def preset_names() -> list[str]:
    return list(PAPER_MODELS) + family_preset_names()


def paper_cells(name: str) -> dict[str, str]:
    """The paper's Table 1 cells for a reference model (empty for others)."""
    return dict(PAPER_MODELS.get(name, {}).get("paper", {}))


def preset_dict(name: str) -> dict:
    """A preset as plain config data (what a YAML file would contain); overrides merge onto this."""
    return dataclasses.asdict(get_preset(name))


def get_preset(name: str) -> ModelConfig:
    """The ModelConfig of a named preset; unknown names get a suggestion."""
    from harness.config_schema import from_dict

    if name in PAPER_MODELS:
        return from_dict(ModelConfig, PAPER_MODELS[name]["config"], source=f"preset {name}")
    family_name, _, rest = name.partition("-")
    parts = rest.split("-") if rest else []
    if family_name in FAMILIES and parts and parts[0] in ARMS and name in family_preset_names():
        flags = set(parts[1:])
        arm = parts[0]
        m2 = "m2" in flags
        return _family_config(
            FAMILIES[family_name],
            arm,
            matched_d_ff(family_name, arm, m2),
            "moe" in flags,
            "rope" in flags,
            "nonorm" not in flags,
            m2,
        )
    raise ConfigError(
        f"unknown preset '{name}'."
        + did_you_mean(name, preset_names())
        + " Paper models: "
        + ", ".join(PAPER_MODELS)
        + "; ablation presets: <family>-<arm>[-moe][-rope][-nonorm], or <family>-<arm>[-moe]-m2 with "
        + "Mamba-2, with family in "
        + ", ".join(FAMILIES)
        + " and arm in "
        + ", ".join(ARMS)
        + " (`ablate presets` lists them all)",
        key="preset",
    )
