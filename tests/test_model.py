"""The model family on CPU, for every arm of the tiny family: causality, cached decoding, parameter
counts, attention capture, and a training step that lowers the loss."""

import pytest
import torch

from harness.accounting import kv_cache_bytes, mamba_state_bytes, param_breakdown
from harness.config_schema import from_dict
from harness.model import HybridLM, ModelConfig
from harness.presets import family_preset_names, get_preset

TINY = [n for n in family_preset_names() if n.startswith("tiny-")]
VOCAB = 4096


def tiny_model(name: str) -> HybridLM:
    model = HybridLM(get_preset(name))
    model.eval()
    return model


@pytest.mark.parametrize("name", TINY)
def test_analytic_param_count_matches_instantiated(name):
    model = tiny_model(name)
    assert sum(param_breakdown(model.cfg).values()) == model.num_parameters()


@pytest.mark.parametrize(
    "extra",
    [
        dict(tie_embeddings=True),
        dict(mamba=dict(proj_bias=True, conv_bias=False, inner_rmsnorm=False, dt_rank=3, expand=3, d_conv=2)),
        dict(attention=dict(n_heads=4, n_kv_heads=1, head_dim=24, rope=True)),
        dict(moe=dict(n_experts=3, top_k=1, d_ff=40), pattern="*EM-"),
    ],
)
def test_param_count_of_config_variants(extra):
    cfg = dict(vocab_size=50, d_model=32, d_ff=48, pattern="*-M-", attention=dict(n_heads=4))
    cfg.update(extra)
    model = HybridLM(from_dict(ModelConfig, cfg))
    assert sum(param_breakdown(model.cfg).values()) == model.num_parameters()


@pytest.mark.parametrize("name", TINY)
def test_causal_and_cached_decoding_equals_full_forward(name):
    model = tiny_model(name)
    ids = torch.randint(0, VOCAB, (2, 24))
    with torch.no_grad():
        full = model(ids).logits
        # Causality: changing token 15 leaves positions 0..14 untouched (up to float reassociation
        # in batched matmuls whose row sets differ, e.g. per-expert token groups).
        changed = ids.clone()
        changed[:, 15] = (changed[:, 15] + 1) % VOCAB
        other = model(changed).logits
        torch.testing.assert_close(other[:, :15], full[:, :15], rtol=0, atol=1e-5)
        assert (other[:, 15:] - full[:, 15:]).abs().max() > 1e-2
        # Prefill 9 tokens, then decode one token at a time, then a multi-token chunk.
        cache = model.new_cache(2, 24)
        parts = [model(ids[:, :9], cache=cache).logits]
        parts += [model(ids[:, t : t + 1], cache=cache).logits for t in range(9, 20)]
        parts.append(model(ids[:, 20:], cache=cache).logits)
        torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-4)
        assert cache.seen == 24
        # Cache sizes are what the accounting predicts (fp32 here).
        assert cache.kv_bytes() == kv_cache_bytes(model.cfg, 24, batch=2, bytes_per_element=4)
        assert cache.mamba_bytes() == mamba_state_bytes(model.cfg, batch=2, bytes_per_element=4)


@pytest.mark.parametrize("name", ["tiny-1to7", "tiny-attention-rope"])
def test_attention_capture_matches_fused_path(name):
    model = tiny_model(name)
    ids = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        fused = model(ids)
        captured = model(ids, return_attentions=True)
    torch.testing.assert_close(captured.logits, fused.logits, rtol=1e-4, atol=1e-4)
    attention_blocks = [i for i, c in enumerate(model.cfg.pattern) if c == "*"]
    assert sorted(captured.attentions) == attention_blocks
    for probs in captured.attentions.values():
        assert probs.shape == (2, model.cfg.attention.n_heads, 16, 16)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, model.cfg.attention.n_heads, 16))
        assert torch.all(probs.triu(diagonal=1) == 0)


@pytest.mark.parametrize("name", ["tiny-1to7-moe", "tiny-mamba-nonorm", "tiny-attention-rope"])
def test_training_steps_lower_the_loss(name):
    model = HybridLM(get_preset(name))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, 64, (4, 32))  # a small alphabet the model can learn quickly
    losses = []
    for _ in range(8):
        out = model(ids[:, :-1], targets=ids[:, 1:])
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] - 0.5
    if model.cfg.moe:
        assert out.expert_counts.shape == (model.cfg.count("E"), 16)
        assert out.expert_counts.sum(-1).eq(4 * 31 * 2).all()  # every token picks K=2 experts
        assert out.aux_loss.item() == pytest.approx(0.001 * out.moe_aux.item())


def test_greedy_generation_uses_cache_consistently():
    model = tiny_model("tiny-1to3")
    prompt = torch.randint(0, VOCAB, (1, 10))
    new = model.generate(prompt, max_new_tokens=6)
    ids = prompt
    for _ in range(6):  # the same greedy continuation without a cache
        with torch.no_grad():
            token = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], 1)
    assert torch.equal(new, ids[:, 10:])


def test_mamba_init_follows_mamba_ssm():
    model = tiny_model("tiny-mamba")
    mixer = model.blocks[0].layer
    A = -torch.exp(mixer.A_log)
    torch.testing.assert_close(A[0], -torch.arange(1, 17, dtype=torch.float32))
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert torch.equal(mixer.D, torch.ones_like(mixer.D))


@pytest.mark.parametrize("name", [n for n in TINY if "mamba" in n or "1to" in n])
def test_cpu_scan_backend_matches_reference_in_model(name):
    """The compiled CPU scan and the sequential reference give the same logits and gradients."""
    model = HybridLM(get_preset(name))
    ids = torch.randint(0, VOCAB, (2, 20))
    results = {}
    for backend in ("cpu", "reference"):
        model.set_scan_backend(backend)
        model.zero_grad()
        out = model(ids[:, :-1], targets=ids[:, 1:])
        out.loss.backward()
        grads = {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }  # idle experts: None
        results[backend] = (out.logits.detach(), grads)
    (logits_cpu, grads_cpu), (logits_ref, grads_ref) = results["cpu"], results["reference"]
    torch.testing.assert_close(logits_cpu, logits_ref, rtol=1e-5, atol=1e-5)
    assert grads_cpu.keys() == grads_ref.keys()
    for n, g in grads_ref.items():
        torch.testing.assert_close(grads_cpu[n], g, rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
