"""The configuration half of the conversion to and from transformers' Jamba (the package's face,
:mod:`harness.hf_interop`, says what converts and how).

Configuration
-------------
``JambaConfig`` describes a layout with four integers: layer ``i`` is attention iff
``i % attn_layer_period == attn_layer_offset`` (Mamba otherwise), and its FFN is an MoE iff
``i % expert_layer_period == expert_layer_offset`` and ``num_experts > 1`` (a dense MLP otherwise). Every
layer is a mixer followed by an FFN. Our pattern maps to it layer by layer (pattern characters ``2j`` and
``2j + 1`` are layer ``j``'s mixer and FFN):

=============================  ==============================================================
ours (``ModelConfig``)          ``JambaConfig``
=============================  ==============================================================
vocab_size, d_model, d_ff       vocab_size, hidden_size, intermediate_size
pattern                         num_hidden_layers, attn_layer_period/offset,
                                expert_layer_period/offset
attention.n_heads/n_kv_heads    num_attention_heads / num_key_value_heads
attention.dropout               attention_dropout
mamba.d_state/d_conv/expand     mamba_d_state / mamba_d_conv / mamba_expand
mamba.dt_rank (None = auto)     mamba_dt_rank (``"auto"`` = ceil(hidden_size / 16))
mamba.conv_bias/proj_bias       mamba_conv_bias / mamba_proj_bias
moe.n_experts/top_k             num_experts / num_experts_per_tok (1 / 1 when there is no MoE)
moe.aux_loss_coef               router_aux_loss_coef
norm_eps                        rms_norm_eps (every RMSNorm, the inner Mamba ones included)
tie_embeddings, init_std        tie_word_embeddings, initializer_range
=============================  ==============================================================

Not representable (:func:`to_hf_config` raises :class:`~harness.config_errors.ConfigError` naming the
feature):

* layouts without attention (pure Mamba). A ``JambaConfig`` can express one (an offset beyond the last
  layer) and ``JambaForCausalLM`` runs it with ``use_cache=False``, but its default forward
  (``use_cache=True``) and ``generate`` raise a ValueError in transformers 5.x (its cache asks the first
  layer for what only attention layers keep). Pure attention (period 1, offset 0) works and is supported;
* attention or MoE layers that are not exactly one per period at a fixed offset (e.g. two adjacent
  attention layers per period, or irregular placements), and patterns that are not mixer/FFN pairs
  (``require_ffn: false`` stacks such as ``MMMM``);
* RoPE (Jamba's attention has no positional encoding), Mamba without the inner dt/B/C RMSNorms (always on
  in transformers), renormalised top-K routing (Jamba never renormalises), experts narrower or wider than
  the dense MLP (one ``intermediate_size`` for both), a ``head_dim`` other than d_model / n_heads, and MoE
  with a single expert (transformers builds a dense MLP wherever ``num_experts == 1``).

Ignored on export: ``dt_min``/``dt_max``/``dt_init_floor`` (initialisation only), ``scan_backend``,
``moe.backend`` and ``kernels`` (runtime), and a ``moe`` section when the pattern has no ``E``.
``pad_token_id`` is exported as None (transformers' default of 0 would freeze the gradient of token 0's
embedding row); pass overrides such as ``pad_token_id``/``bos_token_id``/``eos_token_id`` to
:func:`to_hf_config`.

"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.config_errors import ConfigError
from harness.model.config import FFNS, MIXERS, AttentionConfig, MambaConfig, ModelConfig, MoEConfig

if TYPE_CHECKING:  # pragma: no cover
    from transformers import JambaConfig

_INSTALL_HINT = "pip install 'jamba-ablate[hf]'"

# JambaConfig's defaults, for config.json files that leave a key out (read without transformers).
_HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 65536,
    "tie_word_embeddings": False,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "router_aux_loss_coef": 0.001,
    "attention_dropout": 0.0,
    "num_experts_per_tok": 2,
    "num_experts": 16,
    "expert_layer_period": 2,
    "expert_layer_offset": 1,
    "attn_layer_period": 8,
    "attn_layer_offset": 4,
    "mamba_d_state": 16,
    "mamba_d_conv": 4,
    "mamba_expand": 2,
    "mamba_dt_rank": "auto",
    "mamba_conv_bias": True,
    "mamba_proj_bias": False,
}


def _transformers():
    """Import transformers lazily, with an install hint when it is missing."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"Jamba checkpoint conversion needs Hugging Face transformers; install it with: {_INSTALL_HINT}"
        ) from e
    if not hasattr(transformers, "JambaForCausalLM"):  # pragma: no cover
        raise ImportError(
            f"transformers {transformers.__version__} has no Jamba model (needs >= 4.40); {_INSTALL_HINT}"
        )
    return transformers


