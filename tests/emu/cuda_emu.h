/* tests/emu/cuda_emu.h: just enough of CUDA to run zen's CUDA backend
 * (kernels/cuda/, compiled as C++ with ZEN_CUDA_EMU) on the CPU, so its host
 * code, launch shapes, cuBLAS argument mapping and every kernel are tested on
 * a machine without a GPU. Not a general emulator: 1-D blocks, static and
 * dynamic shared memory, __syncthreads, __syncwarp, warp shuffles, atomics,
 * wmma 16x16x16 bf16 -> fp32, the runtime calls zen uses, and cuBLAS's Sgemm
 * and GemmEx (bf16 in, fp32 out) written from cuBLAS's column-major
 * definition. Launches go through ZK_LAUNCH (kernels/cuda/cuda_common.cuh).
 * It checks what would fail on a real GPU: more than 99 KiB of dynamic shared
 * memory (the per-block limit of sm_86/89/120 consumer cards), more than
 * 48 KiB without cudaFuncSetAttribute first, block and grid limits.
 *
 * - A block's threads are cooperative fibers on one OS thread (a minimal
 *   stack switch on x86-64, ucontext elsewhere); a
 *   barrier parks its fiber until every participant arrives; a round in
 *   which no fiber arrives or finishes is a deadlock (divergent barrier) and
 *   aborts. Fibers run in a chosen order (forward or reverse), so a missing
 *   barrier shows up as different results between the two orders.
 * - wmma fragments: matrix_a/b hold the whole 16x16 tile in every lane;
 *   an accumulator's element e = 16 r + c belongs to lane e % 32, which alone
 *   computes and stores it (as on the hardware, each lane owns a share), so a
 *   read of another lane's stored elements needs a __syncwarp as on the GPU.
 *   Loads and stores check wmma's rules: leading dimension a multiple of 8
 *   (16-bit) or 4 (fp32) elements and 32-byte aligned pointers.
 * - Shared and device memory start as NaN bytes, so reading what was never
 *   written poisons the result.
 * - Device memory is host-inaccessible as on a real GPU: it is mapped
 *   PROT_NONE and opened (on first touch) only while a kernel, a copy, a
 *   memset or a GEMM runs, so host code that dereferences a device pointer
 *   dies with SIGSEGV. */
