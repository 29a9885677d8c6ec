"""MoE routing and the load-balancing loss on hand-checked inputs."""

import math

import pytest
import torch

from harness.config_schema import from_dict, identity, to_dict
from harness.model import HybridLM, ModelConfig
from harness.model.ffn import MoE, grouped_unsupported, load_balancing_loss


def moe_layer(n=2, k=1, renormalize=False) -> MoE:
    cfg = from_dict(
        ModelConfig,
        dict(
            vocab_size=8,
            d_model=2,
            d_ff=4,
            pattern="*E",
            attention=dict(n_heads=1),
            moe=dict(n_experts=n, top_k=k, renormalize=renormalize),
        ),
    )
    return MoE(cfg)


def test_aux_loss_hand_values():
    # Two tokens, two experts, K=1.
    concentrated = torch.tensor([[0.75, 0.25], [0.75, 0.25]])
    assert load_balancing_loss(concentrated, torch.tensor([[0], [0]]), 2).item() == pytest.approx(2 * 0.75)
    balanced = torch.tensor([[0.75, 0.25], [0.25, 0.75]])
    assert load_balancing_loss(balanced, torch.tensor([[0], [1]]), 2).item() == pytest.approx(1.0)
    # Top-2 of 4 with uniform probabilities and balanced choices: the loss equals K.
    uniform = torch.full((4, 4), 0.25)
    idx = torch.tensor([[0, 1], [2, 3], [1, 0], [3, 2]])
    assert load_balancing_loss(uniform, idx, 4).item() == pytest.approx(2.0)


@pytest.mark.parametrize("renormalize", [False, True])
def test_routing_weights_and_output(renormalize):
    layer = moe_layer(n=3, k=2, renormalize=renormalize)
    with torch.no_grad():
        # Token (1, 0) gets router logits log(0.5), log(0.3), log(0.2): probabilities 0.5, 0.3, 0.2.
        layer.router.weight.copy_(
            torch.tensor([[math.log(0.5), 0.0], [math.log(0.3), 0.0], [math.log(0.2), 0.0]])
        )
    x = torch.tensor([[[1.0, 0.0]]])
    probs, weights, idx = layer.route(x.view(-1, 2))
    torch.testing.assert_close(probs, torch.tensor([[0.5, 0.3, 0.2]]))
    assert idx.tolist() == [[0, 1]]
    expected_w = [0.5 / 0.8, 0.3 / 0.8] if renormalize else [0.5, 0.3]
    torch.testing.assert_close(weights, torch.tensor([expected_w]))
    out, routing = layer(x)
    first, second, _ = layer.experts([x] * 3)
    direct = expected_w[0] * first + expected_w[1] * second
    torch.testing.assert_close(out, direct)
    assert routing.expert_counts.tolist() == [1, 1, 0]
    # f = [[1, 0, 0], [0, 1, 0]] (first and second choices), P = probs: 3 * (0.5 + 0.3)
    assert routing.aux_loss.item() == pytest.approx(3 * 0.8)


def wide_moe_layer(n: int, k: int, d_model: int = 16, d_ff: int = 24) -> MoE:
    """An MoE layer whose widths meet the grouped GEMM's 16-byte stride rule in fp32."""
    cfg = from_dict(
        ModelConfig,
        dict(
            vocab_size=8,
            d_model=d_model,
            d_ff=d_ff,
            pattern="*E",
            attention=dict(n_heads=1),
            moe=dict(n_experts=n, top_k=k),
        ),
    )
    torch.manual_seed(0)
    return MoE(cfg)


def run_backend(layer: MoE, backend: str, x: torch.Tensor) -> tuple[torch.Tensor, list, list, object]:
    """Output, input gradient, parameter gradients and routing of one forward/backward on ``backend``."""
    layer.backend = backend
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out, routing = layer(x)
    (out * torch.cos(out.detach()) + routing.aux_loss).sum().backward()
    grads = [p.grad for p in layer.parameters()]
    return out, x.grad, grads, routing