def _unsupported(feature: str, why: str, key: str | None = None) -> ConfigError:
    return ConfigError(f"cannot export to transformers' Jamba: {feature}: {why}", key=key)


def _period_offset(flags: list[bool]) -> tuple[int, int] | None:
    """The (period, offset) with ``flags[i] == (i % period == offset)`` for every i, if any.

    A single hit gets period = number of layers (Jamba-v0.1's 8-layer block with attention at 4 stays
    period 8, offset 4). None when nothing is flagged or no (period, offset) reproduces the flags.
    """
    n = len(flags)
    hits = [i for i, f in enumerate(flags) if f]
    if not hits:
        return None
    period = n if len(hits) == 1 else hits[1] - hits[0]
    offset = hits[0]
    if offset >= period:
        return None
    if [i % period == offset for i in range(n)] != flags:
        return None
    return period, offset


def _layers(pattern: str) -> list[tuple[str, str]]:
    return [(pattern[i], pattern[i + 1]) for i in range(0, len(pattern), 2)]


@dataclass(frozen=True)
class JambaLayout:
    """Where JambaConfig's four integers put attention and MoE: layers, (period, offset) of attention and,
    with MoE, of the expert layers."""

    layers: int
    attn: tuple[int, int]
    expert: tuple[int, int] | None


def jamba_layout(cfg: ModelConfig) -> JambaLayout:
    """What ``JambaConfig`` can express of ``cfg``, or ConfigError naming the first feature it cannot (the
    one place that decides: :func:`hf_config_dict`, :func:`to_hf_config` and export go through it)."""
    pattern = cfg.pattern
    assert pattern is not None
    pairs = len(pattern) % 2 == 0 and all(
        pattern[i] in MIXERS and pattern[i + 1] in FFNS for i in range(0, len(pattern), 2)
    )
    if not pairs:
        raise _unsupported(
            "a pattern that is not mixer/FFN pairs",
            f"every Jamba layer is a mixer ('*' or 'M') followed by an FFN ('-' or 'E'), but the pattern is "
            f"{pattern!r} (require_ffn: false stacks such as 'MMMM' have no Jamba equivalent)",
            key="pattern",
        )
    if "S" in pattern:
        raise _unsupported(
            "Mamba-2 layers",
            "transformers' Jamba holds Mamba-1 mixers only; a Mamba-2 model exports to its Bamba instead "
            "(harness/hf_interop/bamba.py, which `ablate export hf` picks for 'S' patterns)",
            key="pattern",
        )
    layers = _layers(pattern)
    mixers = [m == "*" for m, _ in layers]
    if not any(mixers):
        raise _unsupported(
            "pure Mamba (no attention layers)",
            "transformers' JambaForCausalLM cannot run a layout without attention layers: its default "
            "forward (use_cache=True) and generate() fail, because its cache asks the first layer for what "
            "only attention layers keep (checked with transformers 5.17 to 5.25)",
            key="pattern",
        )
    attn = _periodic(mixers, "attention", "attn_layer_period", pattern)
    moe_flags = [f == "E" for _, f in layers]
    expert = _periodic(moe_flags, "MoE", "expert_layer_period", pattern) if any(moe_flags) else None
    for cannot, feature, why, key in _feature_checks(cfg, with_moe=expert is not None):
        if cannot:
            raise _unsupported(feature, why, key=key)
    return JambaLayout(len(layers), attn, expert)


def _periodic(flags: list[bool], what: str, period_key: str, pattern: str) -> tuple[int, int]:
    """The (period, offset) of the flagged layers, or ConfigError when no JambaConfig places them."""
    found = _period_offset(flags)
    if found is None:
        where = [i for i, f in enumerate(flags) if f]
        offset_key = period_key.replace("period", "offset")
        raise _unsupported(
            f"an {what} placement that is not periodic",
            f"JambaConfig puts exactly one {what} layer per {period_key}, at layers i with "
            f"i % {period_key} == {offset_key}; the {what} layers of {pattern!r} are layers {where} of "
            f"{len(flags)}, which no (period, offset) reproduces",
            key="pattern",
        )
    return found


