/* tests/test_kernels.c: every CPU kernel's backward against central finite
 * differences, and forwards against hand-computed cases and naive double
 * references. Kernels compute in fp32, so differences use h = 1e-2 on smooth
 * functions and accept a relative error of 1e-3 (rounding/h ~ 1e-5, truncation
 * ~ h^2 ~ 1e-4; a wrong formula gives errors of order 1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include <omp.h>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/fast_exp.h"
#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "test_util.h"
#include "util/error.h"

static zk_backend *be;
#define FD_H 1e-2f
#define FD_TOL 1e-3

/* ---------- linear and LoRA ---------- */

typedef struct {
    size_t N, in, out, r;
    float *x, *W, *A, *B, *y, *u, *w;
    float scale;
    int lora;
    zk_dropout drop;
} lin_ctx;

static double lin_loss(void *p) {
    lin_ctx *c = p;
    zk_weight W = {c->W, ZEN_F32};
    be->linear_fwd(be, c->y, c->x, &W, c->N, c->in, c->out);
    if (c->lora) be->lora_fwd(be, c->y, c->u, c->x, c->A, c->B, c->N, c->in, c->out, c->r, c->scale, &c->drop);
    return dot_weights(c->y, c->w, c->N * c->out);
}

static void test_linear_forward_naive(void **state) {
    (void)state;
    size_t N = 5, in = 7, out = 3;
    float x[35], W[21], y[15];
    fill_uniform(x, N * in, 1, 1);
    fill_uniform(W, out * in, 1, 2);
    zk_weight w = {W, ZEN_F32};
    be->linear_fwd(be, y, x, &w, N, in, out);
    for (size_t n = 0; n < N; n++)
        for (size_t o = 0; o < out; o++) {
            double s = 0;
            for (size_t i = 0; i < in; i++) s += (double)x[n * in + i] * W[o * in + i];
            assert_true(fabs(s - y[n * out + o]) < 1e-5);
        }
}

static void test_linear_lora_backward(void **state) {
    (void)state;
    lin_ctx c = {.N = 6, .in = 10, .out = 9, .r = 3, .scale = 1.7f, .lora = 1};
    float x[60], W[90], A[30], B[27], y[54], u[18], w[54], dx[60], dA[30], dB[27], du[18];
    c.x = x, c.W = W, c.A = A, c.B = B, c.y = y, c.u = u, c.w = w;
    fill_uniform(x, 60, 1, 3);
    fill_uniform(W, 90, 0.5f, 4);
    fill_uniform(A, 30, 0.5f, 5);
    fill_uniform(B, 27, 0.5f, 6);
    fill_uniform(w, 54, 1, 7);
    lin_loss(&c);
    zk_weight Wt = {W, ZEN_F32};
    memset(dA, 0, sizeof dA);
    memset(dB, 0, sizeof dB);
    be->linear_bwd(be, dx, w, &Wt, c.N, c.in, c.out, 0);
    be->lora_bwd(be, dx, dA, dB, du, w, x, u, A, B, c.N, c.in, c.out, c.r, c.scale, &c.drop);
    double ex = fd_relative_error(lin_loss, &c, x, 60, dx, FD_H);
    double eA = fd_relative_error(lin_loss, &c, A, 30, dA, FD_H);
    double eB = fd_relative_error(lin_loss, &c, B, 27, dB, FD_H);
    printf("linear+lora: rel err dx %.2e dA %.2e dB %.2e\n", ex, eA, eB);
    assert_true(ex < FD_TOL && eA < FD_TOL && eB < FD_TOL);
    /* accumulate=1 adds to what is there */
    float dx2[60];
    for (int i = 0; i < 60; i++) dx2[i] = 1.0f;
    be->linear_bwd(be, dx2, w, &Wt, c.N, c.in, c.out, 1);
    float dx_plain[60];
    be->linear_bwd(be, dx_plain, w, &Wt, c.N, c.in, c.out, 0);
    for (int i = 0; i < 60; i++) assert_true(fabsf(dx2[i] - 1.0f - dx_plain[i]) < 1e-5f);
}

/* LoRA dropout: the mask is a fixed function of the seed, so the loss is smooth
 * in x, A and B and finite differences still apply */
static void test_lora_dropout(void **state) {
    (void)state;
    lin_ctx c = {.N = 8, .in = 12, .out = 5, .r = 2, .scale = 2.0f, .lora = 1, .drop = {0.3f, 99}};
    float x[96], W[60], A[24], B[10], y[40], u[16], w[40], dx[96], dA[24] = {0}, dB[10] = {0}, du[16];
    c.x = x, c.W = W, c.A = A, c.B = B, c.y = y, c.u = u, c.w = w;
    fill_uniform(x, 96, 1, 30);
    fill_uniform(W, 60, 0.5f, 31);
    fill_uniform(A, 24, 0.5f, 32);
    fill_uniform(B, 10, 0.5f, 33);
    fill_uniform(w, 40, 1, 34);
    lin_loss(&c);
    zk_weight Wt = {W, ZEN_F32};
    be->linear_bwd(be, dx, w, &Wt, c.N, c.in, c.out, 0);
    be->lora_bwd(be, dx, dA, dB, du, w, x, u, A, B, c.N, c.in, c.out, c.r, c.scale, &c.drop);
    double ex = fd_relative_error(lin_loss, &c, x, 96, dx, FD_H);
    double eA = fd_relative_error(lin_loss, &c, A, 24, dA, FD_H);
    double eB = fd_relative_error(lin_loss, &c, B, 10, dB, FD_H);
    printf("lora dropout 0.3: rel err dx %.2e dA %.2e dB %.2e\n", ex, eA, eB);
    assert_true(ex < FD_TOL && eA < FD_TOL && eB < FD_TOL);
    /* about 30% of a large input is dropped, and another seed drops others */
    int kept = 0, same = 0;
    for (size_t i = 0; i < 100000; i++) {
        int k = zk_dropout_keep(99, i, zk_dropout_threshold(0.3f));
        kept += k;
        same += k == zk_dropout_keep(100, i, zk_dropout_threshold(0.3f));
    }
    assert_true(kept > 69000 && kept < 71000);
    assert_true(same < 60000);
}

/* bf16 and f16 weights are widened a chunk of rows at a time; out is large
 * enough here for several chunks (N above the decoding rows) */
/* The LoRA branch, forward and backward, against a double reference with
 * the same dropout mask, at ranks the fused kernels take (8, 16) and one they
 * leave to sgemm (4), on shapes with column tails, odd rows and more than one
 * row chunk. The fused kernels' outputs must not depend on the thread count
 * (y's update is sgemm's, whose bits do). */
typedef struct {
    size_t N, in, out, r;
    float p;
} lora_case;

static double max_abs(const double *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(v[i]) > m ? fabs(v[i]) : m;
    return m;
}

/* max |got - want| over the largest |want| */
static double rel_to_max(const float *got, const double *want, size_t n) {
    double e = 0, m = max_abs(want, n);
    for (size_t i = 0; i < n; i++) e = fabs(got[i] - want[i]) > e ? fabs(got[i] - want[i]) : e;
    return e / (m > 0 ? m : 1);
}

typedef struct {
    float *y, *u, *dx, *dA, *dB, *du;
} lora_out;

static void lora_run(const lora_case *c, const float *x, const float *A, const float *B, const float *dy,
                     const zk_dropout *drop, float scale, lora_out *o) {
    size_t N = c->N, in = c->in, out = c->out, r = c->r;
    for (size_t i = 0; i < N * out; i++) o->y[i] = 0.25f;  /* y += ... adds */
    for (size_t i = 0; i < N * in; i++) o->dx[i] = -0.5f;  /* dx += ... adds */
    for (size_t i = 0; i < r * in; i++) o->dA[i] = 0.125f; /* gradients accumulate */
    for (size_t i = 0; i < out * r; i++) o->dB[i] = -0.25f;
    be->lora_fwd(be, o->y, o->u, x, A, B, N, in, out, r, scale, drop);
    be->lora_bwd(be, o->dx, o->dA, o->dB, o->du, dy, x, o->u, A, B, N, in, out, r, scale, drop);
}

static lora_out lora_out_alloc(const lora_case *c) {
    lora_out o = {malloc(c->N * c->out * 4), malloc(c->N * c->r * 4), malloc(c->N * c->in * 4),
                  malloc(c->r * c->in * 4), malloc(c->out * c->r * 4), malloc(c->N * c->r * 4)};
    return o;
}

static void lora_out_free(lora_out *o) {
    free(o->y), free(o->u), free(o->dx), free(o->dA), free(o->dB), free(o->du);
}