@pytest.mark.parametrize("tokens, n, k", [(37, 4, 2), (5, 8, 2), (64, 16, 2), (9, 3, 1), (12, 6, 6)])
def test_grouped_backend_equals_loop(tokens, n, k):
    layer = wide_moe_layer(n, k)
    x = torch.randn(1, tokens, 16)
    out_l, dx_l, grads_l, routing_l = run_backend(layer, "loop", x)
    out_g, dx_g, grads_g, routing_g = run_backend(layer, "grouped", x)
    torch.testing.assert_close(out_g, out_l, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dx_g, dx_l, rtol=1e-6, atol=1e-6)
    names = [name for name, _ in layer.named_parameters()]
    for name, a, b in zip(names, grads_g, grads_l, strict=True):
        assert a is not None and b is not None, name  # idle experts get a zero gradient on both paths
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)
    assert routing_g.expert_counts.tolist() == routing_l.expert_counts.tolist()
    assert routing_g.aux_loss.item() == routing_l.aux_loss.item()
    if tokens * k < n:  # some expert got no token
        assert 0 in routing_g.expert_counts.tolist()


def test_idle_experts_get_zero_gradients_on_the_grouped_path():
    layer = wide_moe_layer(4, 1)
    with torch.no_grad():  # the router sends every token to expert 2
        layer.router.weight.zero_()
        layer.router.weight[2, 0] = 10.0
    x = torch.randn(1, 6, 16).abs()
    _, _, _, routing = run_backend(layer, "grouped", x)
    assert routing.expert_counts.tolist() == [0, 0, 6, 0]
    for e in (0, 1, 3):
        for p in layer.experts.parameters():
            assert p.grad[e].eq(0).all()
    assert layer.experts.down_proj.grad[2].abs().sum() > 0


def test_backend_choice():
    layer = wide_moe_layer(4, 2)
    x = torch.randn(2, 3, 16)
    layer.backend = "auto"
    assert layer.use_grouped(x.view(-1, 16)) == (grouped_unsupported(x, layer.d_ff, torch.float32) is None)
    narrow = moe_layer(n=2, k=1)  # d_model 2: rows of 8 bytes, below the grouped GEMM's alignment
    assert "multiples of 4" in grouped_unsupported(torch.zeros(3, 2), 4, torch.float32)
    narrow.backend = "auto"
    narrow(torch.randn(1, 3, 2))  # falls back to the loop
    narrow.backend = "grouped"
    with pytest.raises(ValueError, match="moe.backend 'grouped' cannot run here"):
        narrow(torch.randn(1, 3, 2))


def test_backend_is_a_runtime_setting():
    base = dict(vocab_size=8, d_model=16, d_ff=24, pattern="*E", attention=dict(n_heads=1))
    plain = from_dict(ModelConfig, {**base, "moe": dict(n_experts=4, top_k=2)})
    looped = from_dict(ModelConfig, {**base, "moe": dict(n_experts=4, top_k=2, backend="loop")})
    assert identity(plain) == identity(looped)  # run ids unchanged
    assert "backend" not in to_dict(plain)["moe"]  # resolved configs of existing runs unchanged
    model = HybridLM(looped)
    assert model.blocks[1].layer.backend == "loop"
    model.set_moe_backend("grouped")
    assert model.blocks[1].layer.backend == "grouped"


