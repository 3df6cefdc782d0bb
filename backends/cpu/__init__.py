"""Native CPU backend: numpy + cffi kernels; runs GGUF LLMs."""
