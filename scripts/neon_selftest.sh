#!/usr/bin/env bash
# Cross-compile the kernels for AArch64 and run the NEON-vs-portable selftest under
# qemu-user.  Needs: apt-get install gcc-aarch64-linux-gnu qemu-user
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/edgesdk-neon.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT
CC="${CC:-aarch64-linux-gnu-gcc}"
"$CC" -O2 -std=gnu11 -Wall -Wno-unused-function -fno-strict-aliasing -pthread -static -I"$ROOT/bindings" \
    "$ROOT/scripts/neon_selftest.c" "$ROOT"/bindings/ek*.c \
    -o "$OUT/selftest" -lm
qemu-aarch64 "$OUT/selftest"
