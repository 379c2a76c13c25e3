/* kernels/cpu/cpu_isa.c: which CPU kernel variant runs. The one list of
 * variants (name, architecture, the extensions cpu_isa.h writes for its
 * target attribute, and the caps it puts on oneDNN and OpenBLAS); the run-
 * time check of each extension (cpuid, and XCR0 for the AVX and AVX-512
 * register state on x86-64; the hardware capabilities on aarch64); and the
 * ZEN_CPU_ISA cap, which also caps the libraries so that one machine behaves
 * as a lower one. This file itself uses no intrinsics. */
#include "cpu_isa.h"
#include "simd_kernels.h"

#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../util/error.h"
#include "../kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#define ARCH_X86 1
#define ARCH_ARM 0
#elif defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#define ARCH_X86 0
#define ARCH_ARM 1
#else
#define ARCH_X86 0
#define ARCH_ARM 0
#endif

static const cpu_kernel_set no_kernels; /* generic: the portable paths */
#if ARCH_X86
#define X86_KERNELS(set) (&(set))
#else
#define X86_KERNELS(set) (&no_kernels)
#endif

enum { ANY_ARCH, X86, ARM };

static const struct {
    const char *name;      /* as ZEN_CPU_ISA spells it */
    int arch;
    const char *features;  /* the target attribute's extensions (cpu_isa.h) */
    int dnnl_cap;          /* dnnl_cpu_isa_t under ZEN_CPU_ISA=name (x86-64) */
    const char *openblas;  /* OPENBLAS_CORETYPE under ZEN_CPU_ISA=name (x86-64) */
    const cpu_kernel_set *kernels;
} variants[CPU_ISA_COUNT] = {
    [CPU_ISA_GENERIC] = {"generic", ANY_ARCH, "", dnnl_cpu_isa_avx, "Sandybridge", &no_kernels},
    [CPU_ISA_AVX2] = {"avx2", X86, CPU_FEATURES_AVX2, dnnl_cpu_isa_avx2, "Haswell", X86_KERNELS(cpu_kernels_avx2)},
    [CPU_ISA_AVX512] = {"avx512", X86, CPU_FEATURES_AVX512, dnnl_cpu_isa_avx512_core, "SkylakeX",
                        X86_KERNELS(cpu_kernels_avx512)},
    [CPU_ISA_AVX512BF16] = {"avx512bf16", X86, CPU_FEATURES_AVX512BF16, dnnl_cpu_isa_avx512_core_bf16, "Cooperlake",
                            X86_KERNELS(cpu_kernels_avx512bf16)},
    /* aarch64: the portable C, which the compiler vectorises for Advanced SIMD */
    [CPU_ISA_NEON] = {"neon", ARM, CPU_FEATURES_NEON, 0, NULL, &no_kernels},
};

int cpu_isa_on_this_arch(cpu_isa isa) {
    int arch = variants[isa].arch;
    return arch == ANY_ARCH || (arch == X86 && ARCH_X86) || (arch == ARM && ARCH_ARM);
}

#if ARCH_X86
/* where cpuid reports an extension, and the XCR0 state bits the OS must save for it */
static const struct {
    const char *name;
    unsigned leaf, subleaf, reg, bit; /* reg: 0 eax, 1 ebx, 2 ecx, 3 edx */
    unsigned long long xcr0;
} x86_features[] = {
    {"avx", 1, 0, 2, 28, 0x6},       {"fma", 1, 0, 2, 12, 0x6},         {"f16c", 1, 0, 2, 29, 0x6},
    {"avx2", 7, 0, 1, 5, 0x6},       {"avx512f", 7, 0, 1, 16, 0xe6},    {"avx512dq", 7, 0, 1, 17, 0xe6},
    {"avx512bw", 7, 0, 1, 30, 0xe6}, {"avx512vl", 7, 0, 1, 31, 0xe6},   {"avx512bf16", 7, 1, 0, 5, 0xe6},
};

