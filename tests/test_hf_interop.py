"""Parity with Hugging Face transformers' Jamba: configs, weights, checkpoints, logits (CPU, fp32)."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from harness import hf_interop  # noqa: E402
from harness.config_errors import ConfigError  # noqa: E402
from harness.model.config import AttentionConfig, MambaConfig, ModelConfig, MoEConfig  # noqa: E402
from harness.model.lm import HybridLM  # noqa: E402
from harness.presets import get_preset  # noqa: E402

ATOL = 1e-4


def tiny_cfg(**overrides) -> ModelConfig:
    """A 1:7 Jamba block with MoE every other layer and 4:2 grouped-query heads."""
    kw = dict(
        vocab_size=128,
        d_model=32,
        d_ff=48,
        pattern="M-MEM-ME*-MEM-ME",
        attention=AttentionConfig(n_heads=4, n_kv_heads=2),
        mamba=MambaConfig(d_state=8, dt_rank=4),
        moe=MoEConfig(n_experts=4, top_k=2),
        # Larger than the default 0.02 so that logits are O(1) and mapping mistakes show up.
        init_std=0.1,
    )
    kw.update(overrides)
    return ModelConfig(**kw)


@torch.no_grad()
def perturb(model: torch.nn.Module) -> None:
    """Move the parameters whose default init is trivial (norms = 1, D = 1, A = 1..N, zero biases)."""
    for name, p in model.named_parameters():
        if "norm" in name:
            p.copy_(1 + 0.3 * torch.randn_like(p))
        elif name.endswith(".D"):
            p.copy_(torch.randn_like(p))
        elif name.endswith("A_log"):
            p.add_(0.5 * torch.randn_like(p))
        elif name.endswith("bias"):
            p.add_(0.3 * torch.randn_like(p))


def ours(cfg: ModelConfig) -> HybridLM:
    model = HybridLM(cfg).eval()
    perturb(model)
    model.set_scan_backend("reference")
    return model


def hf_random(cfg: ModelConfig):
    model = transformers.JambaForCausalLM(hf_interop.to_hf_config(cfg)).eval()
    perturb(model)
    return model


def tokens(cfg: ModelConfig) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (2, 12))


@torch.no_grad()
def max_diff(model: HybridLM, hf_model, ids: torch.Tensor) -> float:
    model.set_scan_backend("reference")
    a = model(ids).logits
    b = hf_model(ids).logits
    assert a.shape == b.shape
    assert a.abs().max() > 0.5, "logits too small for the comparison to mean much"
    return (a - b).abs().max().item()


def test_export_logits_match_transformers():
    cfg = tiny_cfg()
    model = ours(cfg)
    hf_model = hf_interop.to_hf_model(model).eval()
    assert hf_model.config.layers_block_type == ["mamba"] * 4 + ["attention"] + ["mamba"] * 3
    assert hf_model.config.layers_num_experts == [1, 4] * 4
    ids = tokens(cfg)
    assert max_diff(model, hf_model, ids) < ATOL

    # Load balancing: ours is the mean of per-layer losses, which is transformers' function applied to
    # each layer alone (its own aux_loss pools the layers; see the hf_interop docstring).
    from transformers.models.jamba.modeling_jamba import load_balancing_loss_func

    with torch.no_grad():
        out = model(ids)
        hf_out = hf_model(ids, output_router_logits=True)
    assert len(hf_out.router_logits) == cfg.count("E")
    n, k = cfg.moe.n_experts, cfg.moe.top_k
    per_layer = [load_balancing_loss_func((r,), n, k) for r in hf_out.router_logits]
    assert torch.allclose(out.moe_aux, torch.stack(per_layer).mean(), atol=1e-5)


def test_import_logits_match_transformers():
    cfg = tiny_cfg()
    hf_model = hf_random(cfg)
    model = hf_interop.from_hf_model(hf_model).eval()
    assert model.cfg.pattern == cfg.pattern
    assert max_diff(model, hf_model, tokens(cfg)) < ATOL
    # Optimiser markers survive the weight-adopting load.
    assert getattr(model.blocks[0].layer.A_log, "_no_weight_decay", False)


def test_pure_attention_tied_embeddings_round_trip(tmp_path):
    cfg = tiny_cfg(pattern="*-*E*-*E", tie_embeddings=True)
    model = ours(cfg)
    hf_interop.save_hf_checkpoint(model, tmp_path)
    hf_model = transformers.JambaForCausalLM.from_pretrained(tmp_path).eval()
    assert hf_model.config.tie_word_embeddings
    assert hf_model.lm_head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
    assert max_diff(model, hf_model, tokens(cfg)) < ATOL
    back = hf_interop.load_hf_checkpoint(tmp_path)
    assert back.lm_head.weight is back.embed_tokens.weight
    assert max_diff(back, hf_model, tokens(cfg)) < ATOL


def test_save_checkpoint_loads_with_from_pretrained(tmp_path):
    cfg = tiny_cfg()
    model = ours(cfg)
    hf_interop.save_hf_checkpoint(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "jamba" and config["attn_layer_offset"] == 4
    hf_model = transformers.JambaForCausalLM.from_pretrained(tmp_path).eval()
    assert max_diff(model, hf_model, tokens(cfg)) < ATOL


def test_load_checkpoint_written_by_save_pretrained(tmp_path):
    cfg = tiny_cfg()
    hf_model = hf_random(cfg)
    # A small shard size forces model.safetensors.index.json plus several shards.
    hf_model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model = hf_interop.load_hf_checkpoint(tmp_path)
    assert not model.training
    assert max_diff(model, hf_model, tokens(cfg)) < ATOL


def test_state_dict_layouts_round_trip():
    cfg = tiny_cfg()
    model = ours(cfg)
    sd = model.state_dict()
    per_expert = hf_interop.to_hf_state_dict(model, expert_layout="per_expert")
    fused = hf_interop.to_hf_state_dict(model, expert_layout="fused")
    assert "model.layers.1.feed_forward.experts.3.up_proj.weight" in per_expert
    assert fused["model.layers.1.feed_forward.experts.gate_up_proj"].shape == (4, 2 * 48, 32)
    assert fused["model.layers.1.feed_forward.experts.down_proj"].shape == (4, 32, 48)
    for hf_sd in (per_expert, fused):
        back = hf_interop.from_hf_state_dict(hf_sd, cfg)
        assert back.keys() == sd.keys()
        assert all(torch.equal(back[k], sd[k]) for k in sd)
    # JambaModel's names (no "model." prefix) and a missing weight.
    base = {k.removeprefix("model."): v for k, v in per_expert.items()}
    assert hf_interop.from_hf_state_dict(base, cfg).keys() == sd.keys()
    del per_expert["model.layers.4.self_attn.k_proj.weight"]
    with pytest.raises(KeyError, match="k_proj"):
        hf_interop.from_hf_state_dict(per_expert, cfg)


@pytest.mark.parametrize(
    "cfg",
    [
        get_preset("jamba-v0.1"),
        get_preset("tiny-1to3-moe"),
        get_preset("tiny-1to7"),
        get_preset("tiny-attention-moe"),
        tiny_cfg(pattern="M-*EM-*E", moe=MoEConfig(n_experts=4, top_k=1, aux_loss_coef=0.01)),
    ],
    ids=["jamba-v0.1", "tiny-1to3-moe", "tiny-1to7", "tiny-attention-moe", "two-attention"],
)
def test_config_round_trip(cfg):
    hf_cfg = hf_interop.to_hf_config(cfg)
    back = hf_interop.from_hf_config(hf_cfg)
    assert back.pattern == cfg.pattern
    for attr in ("vocab_size", "d_model", "d_ff", "head_dim", "d_inner", "dt_rank", "norm_eps", "init_std"):
        assert getattr(back, attr) == getattr(cfg, attr), attr
    assert back.attention.kv_heads == cfg.attention.kv_heads
    assert back.tie_embeddings == cfg.tie_embeddings
    if "E" in cfg.pattern:
        assert (back.moe.n_experts, back.moe.top_k, back.moe.aux_loss_coef) == (
            cfg.moe.n_experts,
            cfg.moe.top_k,
            cfg.moe.aux_loss_coef,
        )
    # A config.json dict (no transformers needed) gives the same.
    assert hf_interop.from_hf_config(json.loads(hf_cfg.to_json_string())) == back


def test_jamba_v01_config_values():
    hf_cfg = hf_interop.to_hf_config(get_preset("jamba-v0.1"))
    assert (hf_cfg.attn_layer_period, hf_cfg.attn_layer_offset) == (8, 4)
    assert (hf_cfg.expert_layer_period, hf_cfg.expert_layer_offset) == (2, 1)
    assert (hf_cfg.num_experts, hf_cfg.num_experts_per_tok, hf_cfg.num_hidden_layers) == (16, 2, 32)
    assert hf_cfg.mamba_dt_rank == 256 and hf_cfg.num_key_value_heads == 8


@pytest.mark.parametrize(
    ("overrides", "feature"),
    [
        (dict(pattern="M-M-M-M-", moe=None), "pure Mamba"),
        (dict(attention=AttentionConfig(n_heads=4, rope=True)), "RoPE"),
        (dict(mamba=MambaConfig(d_state=8, dt_rank=4, inner_rmsnorm=False)), "inner RMSNorm"),
        (dict(moe=MoEConfig(n_experts=4, top_k=2, renormalize=True)), "renormalised"),
        (dict(moe=MoEConfig(n_experts=4, top_k=2, d_ff=64)), "expert width"),
        (dict(moe=MoEConfig(n_experts=1, top_k=1)), "single expert"),
        (dict(pattern="M-*-*-M-", moe=None), "attention placement that is not periodic"),
        (dict(pattern="*-M-M-*-*-M-", moe=None), "attention placement that is not periodic"),
        (dict(pattern="M-MEMEM-*E", moe=MoEConfig(n_experts=4)), "MoE placement that is not periodic"),
        (dict(pattern="MM*-", require_ffn=False, moe=None), "not mixer/FFN pairs"),
        (dict(attention=AttentionConfig(n_heads=4, head_dim=16)), "head_dim"),
    ],
)
def test_unsupported_layouts_raise(overrides, feature):
    cfg = tiny_cfg(**overrides)
    with pytest.raises(ConfigError, match=feature):
        hf_interop.to_hf_config(cfg)
    with pytest.raises(ConfigError, match=feature):
        hf_interop.to_hf_state_dict(HybridLM(cfg))


def test_pure_mamba_import_and_why_export_is_refused():
    # A Jamba config whose attention offset lies beyond the last layer is pure Mamba: we import it...
    cfg = tiny_cfg(pattern="*-M-M-M-", moe=None)
    hf_cfg = hf_interop.to_hf_config(cfg, attn_layer_period=5, attn_layer_offset=4)
    assert hf_interop.from_hf_config(hf_cfg).pattern == "M-M-M-M-"
    # ...but our exporter refuses it, in our words, because transformers cannot run it with its default
    # cache. The tripwire below matches only the exception type (its wording changes between releases:
    # 'get_seq_length ...' in 5.17, 'get_mask_sizes ...' in 5.25); if the forward starts passing, lift the
    # restriction in hf_interop.hf_config_dict.
    with pytest.raises(ConfigError, match="cannot export to transformers' Jamba: pure Mamba") as refused:
        hf_interop.to_hf_config(tiny_cfg(pattern="M-M-M-M-", moe=None))
    assert refused.value.key == "pattern"
    hf_model = transformers.JambaForCausalLM(hf_cfg).eval()
    with torch.no_grad(), pytest.raises(ValueError):
        hf_model(torch.zeros(1, 4, dtype=torch.long))
