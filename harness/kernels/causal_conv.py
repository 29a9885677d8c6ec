"""Depthwise causal 1-D convolution + SiLU, the first operation of a Mamba mixer.

On CUDA the fused ``causal_conv1d_fn`` from the causal-conv1d package is used when it is installed
(imported lazily; it is optional, and mamba_ssm itself falls back the same way); without it, the fused
kernels (``ModelConfig.kernels``: :mod:`harness.kernels.fused`) run our Triton kernel
(:mod:`harness.kernels.causal_conv_triton`); everywhere else the convolution is ``F.conv1d`` with left
padding.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.kernels import fused


@functools.cache
def fused_conv_available() -> bool:
    if not torch.cuda.is_available() or importlib.util.find_spec("causal_conv1d_cuda") is None:
        return False
    try:
        import causal_conv1d  # noqa: F401
    except Exception:
        return False
    return True


def causal_conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None, backend: str = "auto", kernels: str = "auto"
) -> Tensor:
    """x: (batch, channels, L); weight: (channels, 1, width). Returns silu(causal depthwise conv(x)).
    ``backend`` is the Mamba scan's (reference / cpu keep the plain convolution too); ``kernels`` is
    ``ModelConfig.kernels``."""
    if x.device.type == "cuda" and backend in ("auto", "cuda"):
        if fused_conv_available():
            from causal_conv1d import causal_conv1d_fn

            return causal_conv1d_fn(x, weight.squeeze(1), bias, activation="silu")
        if fused.use_fused(kernels, x):
            from harness.kernels.causal_conv_triton import causal_conv1d_silu

            return causal_conv1d_silu(x, weight, bias)
    width = weight.shape[-1]
    out = F.conv1d(F.pad(x, (width - 1, 0)), weight, bias, groups=x.shape[1])
    return F.silu(out)
