"""Conversion between :class:`~harness.model.lm.HybridLM` and Hugging Face transformers' Jamba.

transformers is optional (``pip install 'jamba-ablate[hf]'``) and imported lazily, inside the functions
that need it. :func:`load_hf_checkpoint` and :func:`from_hf_state_dict` work without it: they read
``config.json`` and ``*.safetensors`` directly, from local files only.

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

Not representable (:func:`to_hf_config` raises :class:`~harness.config_loader.ConfigError` naming the
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

Weights
-------
Names are the same below the layer level (our Mamba, attention and SwiGLU modules use mamba_ssm /
transformers names), so the mapping is:

=================================  ==================================================
ours                                transformers
=================================  ==================================================
embed_tokens.weight                 model.embed_tokens.weight
blocks.{2j}.norm.weight             model.layers.{j}.input_layernorm.weight
blocks.{2j}.layer.<p>               model.layers.{j}.self_attn.<p> (attention) or
                                    model.layers.{j}.mamba.<p> (Mamba)
blocks.{2j+1}.norm.weight           model.layers.{j}.pre_ff_layernorm.weight
blocks.{2j+1}.layer.<p>             model.layers.{j}.feed_forward.<p> (MLP, router)
blocks.{2j+1}.layer.experts.*       model.layers.{j}.feed_forward.experts.* (stacked: below)
final_norm.weight                   model.final_layernorm.weight
lm_head.weight                      lm_head.weight (absent from checkpoints when tied)
=================================  ==================================================

Experts come in two layouts. Checkpoints on disk (ai21labs/Jamba-v0.1, transformers 4.x, and what
transformers 5.x's own ``save_pretrained`` writes) hold one ``experts.{e}.{gate,up,down}_proj.weight``
per expert. transformers 5.x's in-memory ``JambaExperts`` fuses them into ``experts.gate_up_proj``
``(n, 2 * d_ff, d_model)`` (gate rows first, then up) and ``experts.down_proj`` ``(n, d_model, d_ff)``,
converting on load through its checkpoint conversion mapping; our :class:`~harness.model.ffn.Experts`
holds that fused layout too. :func:`from_hf_state_dict` accepts both; :func:`to_hf_state_dict` writes
either (by default the layout of the installed transformers, so the result loads into
``JambaForCausalLM.load_state_dict`` directly); :func:`save_hf_checkpoint` writes the per-expert layout,
which every transformers version loads.

Load-balancing loss
-------------------
Both use the Switch Transformer form ``n * sum_e f_e * P_e`` with top-K counts in ``f``, and agree for a
single MoE layer. Ours (``LMOutput.moe_aux``) is the mean over MoE layers of each layer's loss;
transformers' ``load_balancing_loss_func`` pools the router outputs of all layers first (``f`` and ``P``
averaged over layers and tokens, then multiplied), so with several MoE layers the two differ (the mean of
products versus the product of means). transformers also adds ``router_aux_loss_coef * aux_loss`` to its
loss only when ``output_router_logits=True``, which its config leaves off by default.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from harness.config_loader import ConfigError
from harness.model.config import FFNS, MIXERS, AttentionConfig, MambaConfig, ModelConfig, MoEConfig
from harness.model.ffn import stack_per_expert
from harness.model.lm import HybridLM

if TYPE_CHECKING:  # pragma: no cover
    from transformers import JambaConfig, JambaForCausalLM

ExpertLayout = Literal["auto", "fused", "per_expert"]

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


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------


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


def hf_config_dict(cfg: ModelConfig, **overrides: Any) -> dict[str, Any]:
    """``JambaConfig``'s keyword arguments for ``cfg`` (no transformers needed); see :func:`to_hf_config`."""
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
    layers = _layers(pattern)
    n_layers = len(layers)
    mixers = [m == "*" for m, _ in layers]
    if not any(mixers):
        raise _unsupported(
            "pure Mamba (no attention layers)",
            "transformers' JambaForCausalLM cannot run a layout without attention layers: its default "
            "forward (use_cache=True) and generate() fail, because its cache asks the first layer for what "
            "only attention layers keep (checked with transformers 5.17 to 5.25)",
            key="pattern",
        )
    attn = _period_offset(mixers)
    if attn is None:
        where = [i for i, f in enumerate(mixers) if f]
        raise _unsupported(
            "an attention placement that is not periodic",
            f"JambaConfig puts exactly one attention layer per attn_layer_period, at layers i with "
            f"i % attn_layer_period == attn_layer_offset; the attention layers of {pattern!r} are layers "
            f"{where} of {n_layers}, which no (period, offset) reproduces",
            key="pattern",
        )
    moe_flags = [f == "E" for _, f in layers]
    if any(moe_flags):
        expert = _period_offset(moe_flags)
        if expert is None:
            where = [i for i, f in enumerate(moe_flags) if f]
            raise _unsupported(
                "an MoE placement that is not periodic",
                f"JambaConfig puts MoE FFNs at layers i with i % expert_layer_period == expert_layer_offset; "
                f"the MoE layers of {pattern!r} are layers {where} of {n_layers}, which no (period, offset) "
                "reproduces",
                key="pattern",
            )
    else:
        expert = None
    att = cfg.attention
    if att.rope:
        raise _unsupported(
            "RoPE", "transformers' Jamba attention has no positional encoding at all", key="attention.rope"
        )
    if att.learned_positions:
        raise _unsupported(
            "learned absolute positions (attention.learned_positions)",
            "transformers' Jamba has no position embedding at all",
            key="attention.learned_positions",
        )
    if cfg.embed_dropout:
        raise _unsupported(
            "embedding dropout (embed_dropout)", "JambaConfig has no embedding dropout", key="embed_dropout"
        )
    if att.head_dim is not None and att.head_dim * att.n_heads != cfg.d_model:
        raise _unsupported(
            f"head_dim = {att.head_dim}",
            f"transformers' Jamba attention uses head_dim = hidden_size / num_attention_heads = "
            f"{cfg.d_model} / {att.n_heads}",
            key="attention.head_dim",
        )
    if att.head_dim is None and cfg.d_model % att.n_heads:
        raise _unsupported(  # pragma: no cover - ModelConfig rejects this already
            "d_model not divisible by n_heads", "Jamba derives head_dim = hidden_size // num_attention_heads"
        )
    m = cfg.mamba
    if "M" in pattern and not m.inner_rmsnorm:
        raise _unsupported(
            "Mamba without inner RMSNorms (mamba.inner_rmsnorm: false)",
            "transformers' JambaMambaMixer always applies dt_layernorm, b_layernorm and c_layernorm",
            key="mamba.inner_rmsnorm",
        )
    kw: dict[str, Any] = dict(
        vocab_size=cfg.vocab_size,
        tie_word_embeddings=cfg.tie_embeddings,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=n_layers,
        num_attention_heads=att.n_heads,
        num_key_value_heads=att.kv_heads,
        attention_dropout=att.dropout,
        hidden_act="silu",
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps,
        attn_layer_period=attn[0],
        attn_layer_offset=attn[1],
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
    if expert is not None:
        moe = cfg.moe
        assert moe is not None  # ModelConfig guarantees a moe section when the pattern has 'E'
        if moe.renormalize:
            raise _unsupported(
                "renormalised top-K routing (moe.renormalize: true)",
                "Jamba's router keeps the top-K softmax probabilities unnormalised (Mixtral-style "
                "renormalisation has no JambaConfig switch)",
                key="moe.renormalize",
            )
        if cfg.expert_d_ff != cfg.d_ff:
            raise _unsupported(
                f"expert width moe.d_ff = {cfg.expert_d_ff} != d_ff = {cfg.d_ff}",
                "JambaConfig has one intermediate_size for the dense MLPs and the experts",
                key="moe.d_ff",
            )
        if moe.n_experts < 2:
            raise _unsupported(
                "MoE with a single expert",
                "transformers builds a dense MLP wherever num_experts == 1; use '-' instead of 'E'",
                key="moe.n_experts",
            )
        kw.update(
            num_experts=moe.n_experts,
            num_experts_per_tok=moe.top_k,
            expert_layer_period=expert[0],
            expert_layer_offset=expert[1],
            router_aux_loss_coef=moe.aux_loss_coef,
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


# ----------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------

_FUSED_KEY = re.compile(r"^(.*\.experts)\.(gate_up_proj|down_proj)$")


def _hf_name(our_key: str, pattern: str) -> str:
    """Our parameter name -> transformers' name (experts in the fused layout, as ours are)."""
    if our_key == "embed_tokens.weight":
        return "model.embed_tokens.weight"
    if our_key == "final_norm.weight":
        return "model.final_layernorm.weight"
    if our_key == "lm_head.weight":
        return "lm_head.weight"
    m = re.fullmatch(r"blocks\.(\d+)\.(norm|layer)\.(.+)", our_key)
    if m is None:
        raise KeyError(f"no transformers name for parameter {our_key!r}")
    i, part, rest = int(m.group(1)), m.group(2), m.group(3)
    j, is_ffn = divmod(i, 2)
    prefix = f"model.layers.{j}."
    if part == "norm":
        return prefix + ("pre_ff_layernorm." if is_ffn else "input_layernorm.") + rest
    if is_ffn:
        return prefix + "feed_forward." + rest
    return prefix + ("self_attn." if pattern[i] == "*" else "mamba.") + rest


def _our_keys(cfg: ModelConfig) -> list[str]:
    with torch.device("meta"):
        return list(HybridLM(cfg).state_dict().keys())


def installed_expert_layout() -> Literal["fused", "per_expert"]:
    """How the installed transformers' ``JambaForCausalLM`` holds experts (per-expert if it is absent)."""
    try:
        from transformers.models.jamba import modeling_jamba
    except ImportError:
        return "per_expert"
    experts = getattr(modeling_jamba, "JambaExperts", None)
    if experts is None:  # transformers 4.x: a ModuleList of JambaMLP
        return "per_expert"
    tiny = modeling_jamba.JambaConfig(
        vocab_size=8,
        hidden_size=4,
        intermediate_size=4,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        num_experts=2,
        num_experts_per_tok=1,
        attn_layer_period=1,
        attn_layer_offset=0,
    )
    with torch.device("meta"):
        names = {name for name, _ in experts(tiny).named_parameters()}
    return "fused" if "gate_up_proj" in names else "per_expert"


def fuse_experts(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-expert ``experts.{e}.{gate,up,down}_proj.weight`` -> transformers 5's ``experts.gate_up_proj``
    ``(n, 2 * d_ff, d_model)`` and ``experts.down_proj`` ``(n, d_model, d_ff)``, our own layout too."""
    return stack_per_expert(sd)


def unfuse_experts(sd: Mapping[str, Tensor], d_model: int | None = None) -> dict[str, Tensor]:
    """The inverse of :func:`fuse_experts`; per-expert keys pass through unchanged.

    ``d_model`` resolves the orientation of the fused tensors; transformers 5.23 stores them as
    ``(n, 2 * d_ff, d_model)`` and ``(n, d_model, d_ff)``, which is assumed when it is ambiguous.
    """
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        m = _FUSED_KEY.match(key)
        if m is None or value.dim() != 3:
            out[key] = value
            continue
        prefix, kind = m.group(1), m.group(2)
        if kind == "gate_up_proj":
            if d_model is not None and value.shape[2] != d_model and value.shape[1] == d_model:
                value = value.transpose(1, 2)  # (n, d_model, 2 * d_ff) storage
            gate, up = value.chunk(2, dim=1)
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.gate_proj.weight"] = gate[e]
                out[f"{prefix}.{e}.up_proj.weight"] = up[e]
        else:
            if d_model is not None and value.shape[1] != d_model and value.shape[2] == d_model:
                value = value.transpose(1, 2)  # (n, d_ff, d_model) storage
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.down_proj.weight"] = value[e]
    return out


def to_hf_state_dict(model: HybridLM, expert_layout: ExpertLayout = "auto") -> dict[str, Tensor]:
    """Our weights under transformers' Jamba names.

    ``expert_layout``: ``"per_expert"`` (checkpoint files, transformers 4.x), ``"fused"`` (transformers 5's
    in-memory ``JambaExperts``) or ``"auto"``: the layout of the installed transformers, so that
    ``JambaForCausalLM.load_state_dict(to_hf_state_dict(model))`` works. ``lm_head.weight`` is included
    even when tied (it is the embedding tensor itself).
    """
    cfg = model.cfg
    hf_config_dict(cfg)  # raises ConfigError for what transformers cannot express
    out = {_hf_name(key, cfg.pattern): value for key, value in model.state_dict().items()}
    layout = installed_expert_layout() if expert_layout == "auto" else expert_layout
    if layout == "per_expert":
        out = unfuse_experts(out, d_model=cfg.d_model)
    elif layout != "fused":
        raise ValueError(f"expert_layout must be 'auto', 'fused' or 'per_expert', got {expert_layout!r}")
    return out


def from_hf_state_dict(sd: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """transformers' Jamba weights (``JambaForCausalLM`` or ``JambaModel`` names, fused or per-expert
    experts) -> a state dict that ``HybridLM(cfg).load_state_dict`` accepts (strict).

    Raises KeyError naming missing and unexpected weights.
    """
    hf = fuse_experts(unfuse_experts(sd, d_model=cfg.d_model))  # either layout, either orientation
    # JambaModel's own state dict has no "model." prefix.
    hf = {(k if k.startswith(("model.", "lm_head.")) else "model." + k): v for k, v in hf.items()}
    out: dict[str, Tensor] = {}
    missing = []
    for key in _our_keys(cfg):
        name = _hf_name(key, cfg.pattern)
        if key == "lm_head.weight" and cfg.tie_embeddings:
            continue
        if name not in hf:
            missing.append(name)
        else:
            out[key] = hf[name]
    if cfg.tie_embeddings and "embed_tokens.weight" in out:
        out["lm_head.weight"] = out["embed_tokens.weight"]
    used = {_hf_name(k, cfg.pattern) for k in out}
    unexpected = sorted(set(hf) - used - {"lm_head.weight"})
    if missing or unexpected:
        raise KeyError(
            f"the Jamba weights do not match the config (pattern {cfg.pattern!r}): "
            f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    return out


def _load_into_new_model(cfg: ModelConfig, sd: dict[str, Tensor], dtype: torch.dtype | None) -> HybridLM:
    """Build ``HybridLM(cfg)`` without allocating random weights (meta device) and adopt ``sd``'s tensors."""
    with torch.device("meta"):
        model = HybridLM(cfg)
    # load_state_dict(assign=True) replaces Parameter objects, which would drop markers such as
    # A_log._no_weight_decay; remember and restore them.
    markers = {name: dict(p.__dict__) for name, p in model.named_parameters() if p.__dict__}
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    sd = {k: v.detach() for k, v in sd.items()}
    if cfg.tie_embeddings:
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
        sd["lm_head.weight"] = sd["embed_tokens.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    for name, p in model.named_parameters():
        p.__dict__.update(markers.get(name, {}))
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # pragma: no cover - every parameter is in the state dict
        raise RuntimeError(f"parameters left unloaded: {leftover}")
    return model


def to_hf_model(model: HybridLM, **config_overrides: Any) -> JambaForCausalLM:
    """A ``transformers.JambaForCausalLM`` holding a copy of ``model``'s weights (same dtype and device)."""
    transformers = _transformers()
    hf_cfg = to_hf_config(model.cfg, **config_overrides)
    ref = model.embed_tokens.weight
    hf_model = transformers.JambaForCausalLM(hf_cfg)
    target = hf_model.state_dict()
    fused = any(_FUSED_KEY.match(k) for k in target)
    sd = to_hf_state_dict(model, expert_layout="fused" if fused else "per_expert")
    for key, value in list(sd.items()):
        want = target.get(key)
        if want is not None and want.shape != value.shape and want.shape == value.transpose(-1, -2).shape:
            sd[key] = value.transpose(-1, -2)
    if "lm_head.weight" not in target:
        sd.pop("lm_head.weight", None)
    hf_model.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)
    hf_model.to(device=ref.device, dtype=ref.dtype)
    hf_model.train(model.training)
    return hf_model


def from_hf_model(hf_model: Any, dtype: torch.dtype | None = None) -> HybridLM:
    """A ``HybridLM`` holding a copy of a ``JambaForCausalLM``'s weights (its dtype unless ``dtype``)."""
    cfg = from_hf_config(hf_model.config)
    sd = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    model = _load_into_new_model(cfg, from_hf_state_dict(sd, cfg), dtype)
    return model.train(hf_model.training)


# ----------------------------------------------------------------------------------------------------
# Checkpoint files
# ----------------------------------------------------------------------------------------------------


def _read_weights(directory: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [directory / s for s in shards]
    else:
        files = sorted(directory.glob("*.safetensors"))
    if files:
        sd: dict[str, Tensor] = {}
        for f in files:
            sd.update(load_file(str(f), device="cpu"))
        return sd
    bin_index = directory / "pytorch_model.bin.index.json"
    if bin_index.is_file():
        bins = [directory / s for s in sorted(set(json.loads(bin_index.read_text())["weight_map"].values()))]
    else:
        bins = sorted(directory.glob("pytorch_model*.bin"))
    if not bins:
        raise FileNotFoundError(f"no *.safetensors (or pytorch_model*.bin) weights in {directory}")
    sd = {}
    for f in bins:
        sd.update(torch.load(f, map_location="cpu", weights_only=True))
    return sd


def load_hf_checkpoint(path: str | Path, dtype: torch.dtype | None = None) -> HybridLM:
    """A ``HybridLM`` from a local Hugging Face Jamba checkpoint directory (offline; no transformers needed).

    ``path`` is the directory holding ``config.json`` and ``*.safetensors`` (single file or sharded with
    ``model.safetensors.index.json``), or a file inside it. Weights keep the checkpoint's dtype unless
    ``dtype`` is given; the model is built without random initialisation and returned in eval mode.
    """
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"no config.json in {directory} (expected a local Jamba checkpoint directory)"
        )
    cfg = from_hf_config(json.loads(config_file.read_text()))
    sd = from_hf_state_dict(_read_weights(directory), cfg)
    return _load_into_new_model(cfg, sd, dtype).eval()


def save_hf_checkpoint(model: HybridLM, out_dir: str | Path, **config_overrides: Any) -> Path:
    """Write ``config.json`` and ``model.safetensors``, which ``JambaForCausalLM.from_pretrained`` loads.

    Experts are written per expert (the layout of Jamba checkpoints on the hub, which every transformers
    version loads); a tied ``lm_head.weight`` is left out, as transformers does. Returns ``out_dir``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_cfg = to_hf_config(model.cfg, **config_overrides)
    dtype = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    for attr in ("dtype", "torch_dtype"):  # transformers 5 / 4.x
        if hasattr(hf_cfg, attr):
            try:
                setattr(hf_cfg, attr, dtype)
                break
            except Exception:  # pragma: no cover - strict configs that refuse one of them
                continue
    hf_cfg.save_pretrained(str(out))
    sd = to_hf_state_dict(model, expert_layout="per_expert")
    if model.cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
