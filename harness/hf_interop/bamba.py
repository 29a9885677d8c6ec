"""Conversion between Mamba-2 hybrids (pattern symbol ``S``) and transformers' Bamba (IBM's Mamba-2 hybrid).

Bamba's decoder layer is ours: a mixer (Mamba-2 with mamba_ssm's parameter names, or attention) then a gated
MLP, each behind an RMSNorm, so the weights map by the same names as Jamba's (:func:`~harness.hf_interop.
weights._hf_name`: ``mamba.*`` / ``self_attn.*``, ``feed_forward.*``, ``input_layernorm``,
``pre_ff_layernorm``, ``final_layernorm``) and the config maps field by field (:func:`bamba_config_dict`).

What Bamba cannot express is refused by name, never approximated: Mamba-1 layers (``M``: that is Jamba),
MoE, attention without rotary embeddings (Bamba rotates every attention layer; ours is NoPE unless
``attention.rope``), a head dim other than d_model / heads, learned positions, B/C groups (our gated norm
normalises per group as mamba_ssm's Mamba2 does; Bamba's over all channels), and a pattern that is not
mixer/MLP pairs. One epsilon serves every norm in both models (``norm_eps`` = ``rms_norm_eps``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.config_errors import ConfigError
from harness.hf_interop.weights import _hf_name, _load_into_new_model, _our_keys
from harness.model.config import Mamba2Config, ModelConfig
from harness.model.lm import HybridLM


def _refuse(feature: str, why: str, key: str | None = None) -> ConfigError:
    return ConfigError(f"cannot export to transformers' Bamba: {feature}: {why}", key=key)


def bamba_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The ``BambaConfig`` fields of ``cfg``, or a ConfigError naming what Bamba cannot hold."""
    p = cfg.pattern
    if len(p) % 2 or any(p[i] not in "*S" or p[i + 1] != "-" for i in range(0, len(p), 2)):
        raise _refuse(
            "the pattern",
            f"Bamba's layers are a Mamba-2 ('S') or attention ('*') mixer then a dense MLP ('-'); got {p!r}"
            + (" (Mamba-1 'M' layers are Jamba's: ablate export hf)" if "M" in p else "")
            + (" (MoE 'E' has no Bamba equivalent)" if "E" in p else ""),
            key="pattern",
        )
    m2 = cfg.mamba2 or Mamba2Config()
    attention = "*" in p
    checks = [
        (attention and not cfg.attention.rope, "attention without RoPE", "Bamba rotates every attention"),
        (attention and cfg.head_dim * cfg.attention.n_heads != cfg.d_model, "attention.head_dim",
         "Bamba's head dim is d_model / n_heads"),
        (bool(cfg.attention.learned_positions), "learned positions", "Bamba has none"),
        (m2.n_groups != 1, "mamba2.n_groups > 1", "Bamba's gated norm spans all channels, ours each group"),
        (cfg.embed_dropout > 0, "embed_dropout", "Bamba has no embedding dropout"),
    ]  # fmt: skip
    for failed, feature, why in checks:
        if failed:
            raise _refuse(feature, why)
    d_inner = m2.expand * cfg.d_model
    return {
        "model_type": "bamba",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.attention.n_heads,
        "num_key_value_heads": cfg.attention.kv_heads,
        "attn_layer_indices": [j for j, mixer in enumerate(p[0::2]) if mixer == "*"],
        "mamba_n_heads": d_inner // m2.head_dim,
        "mamba_d_head": m2.head_dim,
        "mamba_n_groups": m2.n_groups,
        "mamba_d_state": m2.d_state,
        "mamba_d_conv": m2.d_conv,
        "mamba_expand": m2.expand,
        "mamba_chunk_size": m2.chunk_size,
        "mamba_conv_bias": m2.conv_bias,
        "mamba_proj_bias": m2.proj_bias,
        "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "rope_parameters": {
            "rope_theta": cfg.attention.rope_theta,
            "partial_rotary_factor": 1.0,
            "rope_type": "default",
        },
    }


