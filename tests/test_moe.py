"""MoE routing and the load-balancing loss on hand-checked inputs."""

import math

import pytest
import torch

from harness.config_loader import from_dict
from harness.model import ModelConfig
from harness.model.ffn import MoE, load_balancing_loss


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
    direct = expected_w[0] * layer.experts[0](x) + expected_w[1] * layer.experts[1](x)
    torch.testing.assert_close(out, direct)
    assert routing.expert_counts.tolist() == [1, 1, 0]
    # f = [[1, 0, 0], [0, 1, 0]] (first and second choices), P = probs: 3 * (0.5 + 0.3)
    assert routing.aux_loss.item() == pytest.approx(3 * 0.8)
