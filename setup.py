from setuptools import setup

# Two cffi extensions: the INT4/INT8 matmul kernels, and the fused LLM forward that calls them
# through a function pointer (no link-time dependency between the two).
setup(cffi_modules=["bindings/build_kernels.py:ffibuilder", "bindings/build_llm.py:ffibuilder"])
