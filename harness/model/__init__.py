"""The hybrid Transformer-Mamba-MoE model family (see config.py for the layer pattern)."""

from harness.model.config import AttentionConfig, LayoutConfig, MambaConfig, ModelConfig, MoEConfig
from harness.model.lm import HybridLM, InferenceCache, LMOutput

__all__ = [
    "AttentionConfig",
    "HybridLM",
    "InferenceCache",
    "LMOutput",
    "LayoutConfig",
    "MambaConfig",
    "ModelConfig",
    "MoEConfig",
]