static void test_lora_branch_reference(void **state) {
    (void)state;
    const lora_case cases[] = {{37, 53, 70, 8, 0.0f},  {37, 53, 70, 8, 0.3f},  {5, 16, 16, 16, 0.1f},
                               {301, 333, 257, 8, 0.05f}, {300, 257, 260, 16, 0.0f}, {70, 40, 33, 4, 0.2f}};
    const float scale = 2.0f;
    int fused = cpu_lora_fused_available();
    if (!fused) printf("lora: this CPU has no AVX512F/DQ, so every rank runs on sgemm\n");
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const lora_case *c = &cases[ci];
        size_t N = c->N, in = c->in, out = c->out, r = c->r;
        float *x = malloc(N * in * 4), *A = malloc(r * in * 4), *B = malloc(out * r * 4), *dy = malloc(N * out * 4);
        fill_uniform(x, N * in, 1, 40 + ci);
        fill_uniform(A, r * in, 0.5f, 50 + ci);
        fill_uniform(B, out * r, 0.5f, 60 + ci);
        fill_uniform(dy, N * out, 1, 70 + ci);
        zk_dropout drop = {c->p, 1234 + ci};
        /* the reference in double: xd, u, y, du, dB, dA, dx */
        double *xd = malloc(N * in * 8), *keep = malloc(N * in * 8), *u = calloc(N * r, 8), *y = malloc(N * out * 8);
        double *du = calloc(N * r, 8), *dB = malloc(out * r * 8), *dA = malloc(r * in * 8), *dx = malloc(N * in * 8);
        uint64_t threshold = zk_dropout_threshold(c->p);
        for (size_t i = 0; i < N * in; i++) {
            keep[i] = c->p > 0 ? zk_dropout_keep(drop.seed, i, threshold) / (1.0 - c->p) : 1.0;
            xd[i] = x[i] * keep[i];
        }
        for (size_t n = 0; n < N; n++)
            for (size_t k = 0; k < r; k++) {
                for (size_t i = 0; i < in; i++) u[n * r + k] += xd[n * in + i] * A[k * in + i];
                for (size_t o = 0; o < out; o++) du[n * r + k] += scale * (double)dy[n * out + o] * B[o * r + k];
            }
        for (size_t n = 0; n < N; n++)
            for (size_t o = 0; o < out; o++) {
                double s = 0.25;
                for (size_t k = 0; k < r; k++) s += scale * u[n * r + k] * B[o * r + k];
                y[n * out + o] = s;
            }
        for (size_t o = 0; o < out; o++)
            for (size_t k = 0; k < r; k++) {
                double s = -0.25;
                for (size_t n = 0; n < N; n++) s += scale * (double)dy[n * out + o] * u[n * r + k];
                dB[o * r + k] = s;
            }
        for (size_t k = 0; k < r; k++)
            for (size_t i = 0; i < in; i++) {
                double s = 0.125;
                for (size_t n = 0; n < N; n++) s += du[n * r + k] * xd[n * in + i];
                dA[k * in + i] = s;
            }
        for (size_t n = 0; n < N; n++)
            for (size_t i = 0; i < in; i++) {
                double s = 0;
                for (size_t k = 0; k < r; k++) s += du[n * r + k] * A[k * in + i];
                dx[n * in + i] = -0.5 + keep[n * in + i] * s;
            }
        lora_out got = lora_out_alloc(c), one = lora_out_alloc(c);
        lora_run(c, x, A, B, dy, &drop, scale, &got);
        assert_int_equal(be->status, 0);
        double e[6] = {rel_to_max(got.y, y, N * out),   rel_to_max(got.u, u, N * r),
                       rel_to_max(got.du, du, N * r),   rel_to_max(got.dB, dB, out * r),
                       rel_to_max(got.dA, dA, r * in),  rel_to_max(got.dx, dx, N * in)};
        printf("lora N=%zu %zu->%zu r=%zu p=%.2f (%s): rel err y %.1e u %.1e du %.1e dB %.1e dA %.1e dx %.1e\n", N,
               in, out, r, c->p, fused && r % CPU_LORA_GROUP == 0 ? "fused" : "sgemm", e[0], e[1], e[2], e[3], e[4],
               e[5]);
        for (int k = 0; k < 6; k++) assert_true(e[k] < 2e-6);
        if (fused && r % CPU_LORA_GROUP == 0) {
            /* one thread gives the same bits */
            int threads = omp_get_max_threads();
            omp_set_num_threads(1);
            lora_run(c, x, A, B, dy, &drop, scale, &one);
            omp_set_num_threads(threads);
            assert_memory_equal(got.u, one.u, N * r * 4);
            assert_memory_equal(got.du, one.du, N * r * 4);
            assert_memory_equal(got.dB, one.dB, out * r * 4);
            assert_memory_equal(got.dA, one.dA, r * in * 4);
            assert_memory_equal(got.dx, one.dx, N * in * 4);
        }
        lora_out_free(&got), lora_out_free(&one);
        free(x), free(A), free(B), free(dy), free(xd), free(keep), free(u), free(y), free(du), free(dB), free(dA),
            free(dx);
    }
}

/* Every kernel variant this CPU runs (cpu_isa.h), in one process, on the
 * same inputs: the LoRA branch and decoding's one pass over W agree with the
 * generic C paths to fp32 rounding; the LoRA column passes (one lane per
 * column, sums over rows in order) of avx2 and avx512 agree bit for bit. */
static void test_variants_agree(void **state) {
    (void)state;
    const lora_case c = {203, 333, 259, 16, 0.1f};
    size_t N = c.N, in = c.in, out = c.out, r = c.r;
    float *x = malloc(N * in * 4), *A = malloc(r * in * 4), *B = malloc(out * r * 4), *dy = malloc(N * out * 4);
    fill_uniform(x, N * in, 1, 140), fill_uniform(A, r * in, 0.5f, 141);
    fill_uniform(B, out * r, 0.5f, 142), fill_uniform(dy, N * out, 1, 143);
    zk_dropout drop = {c.p, 77};
    enum { DIN = 517, DOUT = 45, DN = 3 };
    static float dx_[DN * DIN], Wf[DOUT * DIN], ydec[3][CPU_ISA_COUNT][DN * DOUT];
    static uint16_t Wh[DOUT * DIN];
    fill_uniform(dx_, DN * DIN, 1, 144), fill_uniform(Wf, DOUT * DIN, 1, 145);
    zen_dtype dtypes[3] = {ZEN_BF16, ZEN_F16, ZEN_F32};
    lora_out got[CPU_ISA_COUNT];
    zk_backend *saved = be;
    cpu_isa before = cpu_isa_active();
    int ran[CPU_ISA_COUNT] = {0};
    for (int v = 0; v < CPU_ISA_COUNT; v++) {
        if (!cpu_isa_supported((cpu_isa)v)) continue;
        cpu_isa_force((cpu_isa)v);
        be = zk_open("cpu", "f32");
        assert_non_null(be);
        got[v] = lora_out_alloc(&c);
        lora_run(&c, x, A, B, dy, &drop, 2.0f, &got[v]);
        for (int t = 0; t < 3; t++) {
            const void *wdata = Wf;
            if (dtypes[t] != ZEN_F32) zen_narrow(Wh, Wf, dtypes[t], DOUT * DIN), wdata = Wh;
            zk_weight w = {wdata, dtypes[t]};
            be->linear_fwd(be, ydec[t][v], dx_, &w, DN, DIN, DOUT);
        }
        assert_int_equal(zk_status(be), 0);
        zk_close(be);
        ran[v] = 1;
        double e[6] = {0}, ed[3] = {0};
        float *g0[6] = {got[0].y, got[0].u, got[0].du, got[0].dB, got[0].dA, got[0].dx};
        float *gv[6] = {got[v].y, got[v].u, got[v].du, got[v].dB, got[v].dA, got[v].dx};
        size_t n[6] = {N * out, N * r, N * r, out * r, r * in, N * in};
        for (int k = 0; k < 6; k++) {
            double m = 0;
            for (size_t i = 0; i < n[k]; i++) m = fmax(m, fabs(g0[k][i]));
            for (size_t i = 0; i < n[k]; i++) e[k] = fmax(e[k], fabs(gv[k][i] - g0[k][i]) / m);
            assert_true(e[k] < 2e-6);
        }
        for (int t = 0; t < 3; t++) {
            double m = 0;
            for (size_t i = 0; i < DN * DOUT; i++) m = fmax(m, fabs(ydec[t][0][i]));
            for (size_t i = 0; i < DN * DOUT; i++) ed[t] = fmax(ed[t], fabs(ydec[t][v][i] - ydec[t][0][i]) / m);
            assert_true(ed[t] < 2e-6);
        }
        printf("variant %-10s vs generic: lora y %.1e u %.1e du %.1e dB %.1e dA %.1e dx %.1e; decode bf16 %.1e "
               "f16 %.1e f32 %.1e\n", cpu_isa_name((cpu_isa)v), e[0], e[1], e[2], e[3], e[4], e[5], ed[0], ed[1],
               ed[2]);
    }
    cpu_isa_force(before);
    be = saved;
#if defined(__x86_64__)
    if (ran[CPU_ISA_AVX2] && ran[CPU_ISA_AVX512]) {
        /* the column passes alone, on the same w: dB^T's sums, dA's sums and dx */
        lora_drop d = {1, 77, zk_dropout_threshold(0.1f), 1.0f / 0.9f, in};
        float *G[2], *dX[2];
        const cpu_kernel_set *sets[2] = {&cpu_kernels_avx2, &cpu_kernels_avx512};
        for (int s2 = 0; s2 < 2; s2++) {
            G[s2] = calloc(8 * in, 4), dX[s2] = calloc(N * in, 4);
            size_t cols = (size_t)sets[s2]->lora_cols, blocks = (in + cols - 1) / cols;
            for (size_t n0 = 0; n0 < N; n0 += 32)
                for (size_t blk = 0; blk < blocks; blk++)
                    sets[s2]->lora_column_pass8(x, in, blk, got[0].du, r, G[s2], n0, n0 + 32 < N ? n0 + 32 : N, &d,
                                                dX[s2], A, r);
        }
        assert_memory_equal(G[0], G[1], 8 * in * 4);
        assert_memory_equal(dX[0], dX[1], N * in * 4);
        printf("column passes: avx2 and avx512 bit-identical (dA sums and dx, %zu x %zu, dropout 0.1)\n", N, in);
        for (int s2 = 0; s2 < 2; s2++) free(G[s2]), free(dX[s2]);
    } else {
        printf("SKIP column passes avx2 against avx512: this CPU lacks one of them\n");
    }
#endif
    for (int v = 0; v < CPU_ISA_COUNT; v++)
        if (ran[v]) lora_out_free(&got[v]);
    free(x), free(A), free(B), free(dy);
}

