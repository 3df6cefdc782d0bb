"""Qwen3 (dense): neox RoPE, per-head RMS norm of Q and K, no biases."""

from . import Architecture

ARCH = Architecture("qwen3", rope="neox", qk_norm=True)
