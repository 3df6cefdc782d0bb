"""Block-wise INT4/INT8 weight quantization: packed tensors, GGUF import, ORT export, error reports."""