/* LoRA on decoding's rows (N <= ZK_DECODE_ROWS): against double, and each
 * row the same bits alone as among 16, with 1 and 2 threads */
static void test_lora_decode_rows(void **state) {
    (void)state;
    enum { N = ZK_DECODE_ROWS, IN = 200, OUT = 77, R = 8 };
    static float x[N * IN], A[R * IN], B[OUT * R], y[N * OUT], y1[OUT], u[N * R], u1[R];
    fill_uniform(x, N * IN, 1, 80);
    fill_uniform(A, R * IN, 1, 81);
    fill_uniform(B, OUT * R, 1, 82);
    memset(y, 0, sizeof y);
    be->lora_fwd(be, y, u, x, A, B, N, IN, OUT, R, 0.5f, NULL);
    double worst = 0, top = 0;
    for (size_t n = 0; n < N; n++)
        for (size_t o = 0; o < OUT; o++) {
            double r = 0;
            for (size_t k = 0; k < R; k++) {
                double uk = 0;
                for (size_t i = 0; i < IN; i++) uk += (double)x[n * IN + i] * A[k * IN + i];
                r += 0.5 * uk * B[o * R + k];
            }
            worst = fmax(worst, fabs(r - y[n * OUT + o])), top = fmax(top, fabs(r));
        }
    printf("LoRA decode rows: max |zen - reference| %.2e (max %.1f)\n", worst, top);
    assert_true(worst < 1e-5 * top);
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        for (size_t n = 0; n < N; n++) {
            memset(y1, 0, sizeof y1);
            be->lora_fwd(be, y1, u1, x + n * IN, A, B, 1, IN, OUT, R, 0.5f, NULL);
            assert_memory_equal(y + n * OUT, y1, OUT * sizeof(float));
        }
    }
    omp_set_num_threads(2);
}

static void test_linear_half_weights_chunked(void **state) {
    (void)state;
    size_t N = CPU_GEMV_ROWS + 1, in = 64, out = 150000;
    float *x = malloc(N * in * 4), *Wf = malloc(out * in * 4), *y = malloc(N * out * 4);
    float *yref = malloc(N * out * 4), *dy = malloc(N * out * 4), *dx = malloc(N * in * 4);
    float *dxref = malloc(N * in * 4);
    uint16_t *Wh = malloc(out * in * 2);
    fill_uniform(x, N * in, 1, 8);
    fill_uniform(Wf, out * in, 1, 9);
    fill_uniform(dy, N * out, 1, 10);
    for (zen_dtype dt = ZEN_F16; dt <= ZEN_BF16; dt++) {
        zen_narrow(Wh, Wf, dt, out * in);
        zen_widen(Wf, Wh, dt, out * in); /* the exact values the kernel sees */
        zk_weight wh = {Wh, dt}, wf = {Wf, ZEN_F32};
        be->linear_fwd(be, y, x, &wh, N, in, out);
        be->linear_fwd(be, yref, x, &wf, N, in, out);
        for (size_t i = 0; i < N * out; i++) assert_true(fabsf(y[i] - yref[i]) < 1e-4f);
        be->linear_bwd(be, dx, dy, &wh, N, in, out, 0);
        be->linear_bwd(be, dxref, dy, &wf, N, in, out, 0);
        /* dx sums out = 150000 products: each element against the exact sum,
         * within fp32_bound over that length. Its terms: the 2-norm of the
         * products, the size a random walk of partial sums reaches, so that one
         * product dropped or doubled (|dy W| ~ 0.25) is caught */
        double worst_share = 0;
        for (size_t n = 0; n < N; n++)
            for (size_t i = 0; i < in; i++) {
                double exact = 0, terms = 0;
                for (size_t o = 0; o < out; o++) {
                    double p = (double)dy[n * out + o] * Wf[o * in + i];
                    exact += p, terms += p * p;
                }
                terms = sqrt(terms);
                double share = fabs(dx[n * in + i] - exact) / fp32_bound(terms, (double)out, 1);
                worst_share = fmax(worst_share, share);
            }
        printf("linear %s weights, backward over %zu outputs: worst error %.3f of fp32_bound\n",
               dt == ZEN_F16 ? "f16" : "bf16", out, worst_share);
        assert_true(worst_share <= 1.0);
    }
    free(x), free(Wf), free(y), free(yref), free(dy), free(dx), free(dxref), free(Wh);
}

/* the reference's own bf16 rounding */
static float bf16_round(float x) { return zen_bf16_to_f32(zen_f32_to_bf16(x)); }

/* decoding's one pass over W (N <= CPU_GEMV_ROWS = ZK_DECODE_ROWS) for bf16,
 * f16 and block-quantised weights, in f32 compute and (where the CPU has it)
 * bf16 compute: against a double reference from the values the kernel must
 * see (the stored weight widened; in bf16, x and a non-bf16 weight rounded to
 * bf16), bit-identical for 1 and 2 threads, and each row the same bits as
 * that row alone */
static void test_linear_decode_rows(void **state) {
    (void)state;
    enum { MAX_IN = 512, OUT = 97 }; /* OUT: not a multiple of the rows done at once */
    static float x[CPU_GEMV_ROWS * MAX_IN], Wf[OUT * MAX_IN], Wv[OUT * MAX_IN], y[CPU_GEMV_ROWS * OUT];
    static float y1[CPU_GEMV_ROWS * OUT];
    static unsigned char Wq[OUT * MAX_IN * 4];
    fill_uniform(x, CPU_GEMV_ROWS * MAX_IN, 1, 70);
    fill_uniform(Wf, OUT * MAX_IN, 1, 71);
    zk_backend *b16 = zk_open("cpu", "bf16");
    if (!b16) printf("SKIP decode rows in bf16 compute: %s\n", zen_last_error());
    zen_dtype types[] = {ZEN_BF16, ZEN_F16, ZEN_F32, ZEN_Q8_0, ZEN_Q4_0, ZEN_NF4};
    for (int c = 0; c < 2; c++) {
        zk_backend *x_be = c ? b16 : be;
        if (!x_be) continue;
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            /* plain types: rows of 500, not a multiple of any vector (tails); blocks: 512 */
            size_t IN = zen_dtype_block(types[t]) == 1 ? 500 : 512;
            if (c && types[t] == ZEN_F32) continue; /* bf16 compute takes weights as bf16 (weight_create) */
            zen_narrow(Wq, Wf, types[t], OUT * IN);
            zen_widen(Wv, Wq, types[t], OUT * IN);
            zk_weight w = {Wq, types[t]};
            /* the row counts take each kernel: 4 at a time, 2, 1, and their mixes */
            static const size_t row_counts[] = {1, 2, 3, 4, 7, CPU_GEMV_ROWS};
            for (size_t rc = 0; rc < sizeof row_counts / sizeof row_counts[0]; rc++) {
                size_t N = row_counts[rc];
                x_be->linear_fwd(x_be, y, x, &w, N, IN, OUT);
                double worst = 0, top = 0;
                for (size_t n = 0; n < N; n++)
                    for (size_t o = 0; o < OUT; o++) {
                        double r = 0;
                        for (size_t i = 0; i < IN; i++)
                            r += c ? (double)bf16_round(x[n * IN + i]) * bf16_round(Wv[o * IN + i])
                                   : (double)x[n * IN + i] * Wv[o * IN + i];
                        worst = fmax(worst, fabs(r - y[n * OUT + o])), top = fmax(top, fabs(r));
                    }
                printf("decode rows %s compute, %s weight, N=%zu: max |zen - reference| %.2e (max %.1f)\n",
                       c ? "bf16" : "f32", zen_dtype_name(types[t]), N, worst, top);
                assert_true(worst < 1e-5 * top);
                omp_set_num_threads(1);
                x_be->linear_fwd(x_be, y1, x, &w, N, IN, OUT);
                omp_set_num_threads(2);
                assert_memory_equal(y, y1, N * OUT * sizeof(float));
                for (size_t n = 0; n < N; n++) { /* each row alone: the same bits (kernels.h) */
                    x_be->linear_fwd(x_be, y1, x + n * IN, &w, 1, IN, OUT);
                    assert_memory_equal(y + n * OUT, y1, OUT * sizeof(float));
                }
            }
        }
    }
    assert_int_equal(zk_status(be), 0);
    if (b16) zk_close(b16);
}