static unsigned long long read_xcr0(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* no OSXSAVE: no AVX state */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static int has_feature(const char *name, size_t len) {
    for (size_t f = 0; f < sizeof x86_features / sizeof x86_features[0]; f++) {
        if (strlen(x86_features[f].name) != len || strncmp(x86_features[f].name, name, len)) continue;
        unsigned r[4] = {0};
        if (!__get_cpuid_count(x86_features[f].leaf, x86_features[f].subleaf, &r[0], &r[1], &r[2], &r[3])) return 0;
        if (!((r[x86_features[f].reg] >> x86_features[f].bit) & 1)) return 0;
        return (read_xcr0() & x86_features[f].xcr0) == x86_features[f].xcr0;
    }
    return 0; /* an extension this table does not know is never assumed */
}
#elif ARCH_ARM
static int has_feature(const char *name, size_t len) {
    if (len == 5 && !strncmp(name, "+simd", 5)) return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
    return 0;
}
#else
static int has_feature(const char *name, size_t len) {
    (void)name, (void)len;
    return 0;
}
#endif

int cpu_isa_supported(cpu_isa isa) {
    if ((int)isa < 0 || isa >= CPU_ISA_COUNT || !cpu_isa_on_this_arch(isa)) return 0;
    for (const char *f = variants[isa].features; *f;) {
        size_t len = strcspn(f, ",");
        if (!has_feature(f, len)) return 0;
        f += len + (f[len] == ',');
    }
    return 1;
}

const char *cpu_isa_name(cpu_isa isa) { return (int)isa >= 0 && isa < CPU_ISA_COUNT ? variants[isa].name : "?"; }

static cpu_isa best_supported(void) {
    cpu_isa best = CPU_ISA_GENERIC;
    for (int v = 0; v < CPU_ISA_COUNT; v++)
        if (cpu_isa_supported((cpu_isa)v)) best = (cpu_isa)v;
    return best;
}

/* the level ZEN_CPU_ISA asks for: -1 when unset, -2 (error set) when invalid */
static int requested_cap(void) {
    const char *cap = getenv("ZEN_CPU_ISA");
    if (!cap || !*cap) return -1;
    char names[96] = "";
    for (int v = 0; v < CPU_ISA_COUNT; v++) {
        if (!cpu_isa_on_this_arch((cpu_isa)v)) continue;
        if (!strcmp(cap, variants[v].name)) {
            if (!cpu_isa_supported((cpu_isa)v)) {
                zen_fail(ZEN_ERR_INPUT, "ZEN_CPU_ISA=%s: this CPU (or its OS) lacks part of %s; it runs at most %s",
                         cap, variants[v].features, variants[best_supported()].name);
                return -2;
            }
            return v;
        }
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", *names ? "|" : "", variants[v].name);
    }
    zen_fail(ZEN_ERR_INPUT, "ZEN_CPU_ISA=%s is not a kernel level of this CPU architecture (expected %s)", cap, names);
    return -2;
}

static int active = -1;

cpu_isa cpu_isa_active(void) {
    if (active < 0) {
        int cap = requested_cap();
        active = cap >= 0 ? cap : (int)best_supported();
    }
    return (cpu_isa)active;
}

cpu_isa cpu_isa_force(cpu_isa isa) {
    cpu_isa before = cpu_isa_active();
    if (cpu_isa_supported(isa)) active = isa;
    return before;
}

const cpu_kernel_set *cpu_kernels(void) { return variants[cpu_isa_active()].kernels; }

const char *zk_cpu_kernels_name(void) { return cpu_isa_name(cpu_isa_active()); }

/* the variant whose extensions this build's compile flags already assume
 * (-march): a CPU without them cannot run any of zen */
static cpu_isa build_baseline(void) {
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    return CPU_ISA_AVX512;
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    return CPU_ISA_AVX2;
#else
    return CPU_ISA_GENERIC;
#endif
}

int zk_cpu_isa_setup(char **argv) {
    cpu_isa base = build_baseline();
    if (!cpu_isa_supported(base))
        return zen_fail(ZEN_ERR_INPUT, "this zen was compiled for CPUs with %s (-march of its build); this CPU lacks "
                        "some of them: build zen on it (ZEN_NATIVE=ON) or with ZEN_NATIVE=OFF on an x86-64-v3 CPU",
                        variants[base].features);
    int cap = requested_cap();
    if (cap == -2) return ZEN_ERR_INPUT;
    if (cap < 0) return 0;
    active = cap;
    if (!ARCH_X86) return 0;
    /* oneDNN: before its first kernel is made */
    if (dnnl_set_max_cpu_isa((dnnl_cpu_isa_t)variants[cap].dnnl_cap) != dnnl_success)
        return zen_fail(ZEN_ERR_INTERNAL, "ZEN_CPU_ISA=%s: oneDNN would not take the cap", variants[cap].name);
    /* OpenBLAS picks its kernels when the library loads, from
     * OPENBLAS_CORETYPE: set it and start this program again (once; a value
     * the user set stays) */
    const char *core = getenv("OPENBLAS_CORETYPE");
    if (argv && (!core || !*core)) {
        setenv("OPENBLAS_CORETYPE", variants[cap].openblas, 1);
        execv("/proc/self/exe", argv);
        /* no /proc: the cap holds for zen's kernels and oneDNN only */
    }
    return 0;
}