def _feature_checks(cfg: ModelConfig, with_moe: bool) -> list[tuple[bool, str, str, str]]:
    """``(cannot express, feature, why, key)`` for every setting a JambaConfig has no switch for, in the
    order they are reported."""
    att, m, moe = cfg.attention, cfg.mamba, cfg.moe
    checks = [
        (
            att.rope,
            "RoPE",
            "transformers' Jamba attention has no positional encoding at all",
            "attention.rope",
        ),
        (
            bool(att.learned_positions),
            "learned absolute positions (attention.learned_positions)",
            "transformers' Jamba has no position embedding at all",
            "attention.learned_positions",
        ),
        (
            bool(cfg.embed_dropout),
            "embedding dropout (embed_dropout)",
            "JambaConfig has no embedding dropout",
            "embed_dropout",
        ),
        (
            att.head_dim is not None and att.head_dim * att.n_heads != cfg.d_model,
            f"head_dim = {att.head_dim}",
            f"transformers' Jamba attention uses head_dim = hidden_size / num_attention_heads = "
            f"{cfg.d_model} / {att.n_heads}",
            "attention.head_dim",
        ),
        (
            "M" in cfg.pattern and not m.inner_rmsnorm,
            "Mamba without inner RMSNorms (mamba.inner_rmsnorm: false)",
            "transformers' JambaMambaMixer always applies dt_layernorm, b_layernorm and c_layernorm",
            "mamba.inner_rmsnorm",
        ),
    ]
    if with_moe:
        assert moe is not None  # ModelConfig guarantees a moe section when the pattern has 'E'
        checks += [
            (
                moe.renormalize,
                "renormalised top-K routing (moe.renormalize: true)",
                "Jamba's router keeps the top-K softmax probabilities unnormalised (Mixtral-style "
                "renormalisation has no JambaConfig switch)",
                "moe.renormalize",
            ),
            (
                cfg.expert_d_ff != cfg.d_ff,
                f"expert width moe.d_ff = {cfg.expert_d_ff} != d_ff = {cfg.d_ff}",
                "JambaConfig has one intermediate_size for the dense MLPs and the experts",
                "moe.d_ff",
            ),
            (
                moe.n_experts < 2,
                "MoE with a single expert",
                "transformers builds a dense MLP wherever num_experts == 1; use '-' instead of 'E'",
                "moe.n_experts",
            ),
        ]
    return checks


def hf_config_dict(cfg: ModelConfig, **overrides: Any) -> dict[str, Any]:
    """``JambaConfig``'s keyword arguments for ``cfg`` (no transformers needed); see :func:`to_hf_config`."""
    layout = jamba_layout(cfg)
    att, m = cfg.attention, cfg.mamba
    kw: dict[str, Any] = dict(
        vocab_size=cfg.vocab_size,
        tie_word_embeddings=cfg.tie_embeddings,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=layout.layers,
        num_attention_heads=att.n_heads,
        num_key_value_heads=att.kv_heads,
        attention_dropout=att.dropout,
        hidden_act="silu",
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps,
        attn_layer_period=layout.attn[0],
        attn_layer_offset=layout.attn[1],
        mamba_d_state=m.d_state,
        mamba_d_conv=m.d_conv,
        mamba_expand=m.expand,
        mamba_dt_rank=cfg.dt_rank,
        mamba_conv_bias=m.conv_bias,
        mamba_proj_bias=m.proj_bias,
        # Has no effect in transformers 5 (kernels are picked automatically); in 4.x it keeps CPU runs off
        # the CUDA-only mamba_ssm path.
        use_mamba_kernels=False,
        pad_token_id=None,
        architectures=["JambaForCausalLM"],
        model_type="jamba",
    )
    if layout.expert is not None:
        kw.update(
            num_experts=cfg.moe.n_experts,
            num_experts_per_tok=cfg.moe.top_k,
            expert_layer_period=layout.expert[0],
            expert_layer_offset=layout.expert[1],
            router_aux_loss_coef=cfg.moe.aux_loss_coef,
        )
    else:
        # num_experts == 1 makes every FFN a dense MLP, whatever the expert period says.
        kw.update(num_experts=1, num_experts_per_tok=1, expert_layer_period=2, expert_layer_offset=1)
        if cfg.moe is not None:
            kw["router_aux_loss_coef"] = cfg.moe.aux_loss_coef
    kw.update(overrides)
    return kw