/* ---------- RMSNorm ---------- */

typedef struct {
    size_t rows, dim;
    float *x, *wt, *y, *rstd, *w;
} norm_ctx;

static double norm_loss(void *p) {
    norm_ctx *c = p;
    be->rmsnorm_fwd(be, c->y, c->rstd, c->x, c->wt, c->rows, c->dim, 1e-6f);
    return dot_weights(c->y, c->w, c->rows * c->dim);
}

static void test_rmsnorm_hand(void **state) {
    (void)state;
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 0.5f, 2, 1}, y[4], rstd;
    be->rmsnorm_fwd(be, y, &rstd, x, w, 1, 4, 0.0f);
    /* mean(x^2) = 30/4 = 7.5 */
    double s = 1.0 / sqrt(7.5);
    assert_true(fabs(rstd - s) < 1e-7);
    assert_true(fabs(y[0] - 1 * s) < 1e-6 && fabs(y[1] - 1.0 * s) < 1e-6);
    assert_true(fabs(y[2] - 6 * s) < 1e-6 && fabs(y[3] - 4 * s) < 1e-6);
}

static void test_rmsnorm_backward(void **state) {
    (void)state;
    norm_ctx c = {.rows = 5, .dim = 8};
    float x[40], wt[8], y[40], rstd[5], w[40], dx[40], dw[8];
    c.x = x, c.wt = wt, c.y = y, c.rstd = rstd, c.w = w;
    fill_uniform(x, 40, 2, 11);
    fill_uniform(wt, 8, 1, 12);
    fill_uniform(w, 40, 1, 13);
    norm_loss(&c);
    memset(dw, 0, sizeof dw);
    be->rmsnorm_bwd(be, dx, dw, w, x, rstd, wt, c.rows, c.dim, 0);
    double ex = fd_relative_error(norm_loss, &c, x, 40, dx, FD_H);
    double ew = fd_relative_error(norm_loss, &c, wt, 8, dw, FD_H);
    printf("rmsnorm: rel err dx %.2e dw %.2e\n", ex, ew);
    assert_true(ex < FD_TOL && ew < FD_TOL);
}

/* ---------- RoPE ---------- */

static void test_rope_hand(void **state) {
    (void)state;
    /* B=1, T=2, H=1, hd=4, theta=100: inv_freq = [1, 100^(-1/2) = 0.1] */
    float x[8] = {9, 9, 9, 9, 1, 2, 3, 4};
    int32_t pos[2] = {0, 1};
    be->rope_fwd(be, x, pos, 2, 2, 1, 4, 100.0);
    /* position 0 is the identity */
    assert_true(x[0] == 9 && x[1] == 9 && x[2] == 9 && x[3] == 9);
    /* position 1: pairs (x0, x2) by angle 1 and (x1, x3) by angle 0.1 */
    assert_true(fabs(x[4] - (1 * cos(1.0) - 3 * sin(1.0))) < 1e-6);
    assert_true(fabs(x[6] - (3 * cos(1.0) + 1 * sin(1.0))) < 1e-6);
    assert_true(fabs(x[5] - (2 * cos(0.1) - 4 * sin(0.1))) < 1e-6);
    assert_true(fabs(x[7] - (4 * cos(0.1) + 2 * sin(0.1))) < 1e-6);
}

/* 10 rows of 3 heads in documents: each row's position restarts at its document */
static const int32_t rope_pos[10] = {0, 1, 2, 0, 1, 3, 4, 0, 1, 2};

typedef struct {
    float *x, *y, *w;
    size_t n;
} rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    memcpy(c->y, c->x, c->n * sizeof(float));
    be->rope_fwd(be, c->y, rope_pos, 10, 5, 3, 8, 10000.0);
    return dot_weights(c->y, c->w, c->n);
}

static void test_rope_backward(void **state) {
    (void)state;
    size_t n = 2 * 5 * 3 * 8;
    float x[240], y[240], w[240], dx[240];
    rope_ctx c = {x, y, w, n};
    fill_uniform(x, n, 1, 14);
    fill_uniform(w, n, 1, 15);
    memcpy(dx, w, sizeof dx);
    be->rope_bwd(be, dx, rope_pos, 10, 5, 3, 8, 10000.0);
    double e = fd_relative_error(rope_loss, &c, x, n, dx, FD_H);
    printf("rope: rel err %.2e\n", e);
    assert_true(e < FD_TOL);
    /* a row at position p rotates as the hand case does at p: rows 3 and 0 (both 0) are unchanged */
    memcpy(y, x, sizeof y);
    be->rope_fwd(be, y, rope_pos, 10, 5, 3, 8, 10000.0);
    assert_memory_equal(y, x, 3 * 8 * sizeof(float));
    assert_memory_equal(y + 3 * 24, x + 3 * 24, 3 * 8 * sizeof(float));
}

/* ---------- attention ---------- */

/* naive double segmented causal GQA with materialised probabilities: query i
 * sees keys [seg[i], i] (seg NULL: from 0) */
static void attention_naive(double *out, const float *q, const float *k, const float *v, const int32_t *seg,
                            size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    double scale = 1.0 / sqrt((double)hd);
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < nh; h++) {
            size_t kvh = h / (nh / nkv);
            for (size_t i = 0; i < T; i++) {
                double s[128], m = -1e300, sum = 0;
                size_t j0 = seg ? (size_t)seg[b * T + i] : 0;
                for (size_t j = j0; j <= i; j++) {
                    double d = 0;
                    for (size_t e = 0; e < hd; e++)
                        d += (double)q[((b * T + i) * nh + h) * hd + e] * k[((b * T + j) * nkv + kvh) * hd + e];
                    s[j] = d * scale;
                    if (s[j] > m) m = s[j];
                }
                for (size_t j = j0; j <= i; j++) sum += (s[j] = exp(s[j] - m));
                for (size_t e = 0; e < hd; e++) {
                    double o = 0;
                    for (size_t j = j0; j <= i; j++) o += s[j] / sum * v[((b * T + j) * nkv + kvh) * hd + e];
                    out[((b * T + i) * nh + h) * hd + e] = o;
                }
            }
        }
}

static void test_attention_hand(void **state) {
    (void)state;
    /* one head, T=2, hd=2. Row 0 sees only itself: out0 = v0.
     * Row 1: scores = (q1.k0, q1.k1)/sqrt(2) = (1, 0)/sqrt(2) */
    float q[4] = {0, 0, 1, 0}, k[4] = {1, 0, 0, 1}, v[4] = {2, 3, 4, 5}, out[4], lse[2];
    be->attention_fwd(be, out, lse, q, k, v, NULL, 1, 2, 1, 1, 2);
    double a = exp(1 / sqrt(2.0)), p0 = a / (a + 1), p1 = 1 / (a + 1);
    assert_true(fabs(out[0] - 2) < 1e-6 && fabs(out[1] - 3) < 1e-6);
    assert_true(fabs(out[2] - (p0 * 2 + p1 * 4)) < 1e-6);
    assert_true(fabs(out[3] - (p0 * 3 + p1 * 5)) < 1e-6);
    assert_true(fabs(lse[1] - log(a + 1)) < 1e-6);
}