#ifndef ZEN_CUDA_EMU_H
#define ZEN_CUDA_EMU_H
#ifndef ZEN_CUDA_EMU
#define ZEN_CUDA_EMU 1 /* kernels/cuda sources take the emulated path */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __align__(x) alignas(x)
#define __shared__ static /* a block's threads share it; blocks run one after another */

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct emu_uint3 {
    unsigned x, y, z;
};
inline emu_uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct alignas(16) float4 {
    float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
inline int min(int a, int b) { return a < b ? a : b; }
inline float __expf(float x) { return expf(x); }
inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- fp16 ---- */
struct __half {
    uint16_t bits;
};
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
/* single roundings (no fused multiply-add), as on the device */
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __half2float(__half h) {
    unsigned sign = (h.bits >> 15) & 1u, exp = (h.bits >> 10) & 0x1fu, man = h.bits & 0x3ffu;
    float v = exp == 0 ? ldexpf((float)man, -24) : exp == 31 ? (man ? NAN : INFINITY) : ldexpf((float)(man | 0x400u), (int)exp - 25);
    return sign ? -v : v;
}

/* ---- bf16, round to nearest even ---- */
struct __nv_bfloat16 {
    uint16_t bits;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((b >> 16) | 0x40)};
    b += 0x7fffu + ((b >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(b >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t b = (uint32_t)h.bits << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}

/* ---- fibers and barriers ---- */
#if defined(__x86_64__)
/* A fiber switch that saves only the System V callee-saved registers: an
 * order of magnitude faster than swapcontext, which also saves the signal
 * mask with a system call. emu_switch(&old_sp, new_sp). */
extern "C" void emu_switch(void **save_sp, void *new_sp);
asm(".text\n.weak emu_switch\n.type emu_switch,@function\nemu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n");
#define EMU_FAST_SWITCH 1
#endif
namespace emu {
struct fiber {
    ucontext_t ctx;
    void *sp; /* saved stack pointer (fast switch) */
    bool done;
    const unsigned *wait_gen; /* parked at a barrier until *wait_gen != wait_val */
    unsigned wait_val;
};
inline ucontext_t scheduler;
inline std::vector<fiber> fibers;
inline char *stacks; /* 1024 fibers' stacks, reserved once (pages are touched lazily) */
inline const size_t stack_bytes = 256 * 1024;
inline unsigned current, nthreads;
inline unsigned long events; /* arrivals and completions, for deadlock detection */
inline unsigned block_arrived, block_gen;
inline unsigned warp_arrived[32], warp_gen[32];
inline float shfl_slots[1024];
inline unsigned char *dyn_smem;
inline std::function<void()> body;
inline bool reverse_order;

#ifdef EMU_FAST_SWITCH
inline void *scheduler_sp;
inline void yield() { emu_switch(&fibers[current].sp, scheduler_sp); }
#else
inline void yield() { swapcontext(&fibers[current].ctx, &scheduler); }
#endif

inline void entry() {
    body();
    fibers[current].done = true;
    events++;
    yield(); /* never resumed */
}

/* makes fiber t start in entry() on its own stack */
inline void fiber_init(unsigned t) {
    char *base = stacks + (size_t)t * stack_bytes;
#ifdef EMU_FAST_SWITCH
    /* the frame emu_switch pops: six registers, then entry as the return
     * address, then a fake return address for entry (rsp = 8 mod 16 there) */
    uintptr_t top = ((uintptr_t)(base + stack_bytes)) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;
    *--sp = (void *)&entry;
    for (int i = 0; i < 6; i++) *--sp = NULL;
    fibers[t].sp = sp;
#else
    getcontext(&fibers[t].ctx);
    fibers[t].ctx.uc_stack.ss_sp = base;
    fibers[t].ctx.uc_stack.ss_size = stack_bytes;
    fibers[t].ctx.uc_link = &scheduler;
    makecontext(&fibers[t].ctx, entry, 0);
#endif
}

inline void resume(unsigned t) {
#ifdef EMU_FAST_SWITCH
    emu_switch(&scheduler_sp, fibers[t].sp);
#else
    swapcontext(&scheduler, &fibers[t].ctx);
#endif
}

inline void barrier(unsigned *arrived, unsigned *gen, unsigned participants) {
    unsigned g = *gen;
    events++;
    if (++*arrived == participants) {
        *arrived = 0;
        ++*gen;
        return;
    }
    fibers[current].wait_gen = gen, fibers[current].wait_val = g;
    while (*gen == g) yield();
    fibers[current].wait_gen = NULL;
}

/* runs body once per thread of every block of the grid */
template <typename F>
void launch(dim3 grid, dim3 block, size_t smem_bytes, F f) {
    if (block.y != 1 || block.z != 1 || block.x % 32 || block.x > 1024) {
        fprintf(stderr, "emu: unsupported block shape\n");
        abort();
    }
    static bool initialised; /* ZEN_EMU_REVERSE: run fibers last to first (a test may flip it later) */
    if (!initialised) reverse_order = getenv("ZEN_EMU_REVERSE") != NULL, initialised = true;
    nthreads = block.x;
    fibers.assign(nthreads, fiber{});
    if (!stacks) stacks = (char *)calloc(1024, stack_bytes);
    size_t sbytes = (smem_bytes + 127) & ~(size_t)127;
    unsigned char *smem = (unsigned char *)aligned_alloc(128, sbytes ? sbytes : 128);
    body = f;
    gridDim = grid;
    blockDim = block;
    /* reversed order runs the blocks last to first too, so a sum whose order
     * depends on scheduling (atomics across blocks) comes out different */
    const unsigned long nblocks = (unsigned long)grid.x * grid.y * grid.z;
    for (unsigned long nb = 0; nb < nblocks; nb++) {
        unsigned long b = reverse_order ? nblocks - 1 - nb : nb;
        unsigned bx = (unsigned)(b % grid.x), by = (unsigned)(b / grid.x % grid.y), bz = (unsigned)(b / grid.x / grid.y);
        blockIdx = emu_uint3{bx, by, bz};
        memset(smem, 0xff, sbytes); /* NaN everywhere */
        dyn_smem = smem;
        block_arrived = block_gen = 0;
        memset(warp_arrived, 0, sizeof warp_arrived);
        memset(warp_gen, 0, sizeof warp_gen);
        for (unsigned t = 0; t < nthreads; t++) {
            fibers[t].done = false;
            fibers[t].wait_gen = NULL;
            fiber_init(t);
        }
        for (;;) {
            bool any = false;
            unsigned long before = events;
            for (unsigned k = 0; k < nthreads; k++) {
                unsigned t = reverse_order ? nthreads - 1 - k : k;
                if (fibers[t].done) continue;
                any = true;
                if (fibers[t].wait_gen && *fibers[t].wait_gen == fibers[t].wait_val) continue; /* still parked */
                current = t;
                threadIdx = emu_uint3{t, 0, 0};
                resume(t);
            }
            if (!any) break;
            if (events == before) {
                fprintf(stderr, "emu: deadlock in block (%u,%u,%u): a barrier not reached by every thread\n",
                        bx, by, bz);
                abort();
            }
        }
    }
    free(smem);
}
} // namespace emu

inline void __syncthreads() { emu::barrier(&emu::block_arrived, &emu::block_gen, emu::nthreads); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    unsigned w = threadIdx.x / 32;
    emu::barrier(&emu::warp_arrived[w], &emu::warp_gen[w], 32);
}
inline float __shfl_xor_sync(unsigned mask, float v, int offset) {
    emu::shfl_slots[threadIdx.x] = v;
    __syncwarp(mask);
    float r = emu::shfl_slots[(threadIdx.x & ~31u) | ((threadIdx.x & 31u) ^ (unsigned)offset)];
    __syncwarp(mask);
    return r;
}
inline float emu_shfl_down(float v, unsigned delta) {
    emu::shfl_slots[threadIdx.x] = v;
    __syncwarp();
    unsigned lane = threadIdx.x & 31u;
    float r = lane + delta < 32 ? emu::shfl_slots[threadIdx.x + delta] : v;
    __syncwarp();
    return r;
}
inline float __shfl_down_sync(unsigned, float v, unsigned delta) { return emu_shfl_down(v, delta); }
inline double __shfl_down_sync(unsigned, double v, unsigned delta) {
    /* two halves through the float slots, as the hardware moves 64 bits as two 32 */
    uint64_t b;
    memcpy(&b, &v, 8);
    float lo, hi;
    uint32_t l32 = (uint32_t)b, h32 = (uint32_t)(b >> 32);
    memcpy(&lo, &l32, 4);
    memcpy(&hi, &h32, 4);
    lo = emu_shfl_down(lo, delta);
    hi = emu_shfl_down(hi, delta);
    memcpy(&l32, &lo, 4);
    memcpy(&h32, &hi, 4);
    b = ((uint64_t)h32 << 32) | l32;
    memcpy(&v, &b, 8);
    return v;
}
/* fibers never run at the same time: a plain read-modify-write is atomic */
inline float atomicAdd(float *p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}
inline double atomicAdd(double *p, double v) {
    double old = *p;
    *p = old + v;
    return old;
}
#define ZK_DYNAMIC_SMEM(name) unsigned char *name = emu::dyn_smem

/* ---- wmma ---- */
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    float x[16][16];
};

inline void check_ptr(const void *p, unsigned ld, unsigned multiple) {
    if (((uintptr_t)p & 31) || ld % multiple) {
        fprintf(stderr, "emu: wmma rule broken: pointer %p (must be 32-byte aligned), ld %u (must be a multiple of %u)\n",
                p, ld, multiple);
        abort();
    }
}
inline bool owns(int r, int c) { return (unsigned)(r * 16 + c) % 32 == (threadIdx.x & 31u); }

template <typename Use, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, __nv_bfloat16, Layout> &f, const __nv_bfloat16 *p, unsigned ld) {
    check_ptr(p, ld, 8);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.x[r][c] = __bfloat162float(std::is_same<Layout, row_major>::value ? p[r * ld + c] : p[c * ld + r]);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ld, layout_t l) {
    check_ptr(p, ld, 4);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r][c] = l == mem_row_major ? p[r * ld + c] : p[c * ld + r];
}
inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ld, layout_t l) {
    check_ptr(p, ld, 4);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            if (owns(r, c)) (l == mem_row_major ? p[r * ld + c] : p[c * ld + r]) = f.x[r][c];
}
template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout> &f, float v) {
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r][c] = v;
}
template <typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA> &a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB> &b,
              const fragment<accumulator, 16, 16, 16, float> &c) {
    for (int r = 0; r < 16; r++)
        for (int col = 0; col < 16; col++) {
            if (!owns(r, col)) continue; /* another lane's element */
            float s = c.x[r][col];
            for (int k = 0; k < 16; k++) s += a.x[r][k] * b.x[k][col];
            d.x[r][col] = s;
        }
}
} // namespace wmma
} // namespace nvcuda
using namespace nvcuda;

