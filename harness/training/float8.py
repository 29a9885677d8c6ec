"""Float8 training (``train.float8``): the large projections run their matmuls in float8 through torchao's
``Float8Linear`` (dynamic per-tensor scaling: e4m3 for inputs and weights, e5m2 for gradients), the way
torchtitan does it; the weights, the optimizer state and every other op keep their precision.

Which layers: the mixers' and MLPs' input and output projections (attention q/k/v/o, Mamba in/out, the
MLP's gate/up/down) whose dimensions are multiples of 16 (float8 matmuls need them). Left as they are: the
LM head and embeddings (torchtitan keeps the output layer too), the MoE router (its softmax decides the
routing), Mamba's x_proj and dt_proj (small, and dt feeds an exponential; mamba_ssm keeps it in fp32) and
the MoE experts (grouped weights, not ``nn.Linear``). ``Float8Linear`` subclasses ``nn.Linear`` with the
same parameters, so checkpoints are the same as without float8: a float8 run resumes, evaluates and
exports like any other.

On CUDA it needs float8 tensor cores (compute capability 8.9: Ada, Hopper and later). On a CPU torchao
emulates the matmul, slowly: that is for tests. Its speed comes under ``torch.compile``, which fuses the
casts around each matmul (``train.compile``); eager, the casts can cost more than the matmul saves, which
``ablate bench train --float8 off,on`` measures.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.config_errors import ConfigError

# The nn.Linear names (the last part of the module path) float8 converts, when their sizes allow.
CONVERTED = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "in_proj", "out_proj", "gate_proj", "up_proj", "down_proj"}
)


def float8_problem(device: torch.device) -> str | None:
    """Why float8 training cannot run on ``device`` (None: it can)."""
    try:
        import torchao.float8  # noqa: F401
    except ImportError as e:
        return f"it needs the torchao package (pip install torchao): {e}"
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        return f"{name} has no float8 tensor cores (compute capability 8.9 or later: Ada, Hopper, Blackwell)"
    return None


def wants_float8(name: str, module: nn.Module) -> bool:
    """Whether the module at ``name`` is one float8 converts (see the module docstring)."""
    return (
        isinstance(module, nn.Linear)
        and name.rpartition(".")[2] in CONVERTED
        and module.in_features % 16 == 0
        and module.out_features % 16 == 0
    )


def convert_to_float8(model: nn.Module, device: torch.device) -> list[str]:
    """Swap ``model``'s eligible linears for torchao's ``Float8Linear`` in place, before it is wrapped for
    DDP/FSDP2, compiled or given to an optimizer; returns the converted module names. ConfigError (key
    ``train.float8``) where float8 cannot run."""
    why = float8_problem(device)
    if why is not None:
        raise ConfigError(f"float8 training cannot run here: {why}; turn it off", key="train.float8")
    from torchao.float8 import convert_to_float8_training

    names = [name for name, module in model.named_modules() if wants_float8(name, module)]
    convert_to_float8_training(model, module_filter_fn=lambda module, name: wants_float8(name, module))
    return names
