"""jamba-ablate: an ablation harness for hybrid Transformer-Mamba-MoE language models."""

__version__ = "0.1.0"