typedef struct {
    size_t B, T, nh, nkv, hd;
    float *q, *k, *v, *out, *lse, *w;
    const int32_t *seg;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    be->attention_fwd(be, c->out, c->lse, c->q, c->k, c->v, c->seg, c->B, c->T, c->nh, c->nkv, c->hd);
    return dot_weights(c->out, c->w, c->B * c->T * c->nh * c->hd);
}

static void test_attention_gqa(void **state) {
    (void)state;
    att_ctx c = {.B = 2, .T = 7, .nh = 6, .nkv = 2, .hd = 4}; /* GQA 3:1 */
    size_t nq = c.B * c.T * c.nh * c.hd, nk = c.B * c.T * c.nkv * c.hd;
    float q[336], k[112], v[112], out[336], lse[84], w[336], dq[336], dk[112], dv[112];
    double ref[336];
    c.q = q, c.k = k, c.v = v, c.out = out, c.lse = lse, c.w = w;
    fill_uniform(q, nq, 1.5f, 16);
    fill_uniform(k, nk, 1.5f, 17);
    fill_uniform(v, nk, 1, 18);
    fill_uniform(w, nq, 1, 19);
    att_loss(&c);
    attention_naive(ref, q, k, v, NULL, c.B, c.T, c.nh, c.nkv, c.hd);
    for (size_t i = 0; i < nq; i++) assert_true(fabs(ref[i] - out[i]) < 1e-5);
    be->attention_bwd(be, dq, dk, dv, w, out, lse, q, k, v, NULL, c.B, c.T, c.nh, c.nkv, c.hd);
    double eq = fd_relative_error(att_loss, &c, q, nq, dq, FD_H);
    double ek = fd_relative_error(att_loss, &c, k, nk, dk, FD_H);
    double ev = fd_relative_error(att_loss, &c, v, nk, dv, FD_H);
    printf("attention (GQA 3:1): rel err dq %.2e dk %.2e dv %.2e\n", eq, ek, ev);
    assert_true(eq < FD_TOL && ek < FD_TOL && ev < FD_TOL);
}

/* documents in a sequence: a query sees only keys of its own segment, across a
 * query tile boundary (64 rows) too, against the naive reference and finite
 * differences; and each document gives what it gives alone */
static void test_attention_segments(void **state) {
    (void)state;
    enum { B = 2, T = 70, NH = 2, NKV = 1, HD = 4 };
    /* sequence 0: documents [0, 1), [1, 40), [40, 66), [66, 70); sequence 1: one of 3 rows, then [3, 70) */
    int32_t seg[B * T];
    for (int t = 0; t < T; t++) {
        seg[t] = t < 1 ? 0 : t < 40 ? 1 : t < 66 ? 40 : 66;
        seg[T + t] = t < 3 ? 0 : 3;
    }
    size_t nq = B * T * NH * HD, nk = B * T * NKV * HD;
    static float q[B * T * NH * HD], k[B * T * NKV * HD], v[B * T * NKV * HD], out[B * T * NH * HD], w[B * T * NH * HD];
    static float dq[B * T * NH * HD], dk[B * T * NKV * HD], dv[B * T * NKV * HD], lse[B * NH * T];
    static double ref[B * T * NH * HD];
    att_ctx c = {B, T, NH, NKV, HD, q, k, v, out, lse, w, seg};
    fill_uniform(q, nq, 1.5f, 26);
    fill_uniform(k, nk, 1.5f, 27);
    fill_uniform(v, nk, 1, 28);
    fill_uniform(w, nq, 1, 29);
    att_loss(&c);
    attention_naive(ref, q, k, v, seg, B, T, NH, NKV, HD);
    double worst = 0;
    for (size_t i = 0; i < nq; i++) worst = fmax(worst, fabs(ref[i] - out[i]));
    printf("attention with documents: max |zen - naive| %.2e\n", worst);
    assert_true(worst < 1e-5);
    /* the document [40, 66) of sequence 0 alone (T = 26) gives the same rows */
    static float qa[26 * NH * HD], ka[26 * NKV * HD], va[26 * NKV * HD], oa[26 * NH * HD], la[NH * 26];
    memcpy(qa, q + 40 * NH * HD, sizeof qa);
    memcpy(ka, k + 40 * NKV * HD, sizeof ka);
    memcpy(va, v + 40 * NKV * HD, sizeof va);
    be->attention_fwd(be, oa, la, qa, ka, va, NULL, 1, 26, NH, NKV, HD);
    worst = 0;
    for (size_t i = 0; i < 26 * NH * HD; i++) worst = fmax(worst, fabs(oa[i] - out[40 * NH * HD + i]));
    printf("  a document alone: max |difference| %.2e\n", worst);
    assert_true(worst < 1e-6);
    be->attention_bwd(be, dq, dk, dv, w, out, lse, q, k, v, seg, B, T, NH, NKV, HD);
    double eq = fd_relative_error(att_loss, &c, q, nq, dq, FD_H);
    double ek = fd_relative_error(att_loss, &c, k, nk, dk, FD_H);
    double ev = fd_relative_error(att_loss, &c, v, nk, dv, FD_H);
    printf("  backward: rel err dq %.2e dk %.2e dv %.2e\n", eq, ek, ev);
    assert_true(eq < FD_TOL && ek < FD_TOL && ev < FD_TOL);
}

/* ---------- bf16 compute (oneDNN), where the CPU has native bf16 ---------- */

static zk_backend *open_bf16(const char *what) {
    zk_backend *b16 = zk_open("cpu", "bf16");
    if (!b16) printf("SKIP %s: %s\n", what, zen_last_error());
    return b16;
}

/* init + sum_i bf16(a[i*sa]) bf16(b[i*sb]) in double (a function of its own:
 * the loop written inline crashes aarch64-linux-gnu-gcc 12's vectoriser) */
static __attribute__((noinline)) double dot_bf16_rounded(const float *a, size_t sa, const float *b, size_t sb,
                                                         int n, double init) {
    double s = init;
    for (int i = 0; i < n; i++) s += (double)bf16_round(a[i * sa]) * bf16_round(b[i * sb]);
    return s;
}

/* y = x W^T and dx (+)= dy W, computed in double from the bf16-rounded inputs:
 * exactly the products oneDNN forms, so only fp32 accumulation differs; an f32
 * weight is rounded once when the backend takes it */
static void test_bf16_linear(void **state) {
    (void)state;
    zk_backend *b16 = open_bf16("bf16 linear");
    if (!b16) return;
    enum { N = 37, IN = 96, OUT = 70 }; /* odd sizes: no tile fits them exactly */
    static float x[N * IN], W[OUT * IN], y[N * OUT], dy[N * OUT], dx[N * IN];
    fill_uniform(x, N * IN, 1, 40);
    fill_uniform(W, OUT * IN, 0.5f, 41);
    fill_uniform(dy, N * OUT, 1, 42);
    zk_weight w;
    assert_int_equal(b16->weight_create(b16, &w, W, ZEN_F32, OUT * IN), 0);
    assert_int_equal(w.dtype, ZEN_BF16);
    assert_true(w.data != (const void *)W);
    b16->linear_fwd(b16, y, x, &w, N, IN, OUT);
    double worst = 0, scale = 0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            double s = dot_bf16_rounded(x + n * IN, 1, W + o * IN, 1, IN, 0.0);
            worst = fmax(worst, fabs(s - y[n * OUT + o]));
            scale = fmax(scale, fabs(s));
        }
    printf("bf16 linear forward: max |zen - rounded-input reference| %.2e (max %.2f)\n", worst, scale);
    assert_true(worst < 1e-5 * scale);
    for (int i = 0; i < N * IN; i++) dx[i] = 1.0f; /* accumulate onto ones */
    b16->linear_bwd(b16, dx, dy, &w, N, IN, OUT, 1);
    worst = scale = 0;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < IN; i++) {
            double s = dot_bf16_rounded(dy + n * OUT, 1, W + i, IN, OUT, 1.0);
            worst = fmax(worst, fabs(s - dx[n * IN + i]));
            scale = fmax(scale, fabs(s));
        }
    printf("bf16 linear backward (accumulating): max |zen - reference| %.2e\n", worst);
    assert_true(worst < 1e-5 * scale);
    b16->weight_destroy(b16, &w);
    zk_close(b16);
}

/* bf16 attention against the f32 one on documents across tile boundaries:
 * outputs and gradients agree to bf16 precision (and differ by more than f32
 * rounding: the products are bf16), and two runs are bit-identical */
