"""RMSNorm, computed in fp32 and cast back (as in Llama, Mistral and Hugging Face's Jamba).

``kernels`` (``ModelConfig.kernels``) picks the implementation: eager PyTorch, or liger-kernel's Triton
RMSNorm with the same casting on CUDA (:mod:`harness.kernels.fused`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.kernels import fused


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, kernels: str = "auto"):
        super().__init__()
        self.eps = eps
        self.kernels = kernels
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if fused.use_fused(self.kernels, x):
            return fused.rms_norm(x, self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)
