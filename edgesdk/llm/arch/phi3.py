"""Phi-3 / Phi-3.5 mini: fused Q|K|V and gate|up tensors, neox RoPE.

llama.cpp disables Phi-3's sliding window (every layer attends to the whole context); so does this
description, so that both give the same tokens.
"""

from . import Architecture

ARCH = Architecture("phi3", rope="neox", qkv=("attn_qkv",), gate_up=("ffn_up",))
