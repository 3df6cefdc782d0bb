"""On-device LLM runtime: GGUF loading, tokenizer, forward pass, sampling, speculative decoding."""
