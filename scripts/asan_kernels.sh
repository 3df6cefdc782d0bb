#!/usr/bin/env bash
# Build the C kernels with AddressSanitizer (+UBSan) and run the kernel and quant tests
# against that build.  The normal build in the source tree is left untouched: the ASan
# module goes into a scratch copy of the package.
#
#   scripts/asan_kernels.sh [extra pytest args]
#
# Needs gcc with libasan.  Leak checking is off (CPython itself "leaks" at exit).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/edgesdk-asan.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

cd "$ROOT/bindings"
rm -rf "$WORK/build"
EDGESDK_CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
EDGESDK_LDFLAGS="-fsanitize=address,undefined" \
    "$PY" -c "import build_kernels as b; b.ffibuilder.compile(tmpdir='$WORK/build')" >/dev/null

mkdir -p "$WORK/pkg"
cp -r "$ROOT/edgesdk" "$WORK/pkg/edgesdk"
rm -f "$WORK/pkg/edgesdk"/_ckernels*.so
cp "$WORK"/build/edgesdk/_ckernels*.so "$WORK/pkg/edgesdk/"
mkdir -p "$WORK/pkg/tests"
cp "$ROOT"/tests/conftest.py "$ROOT"/tests/kernel_bounds.py "$ROOT"/tests/gguf_blocks.py "$ROOT"/tests/test_kernels*.py "$ROOT"/tests/test_quant.py "$ROOT"/tests/test_quant_types.py "$ROOT"/tests/test_block_gemm.py "$WORK/pkg/tests/"

LIBASAN="$(gcc -print-file-name=libasan.so)"
LIBUBSAN="$(gcc -print-file-name=libubsan.so)"
cd "$WORK/pkg"
# cwd first on sys.path: the scratch package (with the ASan module) shadows the editable install
LD_PRELOAD="$LIBASAN $LIBUBSAN" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    "$PY" -c "import edgesdk.kernels as k, sys; i = k.info(); print('kernels:', i); sys.exit(0 if 'asan=1' in i.build else 1)"
LD_PRELOAD="$LIBASAN $LIBUBSAN" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    "$PY" -m pytest -q -p no:cacheprovider tests/ "$@"
echo "ASan/UBSan kernel tests passed"
