/* CPU feature detection (see ek_cpu.h).  Compiled into both native modules; plain C. */
#include "ek_cpu.h"

#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static unsigned long long xgetbv0(void)
{
    unsigned a, d;
    __asm__ __volatile__("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
    return ((unsigned long long)d << 32) | a;
}

#define BIT(v, i) (((v) >> (i)) & 1u)

/* AMX tile data is off for a process until it asks Linux for it (ARCH_REQ_XCOMP_PERM): the request
 * is the only proof that tiles can run, since CPUID and XCR0 can list AMX where a hypervisor keeps
 * it from the guest. Once granted it holds for every thread of the process. */
static unsigned amx_granted(void)
{
#if defined(__linux__) && defined(SYS_arch_prctl)
    const long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}

static unsigned detect(void)
{
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    f |= BIT(c, 20) << EK_CPU_sse42 | BIT(c, 23) << EK_CPU_popcnt;
    /* AVX state: the CPU has AVX, the OS enabled XSAVE (OSXSAVE) and saves SSE and ymm state */
    const unsigned long long xcr0 = BIT(c, 27) ? xgetbv0() : 0;
    const unsigned ymm = BIT(c, 28) && (xcr0 & 0x6) == 0x6;
    if (!ymm) return f;
    f |= 1u << EK_CPU_avx | BIT(c, 12) << EK_CPU_fma | BIT(c, 29) << EK_CPU_f16c;
    if (__get_cpuid_max(0, NULL) < 7) return f;
    unsigned max7, b7, c7, d7;
    __cpuid_count(7, 0, max7, b7, c7, d7);
    f |= BIT(b7, 5) << EK_CPU_avx2;
    /* AVX-512 state: opmask, upper halves of zmm0-15 and zmm16-31 */
    if ((xcr0 & 0xe0) == 0xe0)
        f |= BIT(b7, 16) << EK_CPU_avx512f | BIT(b7, 17) << EK_CPU_avx512dq | BIT(b7, 30) << EK_CPU_avx512bw |
             BIT(b7, 31) << EK_CPU_avx512vl | BIT(c7, 11) << EK_CPU_avx512vnni;
    /* tile state: XTILECFG and XTILEDATA (XCR0 bits 17, 18), then the OS's grant */
    if ((xcr0 & 0x60000) == 0x60000 && BIT(d7, 24) && amx_granted())
        f |= 1u << EK_CPU_amx_tile | BIT(d7, 25) << EK_CPU_amx_int8;
    if (max7 >= 1) {
        unsigned a71, b71, c71, d71;
        __cpuid_count(7, 1, a71, b71, c71, d71);
        f |= BIT(a71, 4) << EK_CPU_avxvnni;
    }
    return f;
}

static int vendor_amd(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    char v[12];
    memcpy(v, &b, 4);
    memcpy(v + 4, &d, 4);
    memcpy(v + 8, &c, 4);
    return memcmp(v, "AuthenticAMD", 12) == 0 || memcmp(v, "HygonGenuine", 12) == 0;
}
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>

static unsigned detect(void)
{
    /* Linux HWCAP bits (asm/hwcap.h): ASIMD 1, ASIMDDP 20, SVE 22; HWCAP2: I8MM 13 */
    const unsigned long h = getauxval(AT_HWCAP), h2 = getauxval(AT_HWCAP2);
    return (unsigned)((h >> 1) & 1) << EK_CPU_neon | (unsigned)((h >> 20) & 1) << EK_CPU_dotprod |
           (unsigned)((h >> 22) & 1) << EK_CPU_sve | (unsigned)((h2 >> 13) & 1) << EK_CPU_i8mm;
}
#elif defined(__aarch64__)
/* NEON is part of the AArch64 base ISA; the optional extensions are not probed here */
static unsigned detect(void) { return 1u << EK_CPU_neon; }
#else
static unsigned detect(void) { return 0; }
#endif
#if !(defined(__x86_64__) && defined(__GNUC__))
static int vendor_amd(void) { return 0; }
#endif

int ek_cpu_amd(void)
{
    static _Atomic int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        v = vendor_amd();
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}

unsigned ek_cpu_features(void)
{
    /* bit 30 marks "detected"; racing first calls store the same value */
    static _Atomic unsigned cached;
    unsigned v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (!v) {
        v = detect() | (1u << 30);
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v & ~(1u << 30);
}

#define EK_CPU_NAME(id, name) name,
static const char *const names[] = {EK_CPU_FEATURES(EK_CPU_NAME)};
#undef EK_CPU_NAME

const char *ek_cpu_feature_name(int i)
{
    return i >= 0 && i < EK_CPU_NFEATURES ? names[i] : NULL;
}

unsigned ek_cpu_parse(const char *list)
{
    unsigned mask = 0;
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        const size_t n = e ? (size_t)(e - p) : strlen(p);
        unsigned bit = EK_CPU_UNKNOWN;
        for (int i = 0; i < EK_CPU_NFEATURES; i++)
            if (strlen(names[i]) == n && memcmp(names[i], p, n) == 0) bit = 1u << i;
        if (n) mask |= bit;
        p = e ? e + 1 : p + n;
    }
    return mask;
}
