/* tests/emu/cuda_emu.h: just enough of CUDA to run zen's flash-attention
 * kernels (kernels/cuda/flash_attention_kernels.cuh) on the CPU, so their
 * indexing, masking, tiling and barrier placement are tested on a machine
 * without a GPU. Not a general emulator: 1-D blocks, dynamic shared memory,
 * __syncthreads, __syncwarp, __shfl_xor_sync, and wmma 16x16x16 bf16 -> fp32.
 *
 * - A block's threads are cooperative fibers (ucontext) on one OS thread; a
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
 * - Shared memory starts as NaN bytes, so reading what was never written
 *   poisons the result. */
#ifndef ZEN_CUDA_EMU_H
#define ZEN_CUDA_EMU_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <cmath>
#include <functional>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __launch_bounds__(x)
#define __align__(x) alignas(x)

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
namespace emu {
struct fiber {
    ucontext_t ctx;
    bool done;
};
inline ucontext_t scheduler;
inline std::vector<fiber> fibers;
inline std::vector<char> stacks;
inline const size_t stack_bytes = 512 * 1024;
inline unsigned current, nthreads;
inline unsigned long events; /* arrivals and completions, for deadlock detection */
inline unsigned block_arrived, block_gen;
inline unsigned warp_arrived[32], warp_gen[32];
inline float shfl_slots[1024];
inline unsigned char *dyn_smem;
inline std::function<void()> body;
inline bool reverse_order;

inline void yield() { swapcontext(&fibers[current].ctx, &scheduler); }

inline void entry() {
    body();
    fibers[current].done = true;
    events++;
    swapcontext(&fibers[current].ctx, &scheduler);
}

inline void barrier(unsigned *arrived, unsigned *gen, unsigned participants) {
    unsigned g = *gen;
    events++;
    if (++*arrived == participants) {
        *arrived = 0;
        ++*gen;
        return;
    }
    while (*gen == g) yield();
}

/* runs body once per thread of every block of the grid */
template <typename F>
void launch(dim3 grid, dim3 block, size_t smem_bytes, F f) {
    if (block.y != 1 || block.z != 1 || block.x % 32 || block.x > 1024) {
        fprintf(stderr, "emu: unsupported block shape\n");
        abort();
    }
    nthreads = block.x;
    fibers.assign(nthreads, fiber{});
    stacks.resize((size_t)nthreads * stack_bytes);
    size_t sbytes = (smem_bytes + 127) & ~(size_t)127;
    unsigned char *smem = (unsigned char *)aligned_alloc(128, sbytes ? sbytes : 128);
    body = f;
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = emu_uint3{bx, by, bz};
                memset(smem, 0xff, sbytes); /* NaN everywhere */
                dyn_smem = smem;
                block_arrived = block_gen = 0;
                memset(warp_arrived, 0, sizeof warp_arrived);
                memset(warp_gen, 0, sizeof warp_gen);
                for (unsigned t = 0; t < nthreads; t++) {
                    fibers[t].done = false;
                    getcontext(&fibers[t].ctx);
                    fibers[t].ctx.uc_stack.ss_sp = stacks.data() + (size_t)t * stack_bytes;
                    fibers[t].ctx.uc_stack.ss_size = stack_bytes;
                    fibers[t].ctx.uc_link = &scheduler;
                    makecontext(&fibers[t].ctx, entry, 0);
                }
                for (;;) {
                    bool any = false;
                    unsigned long before = events;
                    for (unsigned k = 0; k < nthreads; k++) {
                        unsigned t = reverse_order ? nthreads - 1 - k : k;
                        if (fibers[t].done) continue;
                        any = true;
                        current = t;
                        threadIdx = emu_uint3{t, 0, 0};
                        swapcontext(&scheduler, &fibers[t].ctx);
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

#endif
