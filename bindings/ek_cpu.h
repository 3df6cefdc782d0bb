/* CPU feature detection shared by both native modules (the kernels and the fused LLM loop).
 *
 * Every SIMD code path is compiled with a GCC target string (e.g. "avx2,fma,f16c") and states
 * exactly that string as what it needs: ek_cpu_parse() turns it into a feature mask, so the
 * attribute that lets the compiler emit an instruction and the check that allows running it are
 * one fact.  A feature counts as present only when the CPU reports it *and* the OS saves the
 * register state it uses (XCR0 on x86; HWCAP on Arm; AMX tile data also needs Linux to grant it to
 * the process, which a hypervisor may refuse), each feature checked on its own: CPUs are
 * not ordered (Zen 4 has AVX-512 VNNI without AVX-VNNI, Alder Lake the reverse). */
#ifndef EK_CPU_H
#define EK_CPU_H

/* Bit i of a feature mask is feature i of this list; names are GCC's target names. */
#define EK_CPU_FEATURES(X)                                                                 \
    X(sse42, "sse4.2") X(popcnt, "popcnt") X(avx, "avx") X(avx2, "avx2") X(fma, "fma")     \
    X(f16c, "f16c") X(avx512f, "avx512f") X(avx512bw, "avx512bw") X(avx512vl, "avx512vl")   \
    X(avx512dq, "avx512dq") X(avx512vnni, "avx512vnni") X(avxvnni, "avxvnni")               \
    X(amx_tile, "amx-tile") X(amx_int8, "amx-int8")                                           \
    X(neon, "neon") X(dotprod, "dotprod") X(i8mm, "i8mm") X(sve, "sve")

#define EK_CPU_ENUM(id, name) EK_CPU_##id,
enum { EK_CPU_FEATURES(EK_CPU_ENUM) EK_CPU_NFEATURES };
#undef EK_CPU_ENUM

#include "ek_cpu_api.h"

/* ek_cpu_parse() sets this for a name the list lacks: no CPU has it, so a path that names a
 * feature this table does not know is never runnable. */
#define EK_CPU_UNKNOWN (1u << 31)
#endif
