from setuptools import setup

setup(cffi_modules=["bindings/build_kernels.py:ffibuilder"])