/* ---- device memory: accessible only inside device work ---- */
namespace emu {
/* what cudaMalloc allows in all: 80 GiB, or ZEN_EMU_DEVICE_BYTES */
inline size_t device_bytes = getenv("ZEN_EMU_DEVICE_BYTES") ? strtoull(getenv("ZEN_EMU_DEVICE_BYTES"), NULL, 10)
                                                             : (size_t)80 << 30;
inline size_t used_bytes;
inline std::vector<std::pair<void *, size_t>> live; /* pointer, mapped bytes */
inline volatile int device_depth; /* read by the SIGSEGV handler: must not be optimised away */
inline size_t page_round(size_t b) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (b + page - 1) / page * page;
}
inline std::vector<std::pair<void *, size_t>> opened; /* made accessible in the current device scope */

/* Device memory stays PROT_NONE. A fault inside device work (a kernel, copy,
 * memset or GEMM) opens that allocation until the work ends, so only what is
 * touched costs anything; a fault in host code is a host dereference of
 * device memory: the default action (SIGSEGV) follows. */
inline void on_segv(int sig, siginfo_t *si, void *uctx) {
    char *a = (char *)si->si_addr;
    if (device_depth > 0)
        for (auto &e : live)
            if (a >= (char *)e.first && a < (char *)e.first + e.second) {
                mprotect(e.first, e.second, PROT_READ | PROT_WRITE);
                opened.push_back(e);
                return;
            }
    char msg[256];
    void *ip = NULL;
#if defined(__x86_64__)
    ip = (void *)((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RIP];
#endif
    (void)uctx;
    int n = device_depth > 0
                ? snprintf(msg, sizeof msg, "emu: device work touched %p (instruction %p), outside every "
                           "allocation: out of bounds\n", (void *)a, ip)
                : snprintf(msg, sizeof msg, "emu: SIGSEGV at %p (instruction %p) outside device work: host "
                           "code dereferenced device memory?\n", (void *)a, ip);
    if (write(2, msg, (size_t)n) < 0) {
    }
    signal(sig, SIG_DFL);
}
inline void install_segv_handler() {
    static bool done;
    if (done) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    done = true;
}
/* while one exists, device memory can be read and written */
struct device_scope {
    /* the signal fences keep the compiler from moving device-memory accesses
     * (e.g. an inlined 8-byte memcpy) out of the scope */
    device_scope() {
        device_depth = device_depth + 1;
        std::atomic_signal_fence(std::memory_order_seq_cst);
    }
    ~device_scope() {
        std::atomic_signal_fence(std::memory_order_seq_cst);
        device_depth = device_depth - 1;
        if (device_depth == 0) {
            for (auto &e : opened) mprotect(e.first, e.second, PROT_NONE);
            opened.clear();
        }
    }
};
} // namespace emu

