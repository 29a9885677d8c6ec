"""Eager or fused: which kernels run the norms, Mamba's conv and the loss (``ModelConfig.kernels``).

The eager path is plain PyTorch and runs anywhere. On a GPU it spends much of a training step on memory
traffic: an fp32 RMSNorm is ~6 kernels forward and more backward over the whole residual stream, with fp32
copies saved for backward; ``F.conv1d``'s depthwise backward is slow; and the loss materialises
(tokens x vocab) logits twice (bf16, then fp32). The fused path replaces exactly these, with the same maths:

* RMSNorm (the blocks', the final one and Mamba's inner dt/B/C norms): liger-kernel's Triton RMSNorm in its
  ``llama`` casting mode, which is this project's definition (fp32 statistics, cast, then the weight);
* Mamba's causal conv1d + SiLU: :mod:`harness.kernels.causal_conv_triton` when the causal-conv1d package is
  not installed (when it is, its CUDA kernel runs on either path);
* the training loss: liger-kernel's fused linear + cross-entropy, which computes the LM head and the loss
  chunk by chunk and never holds the logits.

A run-time choice (:func:`harness.config_schema.runtime_field`): ``auto`` is fused on CUDA tensors when
triton and liger-kernel import, else eager; ``fused`` insists and says what is missing. liger-kernel and
triton are imported lazily, so CPU machines never need them.

Under ``torch.compile`` (``train.compile``), ``auto`` is eager: inductor fuses those ops itself, and its
graphs stay free of liger's autograd Functions. ``fused`` there runs each fused op outside the graph
(:mod:`harness.kernels.opaque`: a graph break, never a tracing failure).
"""

from __future__ import annotations

import functools
import importlib.util

import torch
from torch import Tensor

from harness.kernels.opaque import outside_compiled_graphs

KERNELS = ("auto", "eager", "fused")


@functools.cache
def fused_available() -> str | None:
    """Why the fused kernels cannot run in this process (None: they can)."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    for module, package in (("triton", "triton"), ("liger_kernel", "liger-kernel")):
        if importlib.util.find_spec(module) is None:
            return f"the {package} package is not installed (pip install {package})"
    try:
        import liger_kernel.ops.fused_linear_cross_entropy  # noqa: F401
        import liger_kernel.ops.rms_norm  # noqa: F401
    except Exception as e:  # a liger / triton / torch version mismatch
        return f"liger-kernel cannot be imported: {type(e).__name__}: {e}"
    return None


def use_fused(kernels: str, x: Tensor) -> bool:
    """Whether the fused kernels run on ``x`` under the setting ``kernels`` (auto / eager / fused)."""
    if kernels == "eager":
        return False
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels setting {kernels!r}; choose one of {', '.join(KERNELS)}")
    if kernels == "auto" and torch.compiler.is_compiling():
        return False
    why = "its tensors are not on CUDA" if x.device.type != "cuda" else fused_available()
    if why is None:
        return True
    if kernels == "fused":
        raise RuntimeError(f"kernels: fused cannot run here: {why}; use kernels: auto or eager")
    return False


def kernels_run(kernels: str, device: torch.device, compiled: bool = False) -> str:
    """What the setting ``kernels`` runs on ``device``, ``fused`` or ``eager``, for a model under
    ``torch.compile`` when ``compiled`` (where ``auto`` is eager); RuntimeError when ``fused`` cannot run."""
    if compiled and kernels == "auto":
        return "eager"
    return "fused" if use_fused(kernels, torch.empty(0, device=device)) else "eager"


@outside_compiled_graphs
def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """liger's Triton RMSNorm, ``weight * (x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype)``."""
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction

    # in_place=False: liger would otherwise write dx over the incoming gradient, which autograd may share.
    return LigerRMSNormFunction.apply(x, weight, eps, 0.0, "llama", False)


@outside_compiled_graphs
def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (``ignore_index`` skipped), computed
    in chunks by liger's fused kernel without materialising the logits. It forms the gradients of ``hidden``
    and ``weight`` during the forward pass, so it is for training steps (grad enabled) only."""
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction

    # Positional (autograd Functions take no keywords): bias, class weights, ignore_index, z-loss scale,
    # label smoothing, reduction, softcap, return_z_loss, and fp32 accumulation of the weight's gradient.
    loss = LigerFusedLinearCrossEntropyFunction.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
        None, None, ignore_index, 0.0, 0.0, "mean", None, False, torch.float32,
    )  # fmt: skip
    return loss[0] if isinstance(loss, tuple) else loss