def to_hf_config(cfg: ModelConfig, **overrides: Any) -> JambaConfig:
    """A ``transformers.JambaConfig`` equivalent to ``cfg``; raises ConfigError for what Jamba cannot express.

    ``overrides`` are extra JambaConfig keyword arguments (e.g. ``bos_token_id``, ``eos_token_id``).
    """
    transformers = _transformers()
    kw = hf_config_dict(cfg, **overrides)
    kw.pop("model_type", None)
    return transformers.JambaConfig(**kw)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):  # some hand-written config.json files say "true"/"false"
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def from_hf_config(hf_cfg: JambaConfig | Mapping[str, Any]) -> ModelConfig:
    """A ``ModelConfig`` from a ``JambaConfig`` or a config.json dict (transformers not needed for a dict)."""
    if isinstance(hf_cfg, Mapping):
        d = dict(hf_cfg)
    else:
        d = hf_cfg.to_dict()
    if "num_experts" not in d and "num_local_experts" in d:
        d["num_experts"] = d["num_local_experts"]
    model_type = d.get("model_type", "jamba")
    if model_type != "jamba":
        raise ConfigError(f"expected a Jamba config (model_type 'jamba'), got model_type {model_type!r}")

    def get(name: str) -> Any:
        value = d.get(name)
        return _HF_DEFAULTS[name] if value is None and name in _HF_DEFAULTS else value

    hidden = int(get("hidden_size"))
    n_heads = int(get("num_attention_heads"))
    n_kv = int(get("num_key_value_heads") or n_heads)
    n_layers = int(get("num_hidden_layers"))
    act = get("hidden_act")
    if act != "silu":
        raise ConfigError(f"hidden_act {act!r} is not supported: our MLPs and experts are SwiGLU (silu)")
    head_dim = d.get("head_dim")
    if head_dim is not None and int(head_dim) * n_heads != hidden:
        raise ConfigError(
            f"head_dim {head_dim} != hidden_size / num_attention_heads = {hidden} / {n_heads}: transformers' "
            "Jamba attention (and ours, as mapped here) derives head_dim from hidden_size"
        )
    attn_period, attn_offset = int(get("attn_layer_period")), int(get("attn_layer_offset"))
    exp_period, exp_offset = int(get("expert_layer_period")), int(get("expert_layer_offset"))
    n_experts = int(get("num_experts"))
    chars = []
    for i in range(n_layers):
        chars.append("*" if i % attn_period == attn_offset else "M")
        chars.append("E" if n_experts > 1 and i % exp_period == exp_offset else "-")
    pattern = "".join(chars)
    dt_rank = get("mamba_dt_rank")
    dt_rank = math.ceil(hidden / 16) if dt_rank == "auto" else int(dt_rank)
    moe = None
    if "E" in pattern:
        moe = MoEConfig(
            n_experts=n_experts,
            top_k=int(get("num_experts_per_tok")),
            renormalize=False,
            aux_loss_coef=float(get("router_aux_loss_coef")),
        )
    return ModelConfig(
        vocab_size=int(get("vocab_size")),
        d_model=hidden,
        d_ff=int(get("intermediate_size")),
        pattern=pattern,
        attention=AttentionConfig(
            n_heads=n_heads,
            n_kv_heads=None if n_kv == n_heads else n_kv,
            rope=False,
            dropout=float(get("attention_dropout") or 0.0),
        ),
        mamba=MambaConfig(
            d_state=int(get("mamba_d_state")),
            d_conv=int(get("mamba_d_conv")),
            expand=int(get("mamba_expand")),
            dt_rank=dt_rank,
            inner_rmsnorm=True,
            conv_bias=_as_bool(get("mamba_conv_bias")),
            proj_bias=_as_bool(get("mamba_proj_bias")),
        ),
        moe=moe,
        norm_eps=float(get("rms_norm_eps")),
        tie_embeddings=_as_bool(get("tie_word_embeddings")),
        init_std=float(get("initializer_range")),
    )
