"""Our Triton causal conv1d + SiLU (harness/kernels/causal_conv_triton.py) on CPU, in Triton's interpreter
(tests/conftest.py sets TRITON_INTERPRET=1 where there is no GPU): values and the three gradients against
F.conv1d + SiLU, in each input layout the model passes, ragged against the kernel's tiles. The GPU
runs the same check for real (tests/test_gpu.py)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="needs the triton package (the dev extra has it)")
pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="runs the kernels in Triton's interpreter (tests/conftest.py sets it where there is no GPU)",
)


@pytest.mark.parametrize("layout", ["channel-major", "channel-last view", "plain"])
def test_values_and_gradients_match_conv1d_in_every_layout(layout):
    from harness.kernels.causal_conv_triton import causal_conv1d_silu

    batch, channels, length = 2, 70, 67  # channel and time tiles, the last of each ragged
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(channels, 1, 4, generator=g) * 0.5).requires_grad_()
    b = torch.randn(channels, generator=g).requires_grad_()
    if layout == "channel-major":  # Mamba's x: (batch, L, d_inner) memory seen as (batch, d_inner, L)
        leaf = torch.randn(channels, batch * length, generator=g).requires_grad_()
        x = leaf.unflatten(1, (batch, length)).transpose(0, 1)
    elif layout == "channel-last view":
        leaf = torch.randn(batch, length, 2 * channels, generator=g).requires_grad_()
        x = leaf[..., :channels].transpose(1, 2)
    else:
        leaf = torch.randn(batch, channels, length, generator=g).requires_grad_()
        x = leaf
    ours = causal_conv1d_silu(x, w, b)
    ref = F.silu(F.conv1d(F.pad(x, (3, 0)), w, b, groups=channels))
    assert ours.stride() == torch.empty_like(x).stride()  # written in x's layout when x is dense
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn(batch, channels, length, generator=g)
    got = torch.autograd.grad(ours, (leaf, w, b), dy)
    want = torch.autograd.grad(ref, (leaf, w, b), dy)
    for name, a, r in zip(("dx", "dw", "db"), got, want, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4, msg=name)
