"""Gemma 3 (text): sliding-window layers with one global layer in six, QK-norm, GeGLU, sandwich norms.

The converter bakes Gemma's ``1 + w`` into the norm weights, so every norm is a plain RMS norm.
Windowed layers use RoPE base 10000 unless the file says otherwise; global ones the file's base.
"""

from . import Architecture, SlidingWindow

ARCH = Architecture(
    "gemma3",
    rope="neox",
    qk_norm=True,
    post_norms=True,
    activation="gelu_tanh",
    embed_scale=True,
    sliding_window=SlidingWindow(pattern=6, rope_base=10000.0),
    chat_template="gemma3",
)
