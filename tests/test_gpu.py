"""CUDA tests, run on a GPU machine with mamba-ssm installed: `pytest -m gpu tests/test_gpu.py`.

They skip (with the reason) anywhere else. The CPU suite covers the same model code with the reference and
compiled CPU scans; these check the CUDA kernels against the reference, train every mini arm, and prefill in
chunks through mamba_ssm's kernel and the fused attention.
"""

import pytest
import torch

from harness.kernels.selective_scan import cuda_kernels_available, selective_scan
from harness.model import HybridLM
from harness.model.attention import Attention, KVCache
from harness.model.decode import Decoder
from harness.presets import family_preset_names, get_preset

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not cuda_kernels_available(), reason="needs mamba-ssm's compiled selective_scan_cuda"),
]

MINI = [n for n in family_preset_names() if n.startswith("mini-")]


@pytest.mark.parametrize(
    "batch, d_inner, d_state, length", [(2, 64, 16, 128), (1, 256, 16, 1000), (3, 96, 8, 7)]
)
def test_cuda_scan_matches_reference(batch, d_inner, d_state, length):
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, device=dev, generator=g) * scale).requires_grad_()

    u, delta, z = (
        rand(batch, d_inner, length),
        rand(batch, d_inner, length, scale=0.5),
        rand(batch, d_inner, length),
    )
    A = (-torch.rand(d_inner, d_state, device=dev, generator=g) * 4 - 0.1).requires_grad_()
    B, C = rand(batch, d_state, length), rand(batch, d_state, length)
    D, bias = rand(d_inner), rand(d_inner, scale=0.5)
    inputs = [u, delta, A, B, C, D, z, bias]
    results = {}
    for backend in ("cuda", "reference"):
        y, last = selective_scan(
            u,
            delta,
            A,
            B,
            C,
            D,
            z=z,
            delta_bias=bias,
            delta_softplus=True,
            return_last_state=True,
            backend=backend,
        )
        # mamba_ssm's kernel does not backpropagate through the returned last state: y alone here.
        grads = torch.autograd.grad((y * torch.cos(y.detach())).sum(), inputs)
        results[backend] = (y, last, grads)
    (y1, s1, g1), (y0, s0, g0) = results["cuda"], results["reference"]
    torch.testing.assert_close(y1, y0, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(s1, s0, rtol=1e-3, atol=1e-3)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    for name, a, b in zip(names, g1, g0, strict=True):
        scale = b.abs().max().clamp(min=1.0)
        assert (a - b).abs().max() / scale < 2e-3, name


def test_model_cuda_backend_matches_reference_and_decodes():
    torch.manual_seed(0)
    model = HybridLM(get_preset("mini-1to7-moe")).cuda().eval()
    ids = torch.randint(0, 50304, (2, 64), device="cuda")
    with torch.no_grad():
        fast = model(ids).logits
        model.set_scan_backend("reference")
        slow = model(ids).logits
        model.set_scan_backend("auto")
        torch.testing.assert_close(fast, slow, rtol=2e-3, atol=2e-3)
        cache = model.new_cache(2, 64)
        parts = [model(ids[:, :40], cache=cache).logits]
        parts += [model(ids[:, t : t + 1], cache=cache).logits for t in range(40, 64)]
        torch.testing.assert_close(torch.cat(parts, 1), fast, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("name", MINI)
def test_mini_arm_training_step(name):
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    model = HybridLM(get_preset(name)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    ids = torch.randint(0, 50304, (4, 257), device="cuda")  # one batch, repeated: the loss must fall
    losses = []
    for _ in range(4):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids[:, :-1], targets=ids[:, 1:])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert min(losses[1:]) < losses[0] - 0.5, losses
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"{name}: losses {[round(v, 3) for v in losses]}, peak {peak:.1f} GiB")


TINY = [n for n in family_preset_names() if n.startswith("tiny-")]


@pytest.mark.parametrize("name", TINY)
def test_cuda_graph_decoding_equals_eager_and_uncached_forward(name):
    torch.manual_seed(0)
    model = HybridLM(get_preset(name)).cuda().eval()
    prompts = torch.randint(0, model.cfg.vocab_size, (4, 12), device="cuda")
    with torch.no_grad():
        ids = prompts
        for _ in range(10):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
        graphed = Decoder(model, batch=4, max_len=22, cuda_graphs=True)
        assert graphed.graph is not None
        new = graphed.generate(prompts, 10)
        eager = Decoder(model, batch=4, max_len=22, cuda_graphs=False).generate(prompts, 10)
        assert torch.equal(new, eager)
        assert torch.equal(new, ids[:, 12:])
        assert torch.equal(graphed.generate(prompts, 10), new)  # replayed again after a reset


def _moe_step(layer, x, backend):
    """Output and gradients (input, then parameters) of one MoE forward/backward on ``backend``."""
    layer.backend = backend
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out, routing = layer(x)
    (out.float().square().mean() + routing.aux_loss).backward()
    return [out, x.grad, *(p.grad for p in layer.parameters())]


@pytest.mark.parametrize("tokens", [3, 1024])  # 3 tokens x top-2 of 16 experts leave most experts idle
@pytest.mark.parametrize("precision", ["bf16 weights", "autocast"])
def test_moe_grouped_gemm_matches_loop_without_host_sync(tokens, precision):
    from harness.model.ffn import MoE, grouped_unsupported

    torch.manual_seed(0)
    cfg = get_preset("mini-1to7-moe")
    layer = MoE(cfg).cuda()
    x = torch.randn(1, tokens, cfg.d_model, device="cuda")
    if precision == "bf16 weights":
        layer, x = layer.bfloat16(), x.bfloat16()
        autocast = torch.autocast("cuda", enabled=False)
    else:
        autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    if grouped_unsupported(x, layer.d_ff, torch.bfloat16) is not None:
        pytest.skip(grouped_unsupported(x, layer.d_ff, torch.bfloat16))
    with autocast:
        loop = _moe_step(layer, x, "loop")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any device-to-host copy or sync raises
        try:
            grouped = _moe_step(layer, x, "grouped")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for i, (a, b) in enumerate(zip(grouped, loop, strict=True)):
        assert a is not None and b is not None, i
        scale = b.float().abs().max().clamp(min=1e-3)
        assert (a.float() - b.float()).abs().max() / scale < 2e-2, i


def assert_close_to_scale(got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    """Max abs error within ``tol`` of the larger of 1 and the reference's largest magnitude."""
    scale = max(1.0, want.abs().max().item())
    assert (got.float() - want.float()).abs().max().item() <= tol * scale


@pytest.mark.parametrize(
    "name, dtype, tol", [("mini-1to7-moe", torch.float32, 2e-3), ("mini-1to7", torch.bfloat16, 3e-2)]
)
def test_cuda_chunked_prefill_equals_one_shot(name, dtype, tol):
    """The CUDA scan's initial state (added by linearity around mamba_ssm's kernel) and the lower-right causal
    attention continue a cache as one pass fills it: last logits and caches (KV, conv, SSM), and in fp32 the
    greedy tokens after it. (bf16 runs the dense arm: rounding may flip a near-tie expert choice.)"""
    torch.manual_seed(0)
    model = HybridLM(get_preset(name)).to("cuda", dtype).eval()
    prompts = torch.randint(0, model.cfg.vocab_size, (2, 300), device="cuda")
    with torch.no_grad():
        one_shot = Decoder(model, batch=2, max_len=310)
        want = one_shot.prefill(prompts)
        want_cache = [t.clone() for s in one_shot.cache.states.values() for t in vars(s).values()]
        for chunk in (3, 64, 100):
            chunked = Decoder(model, batch=2, max_len=310)
            assert_close_to_scale(chunked.prefill(prompts, chunk), want, tol)
            got_cache = [t for s in chunked.cache.states.values() for t in vars(s).values()]
            for got, ref in zip(got_cache, want_cache, strict=True):
                assert_close_to_scale(got, ref, tol)
        if dtype == torch.float32:
            new = one_shot.generate(prompts, 10)
            chunked.reset()
            tokens = [chunked.prefill(prompts, 64).argmax(-1)]
            for _ in range(9):
                tokens.append(chunked.step(tokens[-1]).argmax(-1))
            assert torch.equal(torch.stack(tokens, 1), new)


def test_attention_chunk_after_a_long_cache_materialises_no_mask():
    """A 1,024-token chunk after 128K cached tokens: the lower-right causal bias runs in-kernel (GQA
    included), so the pass allocates far less than the (tokens x keys) boolean mask would take."""
    torch.manual_seed(0)
    cfg = get_preset("1.3b-1to7")
    attention = Attention(cfg).to("cuda", torch.bfloat16).eval()
    past, tokens = 128 * 1024, 1024
    shape = (1, attention.n_kv_heads, past + tokens, attention.head_dim)
    cache = KVCache(*(torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in "kv"))
    x = torch.randn(1, tokens, cfg.d_model, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.no_grad():
        out, _ = attention(x, cache=cache, past=past)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()
    assert torch.cuda.max_memory_allocated() - before < tokens * (past + tokens) // 4