def test_stacked_experts_keep_seeded_init_and_load_per_expert_checkpoints():
    """The experts' weights are stacked (ffn.Experts), but a seed draws what one nn.Linear per expert drew,
    and a state dict in that per-expert layout (this project's checkpoints before, Jamba-v0.1's files)
    loads into the stacked layer."""
    layer = wide_moe_layer(4, 2)  # seeded inside
    torch.manual_seed(0)
    router = torch.nn.Linear(16, 4, bias=False)
    per_expert = {"router.weight": router.weight.detach()}
    for e in range(4):
        for kind, shape in (("gate_proj", (16, 24)), ("up_proj", (16, 24)), ("down_proj", (24, 16))):
            per_expert[f"experts.{e}.{kind}.weight"] = torch.nn.Linear(*shape, bias=False).weight.detach()
    for e in range(4):
        want = torch.cat(
            [per_expert[f"experts.{e}.gate_proj.weight"], per_expert[f"experts.{e}.up_proj.weight"]]
        )
        assert torch.equal(layer.experts.gate_up_proj[e], want)
        assert torch.equal(layer.experts.down_proj[e], per_expert[f"experts.{e}.down_proj.weight"])
    fresh = wide_moe_layer(4, 2)
    with torch.no_grad():
        fresh.experts.gate_up_proj.zero_()
    fresh.load_state_dict({k: v * 2 for k, v in per_expert.items()})
    assert torch.equal(fresh.experts.gate_up_proj, 2 * layer.experts.gate_up_proj)
    assert torch.equal(fresh.experts.down_proj, 2 * layer.experts.down_proj)
    with pytest.raises(RuntimeError):  # an incomplete one (three experts of four) does not load
        fresh.load_state_dict({k: v for k, v in per_expert.items() if "experts.3." not in k})


def test_the_combine_is_each_tokens_weighted_sum_of_its_choices_in_choice_order():
    """Gather-and-sum, no atomics: every token's output is exactly its top-K experts' outputs weighted and
    added in choice order (bitwise, in fp32), whatever the other tokens chose."""
    layer = wide_moe_layer(n=6, k=3)
    x = torch.randn(1, 41, 16)
    with torch.no_grad():
        out, _ = layer(x)
        _, weights, idx = layer.route(x.view(-1, 16))
        every = torch.stack(layer.experts([x.view(-1, 16)] * 6), dim=1)
        for t in range(41):
            expected = sum(weights[t, c] * every[t, idx[t, c]] for c in range(3))
            assert torch.equal(out[0, t], expected)


def test_dispatch_backward_sums_each_tokens_choices_like_index_select_without_atomics():
    """DispatchRows' backward (gather through the inverse permutation, sum over the K choices) equals
    autograd's index_select backward (an index_add_, atomic on CUDA), in float64 gradcheck and on a layer."""
    from harness.model.ffn import DispatchRows

    g = torch.Generator().manual_seed(0)
    tokens, k, d = 13, 3, 5
    flat = torch.randn(tokens, d, dtype=torch.float64, generator=g, requires_grad=True)
    order = torch.argsort(torch.randint(0, 4, (tokens * k,), generator=g), stable=True)
    unsort = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))
    token = order // k
    torch.autograd.gradcheck(lambda f: DispatchRows.apply(f, token, unsort, k), (flat,))
    grad = torch.randn(tokens * k, d, dtype=torch.float64, generator=g)
    ours = torch.autograd.grad(DispatchRows.apply(flat, token, unsort, k), flat, grad)[0]
    autograds = torch.autograd.grad(flat.index_select(0, token), flat, grad)[0]
    torch.testing.assert_close(ours, autograds, rtol=1e-12, atol=1e-12)

    layer = wide_moe_layer(n=6, k=3)
    x = torch.randn(2, 17, 16, requires_grad=True)
    out, _ = layer(x)
    (dx,) = torch.autograd.grad((out * torch.cos(out.detach())).sum(), x)
    flat_x = x.detach().view(-1, 16).requires_grad_()
    _, weights, idx = layer.route(flat_x)  # the router's gradient too, as in the layer
    every = torch.stack(layer.experts([flat_x] * 6), dim=1)  # each token through every expert, dense
    chosen = every.gather(1, idx[..., None].expand(-1, -1, 16))
    dense = (chosen * weights[..., None]).sum(dim=1)
    (dx_dense,) = torch.autograd.grad((dense * torch.cos(dense.detach())).sum(), flat_x)
    torch.testing.assert_close(dx.view(-1, 16), dx_dense, rtol=1e-5, atol=1e-6)