def from_bamba_config(hf: Any) -> ModelConfig:
    """Our config of a ``BambaConfig`` (or its dict)."""
    from harness.config_schema import from_dict

    c = hf if isinstance(hf, dict) else hf.to_dict()
    attn = set(c.get("attn_layer_indices") or [])
    rope = c.get("rope_parameters") or {}
    if float(rope.get("partial_rotary_factor", 1.0)) != 1.0 and attn:
        raise ConfigError(
            f"Bamba's partial_rotary_factor {rope['partial_rotary_factor']} rotates part of each head; ours "
            "rotates all of it"
        )
    pattern = "".join(("*" if j in attn else "S") + "-" for j in range(c["num_hidden_layers"]))
    return from_dict(
        ModelConfig,
        {
            "vocab_size": c["vocab_size"],
            "d_model": c["hidden_size"],
            "d_ff": c["intermediate_size"],
            "pattern": pattern,
            "norm_eps": c.get("rms_norm_eps", 1e-5),
            "tie_embeddings": bool(c.get("tie_word_embeddings", False)),
            "attention": {
                "n_heads": c["num_attention_heads"],
                "n_kv_heads": c["num_key_value_heads"],
                "rope": bool(attn),
                "rope_theta": float(rope.get("rope_theta", 10000.0)),
            },
            "mamba2": {
                "d_state": c["mamba_d_state"],
                "d_conv": c["mamba_d_conv"],
                "expand": c["mamba_expand"],
                "head_dim": c["mamba_d_head"],
                "n_groups": c["mamba_n_groups"],
                "chunk_size": c["mamba_chunk_size"],
                "conv_bias": c["mamba_conv_bias"],
                "proj_bias": c["mamba_proj_bias"],
            },
        },
        source="BambaConfig",
    )


def to_bamba_model(model: HybridLM) -> Any:
    """A ``transformers.BambaForCausalLM`` holding a copy of ``model``'s weights (same dtype and device)."""
    import transformers

    hf_model = transformers.BambaForCausalLM(transformers.BambaConfig(**bamba_config_dict(model.cfg)))
    sd = {_hf_name(k, model.cfg.pattern): v.detach().clone() for k, v in model.state_dict().items()}
    if "lm_head.weight" not in hf_model.state_dict():
        sd.pop("lm_head.weight", None)
    hf_model.load_state_dict(sd, strict=True)
    ref = model.embed_tokens.weight
    return hf_model.to(device=ref.device, dtype=ref.dtype).train(model.training)


def from_bamba_model(hf_model: Any, dtype: torch.dtype | None = None) -> HybridLM:
    """A ``HybridLM`` holding a copy of a ``BambaForCausalLM``'s weights."""
    cfg = from_bamba_config(hf_model.config)
    hf = hf_model.state_dict()
    sd = {}
    for key in _our_keys(cfg):
        name = _hf_name(key, cfg.pattern)
        if key == "lm_head.weight" and cfg.tie_embeddings:
            continue
        if name not in hf:
            raise KeyError(f"the Bamba weights lack {name} (pattern {cfg.pattern!r})")
        sd[key] = hf[name].detach().clone()
    return _load_into_new_model(cfg, sd, dtype).train(hf_model.training)


def save_bamba_checkpoint(model: HybridLM, out_dir: str | Path, **config_overrides: Any) -> Path:
    """Write ``config.json`` and ``model.safetensors``, which ``BambaForCausalLM.from_pretrained`` (and
    ``AutoModelForCausalLM``) loads; a tied ``lm_head.weight`` is left out, as transformers does."""
    import transformers
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_cfg = transformers.BambaConfig(**{**bamba_config_dict(model.cfg), **config_overrides})
    hf_cfg.dtype = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    hf_cfg.save_pretrained(str(out))
    sd = {_hf_name(k, model.cfg.pattern): v for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