/* ---- launches: ZK_LAUNCH(kernel, grid, block, smem)(args...) ---- */
namespace emu {
inline std::vector<std::pair<const void *, size_t>> smem_allowed; /* cudaFuncSetAttribute */
const size_t smem_default = 48 * 1024, smem_limit = 99 * 1024;

template <typename K>
struct launcher {
    dim3 grid, block;
    size_t smem;
    K kernel;
    template <typename... A>
    void operator()(A... args) const {
        if (grid.x == 0 || grid.y > 65535 || grid.z > 65535 || block.x == 0 || block.x > 1024) {
            fprintf(stderr, "emu: bad launch shape grid (%u,%u,%u) block %u\n", grid.x, grid.y, grid.z, block.x);
            abort();
        }
        if (smem > smem_default) {
            size_t allowed = 0;
            for (auto &e : smem_allowed)
                if (e.first == (const void *)kernel) allowed = e.second;
            if (smem > allowed) {
                fprintf(stderr, "emu: %zu bytes of dynamic shared memory without cudaFuncSetAttribute\n", smem);
                abort();
            }
        }
        device_scope open;
        launch(grid, block, smem, [&] { kernel(args...); });
    }
};
} // namespace emu
template <typename K>
emu::launcher<K> zk_emu_launch(dim3 g, dim3 b, size_t smem, K k) {
    return emu::launcher<K>{g, b, smem, k};
}
#define ZK_LAUNCH(kernel, grid, block, smem) zk_emu_launch(dim3(grid), dim3(block), (size_t)(smem), kernel)

