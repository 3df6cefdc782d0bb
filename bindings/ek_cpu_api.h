/* CPU features (ek_cpu.c): plain declarations, also fed to cffi's cdef() by build_kernels.py. */
/* Features this CPU and OS can run: bit i is feature ek_cpu_feature_name(i). Detected once. */
unsigned ek_cpu_features(void);
/* Name of feature bit i (GCC's target name), or NULL past the last. */
const char *ek_cpu_feature_name(int i);
/* Mask of a comma-separated list of feature names (a target string). */
unsigned ek_cpu_parse(const char *list);
/* 1 when the CPU is AMD's or Hygon's (CPUID vendor string), else 0. */
int ek_cpu_amd(void);
