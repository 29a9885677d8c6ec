"""Declarative sweeps: a YAML file names a whole ablation (see config.py); `ablate sweep plan` shows it."""
