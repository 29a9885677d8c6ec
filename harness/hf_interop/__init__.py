"""Conversion between :class:`~harness.model.lm.HybridLM` and Hugging Face transformers' Jamba.

transformers is optional (``pip install 'jamba-ablate[hf]'``) and imported lazily, inside the functions
that need it. :func:`load_hf_checkpoint` and :func:`from_hf_state_dict` work without it: they read
``config.json`` and ``*.safetensors`` directly, from local files only.

The configuration mapping is :mod:`harness.hf_interop.config` (and :func:`jamba_layout`, the one place
that decides what a JambaConfig cannot express); the weight mapping, expert layouts and checkpoint files are
:mod:`harness.hf_interop.weights`. This face hands their public names on.
"""

from harness.hf_interop.config import JambaLayout, from_hf_config, hf_config_dict, jamba_layout, to_hf_config
from harness.hf_interop.weights import (
    ExpertLayout,
    from_hf_model,
    from_hf_state_dict,
    fuse_experts,
    installed_expert_layout,
    load_hf_checkpoint,
    save_hf_checkpoint,
    to_hf_model,
    to_hf_state_dict,
    unfuse_experts,
)

__all__ = [
    "ExpertLayout",
    "JambaLayout",
    "from_hf_config",
    "from_hf_model",
    "from_hf_state_dict",
    "fuse_experts",
    "hf_config_dict",
    "installed_expert_layout",
    "jamba_layout",
    "load_hf_checkpoint",
    "save_hf_checkpoint",
    "to_hf_config",
    "to_hf_model",
    "to_hf_state_dict",
    "unfuse_experts",
]
