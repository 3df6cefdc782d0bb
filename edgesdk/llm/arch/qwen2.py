"""Qwen2 / Qwen2.5: neox RoPE and Q/K/V biases."""

from . import Architecture

ARCH = Architecture("qwen2", rope="neox", attn_bias=True)
