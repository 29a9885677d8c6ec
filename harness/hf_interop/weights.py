"""The weights half of the conversion to and from transformers' Jamba (the package's face,
:mod:`harness.hf_interop`, says what converts and how).

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
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from harness.hf_interop.config import _transformers, from_hf_config, jamba_layout, to_hf_config
from harness.model.config import ModelConfig
from harness.model.ffn import stack_per_expert
from harness.model.lm import HybridLM

if TYPE_CHECKING:  # pragma: no cover
    from transformers import JambaForCausalLM

ExpertLayout = Literal["auto", "fused", "per_expert"]

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
    jamba_layout(cfg)  # raises ConfigError for what transformers cannot express
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
