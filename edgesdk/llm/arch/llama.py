"""Llama 1/2/3.x, SmolLM, Mistral 7B and other llama-layout GGUFs (Llama 3.x brings ``rope_freqs``)."""

from . import Architecture

ARCH = Architecture("llama", rope="norm")