static void test_bf16_attention(void **state) {
    (void)state;
    zk_backend *b16 = open_bf16("bf16 attention");
    if (!b16) return;
    enum { B = 2, T = 150, NH = 4, NKV = 2, HD = 32 };
    int32_t seg[B * T];
    for (int t = 0; t < T; t++) seg[t] = t < 50 ? 0 : t < 131 ? 50 : 131, seg[T + t] = 0;
    size_t nq = B * T * NH * HD, nk = B * T * NKV * HD;
    static float q[B * T * NH * HD], k[B * T * NKV * HD], v[B * T * NKV * HD], dout[B * T * NH * HD];
    static float o32[B * T * NH * HD], o16[B * T * NH * HD], o16b[B * T * NH * HD], l32[B * NH * T], l16[B * NH * T];
    static float dq32[B * T * NH * HD], dk32[B * T * NKV * HD], dv32[B * T * NKV * HD];
    static float dq16[B * T * NH * HD], dk16[B * T * NKV * HD], dv16[B * T * NKV * HD];
    fill_uniform(q, nq, 1.5f, 50);
    fill_uniform(k, nk, 1.5f, 51);
    fill_uniform(v, nk, 1, 52);
    fill_uniform(dout, nq, 1, 53);
    zk_reserve_plan plan = {.N = B * T, .B = B, .T = T, .heads = NH, .kv_heads = NKV, .head_dim = HD};
    assert_int_equal(b16->reserve(b16, &plan), 0);
    be->attention_fwd(be, o32, l32, q, k, v, seg, B, T, NH, NKV, HD);
    b16->attention_fwd(b16, o16, l16, q, k, v, seg, B, T, NH, NKV, HD);
    b16->attention_fwd(b16, o16b, l16, q, k, v, seg, B, T, NH, NKV, HD);
    assert_memory_equal(o16, o16b, sizeof o16);
    be->attention_bwd(be, dq32, dk32, dv32, dout, o32, l32, q, k, v, seg, B, T, NH, NKV, HD);
    b16->attention_bwd(b16, dq16, dk16, dv16, dout, o16, l16, q, k, v, seg, B, T, NH, NKV, HD);
    assert_int_equal(zk_status(b16), 0);
    const float *a[4] = {o32, dq32, dk32, dv32}, *b[4] = {o16, dq16, dk16, dv16};
    size_t n[4] = {nq, nq, nk, nk};
    const char *name[4] = {"out", "dq", "dk", "dv"};
    for (int t = 0; t < 4; t++) {
        double d = 0, ref = 0;
        for (size_t i = 0; i < n[t]; i++) d += (a[t][i] - b[t][i]) * (double)(a[t][i] - b[t][i]), ref += a[t][i] * (double)a[t][i];
        printf("bf16 attention %s: ||bf16 - f32|| / ||f32|| = %.2e\n", name[t], sqrt(d / ref));
        assert_true(sqrt(d / ref) < 2e-2);
        assert_true(sqrt(d / ref) > 1e-4); /* the products did round to bf16 */
    }
    zk_close(b16);
}

/* A batch laid end to end (B = 1, T = all its rows, each row's segment start
 * counted from the first row) is the same computation as the batch: outputs,
 * lse and gradients bit-identical, in f32 and in bf16 (the decoder runs a
 * batch's live rows this way, see train/evaluate.c). Segments of 1, 63, 64,
 * 65 and 150 rows, and a sequence of one segment. */
static void test_attention_end_to_end(void **state) {
    (void)state;
    enum { B = 3, T = 150, NH = 4, NKV = 2, HD = 32, N = B * T };
    static int32_t seg[N], flat[N];
    for (int t = 0; t < T; t++) {
        seg[t] = t < 1 ? 0 : t < 64 ? 1 : t < 129 ? 64 : 129;
        seg[T + t] = t < 63 ? 0 : 63;
        seg[2 * T + t] = 0;
    }
    for (int i = 0; i < N; i++) flat[i] = seg[i] + (i / T) * T;
    static float q[N * NH * HD], k[N * NKV * HD], v[N * NKV * HD], dout[N * NH * HD];
    static float o[2][N * NH * HD], l[2][NH * N], dq[2][N * NH * HD], dk[2][N * NKV * HD], dv[2][N * NKV * HD];
    fill_uniform(q, N * NH * HD, 1.5f, 60);
    fill_uniform(k, N * NKV * HD, 1.5f, 61);
    fill_uniform(v, N * NKV * HD, 1, 62);
    fill_uniform(dout, N * NH * HD, 1, 63);
    zk_backend *backends[2] = {be, open_bf16("bf16 attention end to end")};
    for (int x = 0; x < 2 && backends[x]; x++) {
        zk_backend *bk = backends[x];
        bk->attention_fwd(bk, o[0], l[0], q, k, v, seg, B, T, NH, NKV, HD);
        bk->attention_bwd(bk, dq[0], dk[0], dv[0], dout, o[0], l[0], q, k, v, seg, B, T, NH, NKV, HD);
        bk->attention_fwd(bk, o[1], l[1], q, k, v, flat, 1, N, NH, NKV, HD);
        bk->attention_bwd(bk, dq[1], dk[1], dv[1], dout, o[1], l[1], q, k, v, flat, 1, N, NH, NKV, HD);
        assert_int_equal(zk_status(bk), 0);
        assert_memory_equal(o[0], o[1], sizeof o[0]);
        assert_memory_equal(dq[0], dq[1], sizeof dq[0]);
        assert_memory_equal(dk[0], dk[1], sizeof dk[0]);
        assert_memory_equal(dv[0], dv[1], sizeof dv[0]);
        for (size_t b = 0; b < B; b++) /* lse [B, nh, T] against [1, nh, B*T] */
            for (size_t h = 0; h < NH; h++)
                assert_memory_equal(l[0] + (b * NH + h) * T, l[1] + h * N + b * T, T * sizeof(float));
        printf("attention %s: a batch of %d x %d end to end is bit-identical\n", x ? "bf16" : "f32", B, T);
    }
    if (backends[1]) zk_close(backends[1]);
}

/* ---------- generation's attention over a KV cache ---------- */

/* out[i, h] for query row i of a cache of `keys` rows, in double from the
 * inputs rounded where the backend rounds them (bf16: q, k, v and the
 * probabilities; f32: none) */
static void cached_reference(double *o, const float *q, const float *k, const float *v, size_t i, size_t h, size_t nh,
                             size_t nkv, size_t hd, int bf16) {
    size_t kh = h / (nh / nkv), keys = i + 1;
    double p[64], m = -INFINITY, sum = 0;
#define R(x) (bf16 ? (double)bf16_round(x) : (double)(x))
    for (size_t j = 0; j < keys; j++) {
        double s = 0;
        for (size_t d = 0; d < hd; d++) s += R(q[(i * nh + h) * hd + d]) * R(k[(j * nkv + kh) * hd + d]);
        p[j] = s / sqrt((double)hd);
        m = fmax(m, p[j]);
    }
    for (size_t j = 0; j < keys; j++) sum += (p[j] = exp(p[j] - m));
    for (size_t d = 0; d < hd; d++) o[d] = 0;
    for (size_t j = 0; j < keys; j++) {
        double w = R((float)(p[j] / sum));
        for (size_t d = 0; d < hd; d++) o[d] += w * R(v[(j * nkv + kh) * hd + d]);
    }
#undef R
}

/* Paged caches, pages of 4 positions out of order. Sequence A: a prompt of
 * 9 rows in one call (page table 5, 2, 7), later 3 decode rows. Sequence B
 * shares A's first two pages (positions 0-7) and has its own page 9: its
 * position 8 in a call of its own, then position 9 in one call beside A's
 * position 9 (two sequences in one batch), then A alone at 10 and 11. On
 * f32 and (where the CPU has it) bf16: each output against the double
 * reference of its sequence's keys; the f32 prompt also against
 * attention_fwd (one causal segment). */
