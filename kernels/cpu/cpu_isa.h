/* kernels/cpu/cpu_isa.h: the CPU kernel variants (generic C, avx2, avx512,
 * avx512bf16 on x86-64; generic, neon on aarch64), the ISA extensions each
 * needs, and the variant this run uses: the best one the CPU and the OS
 * support, capped by the environment variable ZEN_CPU_ISA.
 *
 * Each variant's extensions are written once, below, as the string its
 * functions' target attribute takes (CPU_TARGET_*); cpu_isa.c reads the same
 * strings to check the CPU at run time (cpuid, and XCR0 for the register
 * state the OS saves), so a function never runs on a CPU that lacks an
 * extension its attribute names. No variant depends on -march. */
#ifndef ZEN_CPU_ISA_H
#define ZEN_CPU_ISA_H

/* the variants, lowest first: a higher one needs every extension of a lower
 * one of its architecture */
typedef enum {
    CPU_ISA_GENERIC = 0, /* portable C (what the compiler vectorises at the build's baseline) */
    CPU_ISA_AVX2,        /* x86-64: AVX2 + FMA + F16C (Haswell, Zen 1-3, Intel client cores) */
    CPU_ISA_AVX512,      /* x86-64: AVX-512 F/DQ/BW/VL (Skylake-SP, Ice Lake, Zen 4) */
    CPU_ISA_AVX512BF16,  /* x86-64: that and AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4) */
    CPU_ISA_NEON,        /* aarch64: Advanced SIMD */
    CPU_ISA_COUNT
} cpu_isa;

/* each variant's ISA extensions, as GCC's and clang's target attribute names them */
#define CPU_FEATURES_AVX2 "avx,avx2,fma,f16c"
#define CPU_FEATURES_AVX512 CPU_FEATURES_AVX2 ",avx512f,avx512dq,avx512bw,avx512vl"
#define CPU_FEATURES_AVX512BF16 CPU_FEATURES_AVX512 ",avx512bf16"
#define CPU_FEATURES_NEON "+simd"
#define CPU_TARGET_AVX2 __attribute__((target(CPU_FEATURES_AVX2)))
#define CPU_TARGET_AVX512 __attribute__((target(CPU_FEATURES_AVX512)))
#define CPU_TARGET_AVX512BF16 __attribute__((target(CPU_FEATURES_AVX512BF16)))
#define CPU_TARGET_NEON __attribute__((target(CPU_FEATURES_NEON)))

/* The variant in use: the highest the CPU supports, or ZEN_CPU_ISA's level
 * (generic|avx2|avx512|avx512bf16 on x86-64, generic|neon on aarch64). The
 * first call reads the environment; cpu_isa_setup reports a bad cap. */
cpu_isa cpu_isa_active(void);
/* the variant's name as ZEN_CPU_ISA spells it */
const char *cpu_isa_name(cpu_isa isa);
/* 1 if the variant belongs to this build's architecture (generic always) */
int cpu_isa_on_this_arch(cpu_isa isa);
/* 1 if this CPU and OS run the variant's instructions */
int cpu_isa_supported(cpu_isa isa);
/* for tests: run variant isa from now on (it must be supported); returns the previous one */
cpu_isa cpu_isa_force(cpu_isa isa);

#endif