/* ---- the runtime calls zen uses ---- */
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
struct cudaDeviceProp {
    char name[256];
    int major, minor;
};
inline const char *cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
/* one emulated GPU, or ZEN_EMU_DEVICES of them (ranks of a data-parallel test) */
inline int emu_device_count() {
    const char *v = getenv("ZEN_EMU_DEVICES");
    return v && atoi(v) > 0 ? atoi(v) : 1;
}
inline cudaError_t cudaGetDeviceCount(int *n) {
    *n = emu_device_count();
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) {
    return device >= 0 && device < emu_device_count() ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) {
    snprintf(p->name, sizeof p->name, "zen CUDA emulator");
    p->major = 8, p->minor = 6; /* the consumer-card limits are checked above */
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (emu::used_bytes + bytes > emu::device_bytes) return cudaErrorMemoryAllocation;
    size_t mapped = emu::page_round(bytes ? bytes : 1);
    void *m = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return cudaErrorMemoryAllocation;
    memset(m, 0xff, mapped); /* NaN: uninitialised device memory must not be read */
    emu::install_segv_handler();
    if (emu::device_depth == 0) mprotect(m, mapped, PROT_NONE);
    else emu::opened.push_back({m, mapped}); /* allocated inside device work: open until it ends */
    emu::used_bytes += mapped;
    emu::live.push_back({m, mapped});
    *p = m;
    return cudaSuccess;
}
inline cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    for (size_t i = 0; i < emu::live.size(); i++)
        if (emu::live[i].first == p) {
            for (size_t j = 0; j < emu::opened.size(); j++)
                if (emu::opened[j].first == p) emu::opened.erase(emu::opened.begin() + (long)j--);
            munmap(p, emu::live[i].second);
            emu::used_bytes -= emu::live[i].second;
            emu::live.erase(emu::live.begin() + (long)i);
            return cudaSuccess;
        }
    fprintf(stderr, "emu: cudaFree of %p, which cudaMalloc did not return (or freed twice)\n", p);
    abort();
}
inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind) {
    emu::device_scope open;
    memcpy(d, s, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void *d, int v, size_t n) {
    emu::device_scope open;
    memset(d, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
    *free_b = emu::device_bytes - emu::used_bytes, *total_b = emu::device_bytes;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaFuncSetAttribute(const void *f, cudaFuncAttribute, int bytes) {
    if ((size_t)bytes > emu::smem_limit) {
        fprintf(stderr, "emu: %d bytes of shared memory per block: above the 99 KiB of sm_86/89/120 cards\n", bytes);
        abort();
    }
    emu::smem_allowed.push_back({f, (size_t)bytes});
    return cudaSuccess;
}

/* ---- cuBLAS: C = alpha op(A) op(B) + beta C, column-major, as its manual defines ---- */
typedef struct emu_cublas *cublasHandle_t;
struct emu_cublas {
    int math_mode;
};
typedef int cublasStatus_t;
enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 };
typedef enum { CUBLAS_OP_N, CUBLAS_OP_T } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH, CUBLAS_PEDANTIC_MATH } cublasMath_t;
typedef enum { CUDA_R_32F, CUDA_R_16BF } cudaDataType;
typedef enum { CUBLAS_COMPUTE_32F } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT } cublasGemmAlgo_t;
inline cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new emu_cublas{0};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *, size_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    h->math_mode = (int)m;
    return CUBLAS_STATUS_SUCCESS;
}
namespace emu {
/* element (i, l) of op(X) for a column-major X with leading dimension ld */
inline float op_at(const void *X, cudaDataType t, cublasOperation_t op, int i, int l, int ld) {
    size_t at = op == CUBLAS_OP_N ? (size_t)i + (size_t)l * ld : (size_t)l + (size_t)i * ld;
    return t == CUDA_R_32F ? ((const float *)X)[at] : __bfloat162float(((const __nv_bfloat16 *)X)[at]);
}
inline cublasStatus_t gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                           const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb, float beta,
                           float *C, int ldc) {
    /* cuBLAS's argument checks: leading dimensions cover the stored rows */
    if (m < 0 || n < 0 || k < 0 || lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) ||
        ldc < m || lda < 1 || ldb < 1 || ldc < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    device_scope open;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0.0;
            for (int l = 0; l < k; l++) s += (double)op_at(A, at, ta, i, l, lda) * op_at(B, bt, tb, l, j, ldb);
            float *c = &C[(size_t)i + (size_t)j * ldc];
            *c = beta == 0.0f ? (float)(alpha * s) : (float)(alpha * s + (double)beta * *c);
        }
    return CUBLAS_STATUS_SUCCESS;
}
} // namespace emu
inline cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float *alpha, const float *A, int lda, const float *B, int ldb,
                                  const float *beta, float *C, int ldc) {
    return emu::gemm(ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, *beta, C, ldc);
}
inline cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void *alpha, const void *A, cudaDataType at, int lda, const void *B,
                                   cudaDataType bt, int ldb, const void *beta, void *C, cudaDataType ct, int ldc,
                                   cublasComputeType_t, cublasGemmAlgo_t) {
    if (ct != CUDA_R_32F) return CUBLAS_STATUS_INVALID_VALUE;
    return emu::gemm(ta, tb, m, n, k, *(const float *)alpha, A, at, lda, B, bt, ldb, *(const float *)beta, (float *)C,
                     ldc);
}

#endif