static void test_paged_attention(void **state) {
    (void)state;
    enum { T = 12, PROMPT = 9, NH = 4, NKV = 2, HD = 16, KVD = NKV * HD, ROWS = 4, PAGES = 10 };
    static float qa[T * NH * HD], ka[T * KVD], va[T * KVD], qb[T * NH * HD], kb[T * KVD], vb[T * KVD];
    static float outa[T * NH * HD], outb[T * NH * HD], full[T * NH * HD], lse[NH * T];
    fill_uniform(qa, T * NH * HD, 2, 60);
    fill_uniform(ka, T * KVD, 1, 61);
    fill_uniform(va, T * KVD, 1, 62);
    fill_uniform(qb, T * NH * HD, 2, 63);
    memcpy(kb, ka, 8 * KVD * sizeof(float)); /* B reads A's positions 0-7 */
    memcpy(vb, va, 8 * KVD * sizeof(float));
    fill_uniform(kb + 8 * KVD, 4 * KVD, 1, 64);
    fill_uniform(vb + 8 * KVD, 4 * KVD, 1, 65);
    const int32_t tables[6] = {5, 2, 7, 5, 2, 9}; /* A at 0, B at 3 */
    zk_backend *backends[2] = {be, open_bf16("bf16 paged attention")};
    for (int b = 0; b < 2 && backends[b]; b++) {
        zk_backend *x = backends[b];
        int bf16 = b == 1;
        size_t bytes = PAGES * ROWS * KVD * zk_cache_bytes(x);
        void *kc = malloc(bytes), *vc = malloc(bytes);
        assert_int_equal(zk_cache_bytes(x), bf16 ? 2 : 4);
        int32_t pos[PROMPT], tab[PROMPT];
        for (int i = 0; i < PROMPT; i++) pos[i] = i, tab[i] = 0;
        x->attention_paged_fwd(x, outa, qa, ka, va, kc, vc, pos, tab, tables, PROMPT, PROMPT, ROWS, NH, NKV, HD);
        int32_t p8 = 8, t3 = 3;
        x->attention_paged_fwd(x, outb + 8 * NH * HD, qb + 8 * NH * HD, kb + 8 * KVD, vb + 8 * KVD, kc, vc, &p8, &t3,
                               tables, 1, 9, ROWS, NH, NKV, HD);
        /* A and B at position 9 in one call: rows [A, B] */
        static float q2[2 * NH * HD], k2[2 * KVD], v2[2 * KVD], o2[2 * NH * HD];
        memcpy(q2, qa + 9 * NH * HD, NH * HD * sizeof(float)), memcpy(q2 + NH * HD, qb + 9 * NH * HD, NH * HD * 4);
        memcpy(k2, ka + 9 * KVD, KVD * sizeof(float)), memcpy(k2 + KVD, kb + 9 * KVD, KVD * sizeof(float));
        memcpy(v2, va + 9 * KVD, KVD * sizeof(float)), memcpy(v2 + KVD, vb + 9 * KVD, KVD * sizeof(float));
        int32_t pos2[2] = {9, 9}, tab2[2] = {0, 3};
        x->attention_paged_fwd(x, o2, q2, k2, v2, kc, vc, pos2, tab2, tables, 2, 10, ROWS, NH, NKV, HD);
        memcpy(outa + 9 * NH * HD, o2, NH * HD * sizeof(float)), memcpy(outb + 9 * NH * HD, o2 + NH * HD, NH * HD * 4);
        for (int32_t t = 10; t < T; t++) {
            int32_t zero = 0;
            x->attention_paged_fwd(x, outa + t * NH * HD, qa + t * NH * HD, ka + t * KVD, va + t * KVD, kc, vc, &t,
                                   &zero, tables, 1, (size_t)t + 1, ROWS, NH, NKV, HD);
        }
        assert_int_equal(zk_status(x), 0);
        double worst = 0, ref[HD];
        for (size_t t = 0; t < T; t++)
            for (size_t h = 0; h < NH; h++) {
                cached_reference(ref, qa, ka, va, t, h, NH, NKV, HD, bf16);
                for (size_t d = 0; d < HD; d++) worst = fmax(worst, fabs(ref[d] - outa[(t * NH + h) * HD + d]));
                if (t < 8 || t > 9) continue;
                cached_reference(ref, qb, kb, vb, t, h, NH, NKV, HD, bf16);
                for (size_t d = 0; d < HD; d++) worst = fmax(worst, fabs(ref[d] - outb[(t * NH + h) * HD + d]));
            }
        printf("paged attention %s: max |zen - reference| %.2e over a prompt, a shared prefix, two sequences in "
               "one call and decode steps\n", bf16 ? "bf16" : "f32", worst);
        assert_true(worst < 2e-6);
        if (!bf16) { /* the same as the training forward over the whole sequence */
            be->attention_fwd(be, full, lse, qa, ka, va, NULL, 1, T, NH, NKV, HD);
            for (size_t i = 0; i < T * NH * HD; i++) assert_true(fabsf(full[i] - outa[i]) < 1e-5f);
        }
        free(kc), free(vc);
    }
    if (backends[1]) zk_close(backends[1]);
}

/* ---------- SwiGLU ---------- */

typedef struct {
    float *g, *u, *h, *w;
    size_t n;
} swi_ctx;

static double swi_loss(void *p) {
    swi_ctx *c = p;
    be->swiglu_fwd(be, c->h, c->g, c->u, c->n);
    return dot_weights(c->h, c->w, c->n);
}

static void test_swiglu(void **state) {
    (void)state;
    float g[50], u[50], h[50], w[50], dg[50], du[50];
    swi_ctx c = {g, u, h, w, 50};
    fill_uniform(g, 50, 4, 20);
    fill_uniform(u, 50, 2, 21);
    fill_uniform(w, 50, 1, 22);
    swi_loss(&c);
    assert_true(fabs(h[0] - g[0] / (1 + exp(-g[0])) * u[0]) < 1e-6);
    be->swiglu_bwd(be, dg, du, w, g, u, 50);
    double eg = fd_relative_error(swi_loss, &c, g, 50, dg, FD_H);
    double eu = fd_relative_error(swi_loss, &c, u, 50, du, FD_H);
    printf("swiglu: rel err dg %.2e du %.2e\n", eg, eu);
    assert_true(eg < FD_TOL && eu < FD_TOL);
}

/* ---------- embedding ---------- */

typedef struct {
    float *W, *out, *w;
    int32_t *tok;
} emb_ctx;

static double emb_loss(void *p) {
    emb_ctx *c = p;
    zk_weight W = {c->W, ZEN_F32};
    be->embedding_fwd(be, c->out, c->tok, &W, 4, 3);
    return dot_weights(c->out, c->w, 12);
}

static void test_embedding(void **state) {
    (void)state;
    float W[15], out[12], w[12], dW[15] = {0};
    int32_t tok[4] = {2, 0, 2, 4}; /* token 2 twice: its gradient sums */
    emb_ctx c = {W, out, w, tok};
    fill_uniform(W, 15, 1, 23);
    fill_uniform(w, 12, 1, 24);
    emb_loss(&c);
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 3; j++) assert_true(out[n * 3 + j] == W[tok[n] * 3 + j]);
    uint16_t Wb[15];
    zen_narrow(Wb, W, ZEN_BF16, 15);
    zk_weight wb = {Wb, ZEN_BF16};
    be->embedding_fwd(be, out, tok, &wb, 4, 3);
    assert_true(out[0] == zen_bf16_to_f32(Wb[6]));
    be->embedding_bwd(be, dW, w, tok, 4, 3);
    double e = fd_relative_error(emb_loss, &c, W, 15, dW, FD_H);
    assert_true(e < FD_TOL);
}

/* ---------- softmax + cross-entropy ---------- */

typedef struct {
    float *z, *work, *losses, *weights, scale;
    int32_t *targets;
    size_t rows, V;
    float t; /* temperature */
} xent_ctx;

static double xent_loss(void *p) {
    xent_ctx *c = p;
    memcpy(c->work, c->z, c->rows * c->V * sizeof(float));
    be->xent(be, c->work, c->losses, NULL, c->targets, c->weights, c->rows, c->V, c->t, 0.0f);
    double s = 0;
    for (size_t r = 0; r < c->rows; r++) s += (double)c->losses[r] * c->weights[r] * c->scale;
    return s;
}

static void test_xent(void **state) {
    (void)state;
    float z[2] = {0, 0}, loss;
    int32_t t0 = 0;
    float one = 1;
    be->xent(be, z, &loss, NULL, &t0, &one, 1, 2, 1.0f, 0.0f);
    assert_true(fabs(loss - log(2.0)) < 1e-7);
    be->xent(be, z, &loss, NULL, &t0, &one, 1, 2, 1.0f, 1.0f); /* gradient: (0.5 - 1, 0.5) */
    assert_true(fabs(z[0] + 0.5) < 1e-7 && fabs(z[1] - 0.5) < 1e-7);

    size_t rows = 4, V = 11;
    float zz[44], work[44], grad[44], losses[4], weights[4] = {1, 0, 1, 1};
    int32_t targets[4] = {3, 0, 10, 7};
    xent_ctx c = {zz, work, losses, weights, 0.25f, targets, rows, V, 1.0f};
    fill_uniform(zz, 44, 3, 25);
    memcpy(grad, zz, sizeof grad);
    be->xent(be, grad, losses, NULL, targets, weights, rows, V, 1.0f, c.scale);
    for (size_t j = 0; j < V; j++) assert_true(grad[V + j] == 0.0f); /* masked-out row */
    double e = fd_relative_error(xent_loss, &c, zz, 44, grad, FD_H);
    printf("xent: rel err %.2e\n", e);
    assert_true(e < FD_TOL);
    /* divided by a temperature (GRPO's log-probabilities), with the entropy: the loss and entropy against
     * double, the gradient against finite differences */
    for (int k = 0; k < 2; k++) {
        c.t = k ? 0.7f : 1.0f;
        float ent[4];
        memcpy(grad, zz, sizeof grad);
        be->xent(be, grad, losses, ent, targets, weights, rows, V, c.t, c.scale);
        double worst = 0;
        for (size_t r = 0; r < rows; r++) {
            double m = -INFINITY, sum = 0, h = 0;
            for (size_t j = 0; j < V; j++) m = fmax(m, zz[r * V + j] / c.t);
            for (size_t j = 0; j < V; j++) sum += exp(zz[r * V + j] / c.t - m);
            for (size_t j = 0; j < V; j++) {
                double p = exp(zz[r * V + j] / c.t - m) / sum;
                h -= p * log(p);
            }
            double loss = m + log(sum) - zz[r * V + (size_t)targets[r]] / c.t;
            worst = fmax(worst, fmax(fabs(loss - losses[r]), fabs(h - ent[r])));
        }
        e = fd_relative_error(xent_loss, &c, zz, 44, grad, FD_H);
        printf("xent at temperature %.1f with the entropy: loss and entropy %.2e from double, gradient rel err "
               "%.2e\n", c.t, worst, e);
        assert_true(worst < 1e-5 && e < FD_TOL);
    }
}

