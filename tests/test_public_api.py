"""The package surface: every exported name exists, the lists are sorted, importing starts no threads."""

import os
import subprocess
import sys

import edgesdk
import edgesdk.llm


def test_errors_module_is_reachable_from_the_package():
    assert edgesdk.errors.InputError is edgesdk.InputError
    assert issubclass(edgesdk.errors.StructuredOutputError, edgesdk.errors.GenerationError)


def test_all_is_sorted_and_complete():
    for mod in (edgesdk, edgesdk.llm, edgesdk.errors):
        names = list(mod.__all__)
        assert len(set(names)) == len(names), mod.__name__
        assert all(hasattr(mod, n) for n in names), mod.__name__
    assert edgesdk.__all__ == sorted(edgesdk.__all__)
    assert edgesdk.llm.__all__ == sorted(edgesdk.llm.__all__)


def test_import_starts_no_kernel_threads():
    code = (
        # numpy's BLAS and onnxruntime start their own threads on import: count only what edgesdk adds.
        "import os, numpy, onnxruntime; before = len(os.listdir('/proc/self/task')); import edgesdk, edgesdk.kernels; "
        "after = len(os.listdir('/proc/self/task')); print(before, after)"
    )
    env = {**os.environ, "EDGESDK_THREADS": "4"}
    before, after = map(int, subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split())
    assert after == before
