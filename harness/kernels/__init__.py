"""Compute kernels with interchangeable backends (reference, compiled CPU, CUDA)."""