static void test_dtype_roundtrip(void **state) {
    (void)state;
    float vals[] = {0.0f, 1.0f, -2.5f, 3.14159f, 1e-6f, 65504.0f, 1e-8f};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        float b = zen_bf16_to_f32(zen_f32_to_bf16(vals[i]));
        float h = zen_f16_to_f32(zen_f32_to_f16(vals[i]));
        assert_true(fabsf(b - vals[i]) <= fabsf(vals[i]) * (1.0f / 256));
        assert_true(fabsf(h - vals[i]) <= fabsf(vals[i]) * (1.0f / 2048) + 6e-8f);
    }
    assert_int_equal(zen_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(zen_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(zen_f32_to_f16(-2.0f), 0xc000);
    assert_true(zen_f16_to_f32(0x0001) == 5.9604644775390625e-08f); /* smallest subnormal */
    assert_true(isinf(zen_f16_to_f32(zen_f32_to_f16(70000.0f))));
}

/* the vectorised exp against libm in double, over the range softmax uses */
static void test_fast_exp(void **state) {
    (void)state;
    double worst = 0;
    for (float x = -87.0f; x <= 88.0f; x += 0.00731f) {
        double ref = exp((double)x), err = fabs((double)zk_expf(x) - ref) / ref;
        if (err > worst) worst = err;
    }
    printf("zk_expf: max relative error %.2e over [-87, 88]\n", worst);
    assert_true(worst < 3e-7);
    assert_true(zk_expf(-1000.0f) < 1e-37f && zk_expf(-1000.0f) >= 0.0f);
    assert_true(isnan(zk_expf(NAN)));
    float x[1000];
    fill_uniform(x, 1000, 3, 40);
    double s = 0;
    for (int i = 0; i < 1000; i++) s += exp((double)x[i] - 1.0);
    assert_true(fabs(zk_sum_exp(x, 1000, 1.0f) - s) < 1e-6 * s);
}

static int setup(void **state) {
    (void)state;
    be = zk_open("cpu", "f32");
    return be ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    zk_close(be);
    return 0;
}

/* the one table of type traits: each zen_dtype is its own row, by name and
 * by ggml id, with ggml's block sizes (ggml.c's type_traits) */
static void test_type_traits(void **state) {
    (void)state;
    static const struct { zen_dtype t; const char *name; int ggml; uint32_t block, bytes; } want[] = {
        {ZEN_F32, "F32", 0, 1, 4},       {ZEN_F16, "F16", 1, 1, 2},      {ZEN_BF16, "BF16", 30, 1, 2},
        {ZEN_Q8_0, "Q8_0", 8, 32, 34},   {ZEN_Q4_0, "Q4_0", 2, 32, 18},  {ZEN_Q5_0, "Q5_0", 6, 32, 22},
        {ZEN_Q5_1, "Q5_1", 7, 32, 24},   {ZEN_Q4_K, "Q4_K", 12, 256, 144}, {ZEN_Q5_K, "Q5_K", 13, 256, 176},
        {ZEN_Q6_K, "Q6_K", 14, 256, 210}, {ZEN_NF4, "NF4", -1, 64, 36}};
    assert_int_equal(sizeof want / sizeof want[0], ZEN_NUM_DTYPES);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const zen_type_traits *tr = zen_dtype_traits(want[i].t);
        assert_int_equal(tr->dtype, want[i].t);
        assert_string_equal(tr->name, want[i].name);
        assert_int_equal(tr->ggml, want[i].ggml);
        assert_int_equal(tr->block, want[i].block);
        assert_int_equal(tr->block_bytes, want[i].bytes);
        assert_non_null(tr->to_f32);
        zen_dtype back;
        assert_int_equal(zen_dtype_parse(want[i].name, &back), 0);
        assert_int_equal(back, want[i].t);
        if (want[i].ggml >= 0) assert_ptr_equal(zen_type_by_ggml((uint32_t)want[i].ggml), tr);
        assert_int_equal(zen_dtype_bytes(want[i].t, 2 * want[i].block), 2 * want[i].bytes);
    }
    assert_int_equal(zen_dtype_parse_float("q4_0", &(zen_dtype){0}), -1); /* not a float type */
    assert_null(zen_type_by_ggml(4)); /* a retired ggml layout */
    assert_int_equal(zen_type_by_ggml(10)->block_bytes, 84); /* Q2_K: sized, not computed */
    assert_null(zen_type_by_ggml(10)->to_f32);
    assert_int_equal(zen_type_by_safetensors("I64")->block_bytes, 8);
    assert_null(zen_type_by_safetensors("Q4_0")); /* not a SafeTensors dtype */
}

/* NF4 blocks by hand: 3 x each level gives absmax 3 and every level back
 * exactly; element 2j sits in the high nibble; a value on a midpoint takes
 * the lower level, just above it the upper one; an all-zero block is zeros */
static void test_nf4_blocks(void **state) {
    (void)state;
    float x[128], y[128];
    for (int j = 0; j < 64; j++) x[j] = 3.0f * zk_nf4_levels[(j * 7) % 16];
    for (int j = 64; j < 128; j++) x[j] = 0.0f;
    x[64] = 0.5f * (zk_nf4_levels[8] + zk_nf4_levels[9]); /* a midpoint */
    x[65] = nextafterf(x[64], 1.0f);
    x[66] = 1.0f;                                          /* absmax of the second block */
    uint8_t blk[72];
    zk_quantize_nf4(blk, x, 128);
    float amax;
    memcpy(&amax, blk, 4);
    assert_true(amax == 3.0f);
    assert_int_equal(blk[4], (0 << 4) | 7);  /* levels 0 and 7 */
    assert_int_equal(blk[5], (14 << 4) | 5); /* levels 14 and 21 % 16 = 5 */
    zk_dequantize_nf4(y, blk, 128);
    for (int j = 0; j < 64; j++) assert_true(y[j] == x[j]);
    assert_true(y[64] == zk_nf4_levels[8]);
    assert_true(y[65] == zk_nf4_levels[9]);
    assert_true(y[66] == 1.0f && y[67] == 0.0f);
    memset(x, 0, sizeof x);
    zk_quantize_nf4(blk, x, 64);
    zk_dequantize_nf4(y, blk, 64);
    for (int j = 0; j < 64; j++) assert_true(y[j] == 0.0f);
}

int main(int argc, char **argv) {
    (void)argc;
    if (test_cpu_isa_setup(argv)) return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_roundtrip),
        cmocka_unit_test(test_fast_exp),
        cmocka_unit_test(test_linear_forward_naive),
        cmocka_unit_test(test_linear_lora_backward),
        cmocka_unit_test(test_lora_dropout),
        cmocka_unit_test(test_lora_branch_reference),
        cmocka_unit_test(test_variants_agree),
        cmocka_unit_test(test_linear_half_weights_chunked),
        cmocka_unit_test(test_linear_decode_rows),
        cmocka_unit_test(test_rmsnorm_hand),
        cmocka_unit_test(test_rmsnorm_backward),
        cmocka_unit_test(test_rope_hand),
        cmocka_unit_test(test_rope_backward),
        cmocka_unit_test(test_attention_hand),
        cmocka_unit_test(test_attention_gqa),
        cmocka_unit_test(test_attention_segments),
        cmocka_unit_test(test_bf16_linear),
        cmocka_unit_test(test_bf16_attention),
        cmocka_unit_test(test_attention_end_to_end),
        cmocka_unit_test(test_paged_attention),
        cmocka_unit_test(test_lora_decode_rows),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_xent),
        cmocka_unit_test(test_type_traits),
        cmocka_unit_test(test_nf4_blocks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
