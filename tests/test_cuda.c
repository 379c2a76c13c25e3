/* tests/test_cuda.c: the CUDA backend against the CPU backend, op by op on the
 * same inputs, and the whole decoder (loss and LoRA gradients) on a zen-init
 * tiny model. Exits 77 (reported by ctest as skipped, not passed) when the build
 * has no CUDA backend or the machine has no GPU.
 * - f32 compute: results agree to float rounding (sums in different orders),
 *   checked as max |cuda - cpu| <= 1e-4 * (1 + max |cpu|).
 * - bf16 compute (tensor-core matmuls, flash attention): inputs rounded to
 *   bf16 (relative step 2^-8), so each op is checked as
 *   ||cuda - cpu|| / ||cpu|| <= 1e-2 against the CPU's fp32, the decoder's
 *   loss within 1e-2 relative and its LoRA gradients at cosine >= 0.999;
 *   flash attention's backward is checked to be bit-deterministic.
 * - Every reduction is deterministic (resume is bit-exact on CUDA too): exact
 *   attention's backward, sum_squares and the embedding backward give the
 *   same bits twice; under the emulator the second run has every block's
 *   threads in the opposite order, which changes any atomic sum. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "model/model_load.h"
#include "model/decoder.h"
#include "model/model_init.h"
#include "formats/quant.h"
#include "test_util.h"
#include "packing_property.h"
#include "util/error.h"
#include "util/file.h"

static zk_backend *cpu, *gpu, *gpu16; /* gpu: f32 compute; gpu16: bf16 compute */
static int failures;

/* a device copy of host data (usable by both GPU backends: same device) */
static float *dev(const float *h, size_t n) {
    float *d = gpu->alloc(gpu, n * sizeof(float));
    gpu->upload(gpu, d, h, n * sizeof(float));
    return d;
}

/* bf16-compute check: ||gpu - cpu|| / ||cpu|| <= tol, cosine printed */
static void compare_rel(const char *what, const float *cpu_out, const float *gpu_dev, size_t n, double tol) {
    float *g = malloc(n * sizeof(float));
    gpu->download(gpu, g, gpu_dev, n * sizeof(float));
    double dd = 0, cc = 0, gg = 0, cg = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)g[i] - cpu_out[i];
        dd += d * d, cc += (double)cpu_out[i] * cpu_out[i], gg += (double)g[i] * g[i], cg += (double)cpu_out[i] * g[i];
    }
    if (cc == 0) { /* an exactly zero reference (dq, dk of a single token): bf16-level noise allowed */
        double rms = sqrt(dd / (double)n);
        int ok = rms <= 1e-2;
        printf("%s %-34s reference is 0; rms %.2e (tol 1e-02)\n", ok ? "ok  " : "FAIL", what, rms);
        failures += !ok;
        free(g);
        return;
    }
    double rel = sqrt(dd / cc), cosine = cg / sqrt(cc * gg + 1e-300);
    int ok = rel <= tol && isfinite(rel);
    printf("%s %-34s rel err %.2e (tol %.0e), cosine %.6f\n", ok ? "ok  " : "FAIL", what, rel, tol, cosine);
    failures += !ok;
    free(g);
}

static void compare(const char *what, const float *cpu_out, const float *gpu_dev, size_t n) {
    float *g = malloc(n * sizeof(float));
    gpu->download(gpu, g, gpu_dev, n * sizeof(float));
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < n; i++) {
        max_ref = fmax(max_ref, fabs(cpu_out[i]));
        max_err = fmax(max_err, fabs(cpu_out[i] - g[i]));
    }
    int ok = max_err <= 1e-4 * (1 + max_ref);
    printf("%s %-28s max abs diff %.2e (max |cpu| %.2e)\n", ok ? "ok  " : "FAIL", what, max_err, max_ref);
    failures += !ok;
    free(g);
}

/* an int32 device copy */
static int32_t *devi(const int32_t *h, size_t n) {
    int32_t *d = gpu->alloc(gpu, n * sizeof(int32_t));
    gpu->upload(gpu, d, h, n * sizeof(int32_t));
    return d;
}

/* documents in B sequences of T: boundaries at T/3, 2T/3 + 1 and a
 * one-token document at T - 2 of the last sequence; pos = t - seg */
static void make_segments(int32_t *seg, int32_t *pos, size_t B, size_t T) {
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++) {
            size_t s = t < T / 3 ? 0 : t < 2 * T / 3 + 1 ? T / 3 : 2 * T / 3 + 1;
            if (b == B - 1 && T > 4 && t >= T - 2) s = t == T - 2 ? T - 2 : T - 1;
            if (s > t) s = t;
            seg[b * T + t] = (int32_t)s;
            pos[b * T + t] = (int32_t)(t - s);
        }
}

static float *rnd(size_t n, float bound, uint64_t seed) {
    float *x = malloc(n * sizeof(float));
    fill_uniform(x, n, bound, seed);
    return x;
}

static void test_ops(void) {
    size_t N = 24, in = 40, out = 36, r = 4, B = 2, T = 12, nh = 6, nkv = 2, hd = 8;
    /* linear + LoRA with dropout */
    float *x = rnd(N * in, 1, 1), *W = rnd(out * in, 0.5f, 2), *A = rnd(r * in, 0.5f, 3), *Bm = rnd(out * r, 0.5f, 4);
    /* y and gy also hold the [N, in] outputs of RMSNorm and SwiGLU below */
    size_t ycap = N * (in > out ? in : out);
    float *y = calloc(ycap, 4), *u = calloc(N * r, 4), *dy = rnd(ycap, 1, 5);
    float *dx = calloc(N * in, 4), *dA = calloc(r * in, 4), *dB = calloc(out * r, 4), *du = calloc(N * r, 4);
    zk_weight wc = {W, ZEN_F32}, wg;
    gpu->weight_create(gpu, &wg, W, ZEN_F32, out * in);
    float *gx = dev(x, N * in), *gA = dev(A, r * in), *gB = dev(Bm, out * r), *gdy = dev(dy, ycap);
    float *gy = dev(y, ycap), *gu = dev(u, N * r), *gdx = dev(dx, N * in), *gdA = dev(dA, r * in), *gdB = dev(dB, out * r);
    float *gdu = dev(du, N * r);
    zk_dropout drop = {0.2f, 77};
    cpu->linear_fwd(cpu, y, x, &wc, N, in, out);
    gpu->linear_fwd(gpu, gy, gx, &wg, N, in, out);
    cpu->lora_fwd(cpu, y, u, x, A, Bm, N, in, out, r, 2.0f, &drop);
    gpu->lora_fwd(gpu, gy, gu, gx, gA, gB, N, in, out, r, 2.0f, &drop);
    compare("linear + LoRA forward", y, gy, N * out);
    cpu->linear_bwd(cpu, dx, dy, &wc, N, in, out, 0);
    gpu->linear_bwd(gpu, gdx, gdy, &wg, N, in, out, 0);
    cpu->lora_bwd(cpu, dx, dA, dB, du, dy, x, u, A, Bm, N, in, out, r, 2.0f, &drop);
    gpu->lora_bwd(gpu, gdx, gdA, gdB, gdu, gdy, gx, gu, gA, gB, N, in, out, r, 2.0f, &drop);
    compare("linear + LoRA dx", dx, gdx, N * in);
    compare("LoRA dA", dA, gdA, r * in);
    compare("LoRA dB", dB, gdB, out * r);
    /* RMSNorm */
    float *w = rnd(in, 1, 6), *rs = calloc(N, 4), *gw = dev(w, in), *grs = dev(rs, N);
    cpu->rmsnorm_fwd(cpu, y, rs, x, w, N, in, 1e-6f);
    gpu->rmsnorm_fwd(gpu, gy, grs, gx, gw, N, in, 1e-6f);
    compare("rmsnorm forward", y, gy, N * in);
    cpu->rmsnorm_bwd(cpu, dx, NULL, dy, x, rs, w, N, in, 1);
    gpu->rmsnorm_bwd(gpu, gdx, NULL, gdy, gx, grs, gw, N, in, 1);
    compare("rmsnorm backward", dx, gdx, N * in);
    /* RoPE, at positions that restart with each document */
    size_t nq = B * T * nh * hd, nk = B * T * nkv * hd;
    int32_t seg[2 * 12], pos[2 * 12];
    make_segments(seg, pos, B, T);
    int32_t *gseg = devi(seg, B * T), *gpos = devi(pos, B * T);
    float *q = rnd(nq, 1, 7), *gq = dev(q, nq);
    cpu->rope_fwd(cpu, q, pos, B * T, T, nh, hd, 1e6);
    gpu->rope_fwd(gpu, gq, gpos, B * T, T, nh, hd, 1e6);
    compare("rope forward (documents)", q, gq, nq);
    cpu->rope_bwd(cpu, q, pos, B * T, T, nh, hd, 1e6);
    gpu->rope_bwd(gpu, gq, gpos, B * T, T, nh, hd, 1e6);
    compare("rope backward", q, gq, nq);
    /* attention (GQA 3:1) */
    float *k = rnd(nk, 1, 8), *v = rnd(nk, 1, 9), *o = calloc(nq, 4), *lse = calloc(B * nh * T, 4), *dout = rnd(nq, 1, 10);
    float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4);
    float *gk = dev(k, nk), *gv = dev(v, nk), *go = dev(o, nq), *glse = dev(lse, B * nh * T), *gdout = dev(dout, nq);
    float *gdq = dev(dq, nq), *gdk = dev(dk, nk), *gdv = dev(dv, nk);
    for (int docs = 0; docs < 2; docs++) {
        const int32_t *cs = docs ? seg : NULL, *gs = docs ? gseg : NULL;
        cpu->attention_fwd(cpu, o, lse, q, k, v, cs, B, T, nh, nkv, hd);
        gpu->attention_fwd(gpu, go, glse, gq, gk, gv, gs, B, T, nh, nkv, hd);
        compare(docs ? "attention forward (documents)" : "attention forward", o, go, nq);
        compare("attention lse", lse, glse, B * nh * T);
        cpu->attention_bwd(cpu, dq, dk, dv, dout, o, lse, q, k, v, cs, B, T, nh, nkv, hd);
        gpu->attention_bwd(gpu, gdq, gdk, gdv, gdout, go, glse, gq, gk, gv, gs, B, T, nh, nkv, hd);
        compare("attention dq", dq, gdq, nq);
        compare("attention dk", dk, gdk, nk);
        compare("attention dv", dv, gdv, nk);
    }
    gpu->free(gpu, gseg);
    gpu->free(gpu, gpos);
    /* SwiGLU, softmax + cross-entropy */
    float *g2 = rnd(N * in, 3, 11), *gg2 = dev(g2, N * in);
    cpu->swiglu_fwd(cpu, y, g2, x, N * in);
    gpu->swiglu_fwd(gpu, gy, gg2, gx, N * in);
    compare("swiglu forward", y, gy, N * in);
    cpu->swiglu_bwd(cpu, dx, y, dy, g2, x, N * in);
    gpu->swiglu_bwd(gpu, gdx, gy, gdy, gg2, gx, N * in);
    compare("swiglu dg", dx, gdx, N * in);
    int32_t tg[24];
    float wt[24];
    for (int i = 0; i < 24; i++) tg[i] = (i * 7) % (int)in, wt[i] = (float)(i % 3 != 0);
    int32_t *gtg = gpu->alloc(gpu, sizeof tg);
    gpu->upload(gpu, gtg, tg, sizeof tg);
    float *gwt = dev(wt, 24), *loss = calloc(N, 4), *gloss = dev(loss, N), *z = rnd(N * in, 4, 12), *gz = dev(z, N * in);
    cpu->xent(cpu, z, loss, NULL, tg, wt, N, in, 1.0f, 0.1f);
    gpu->xent(gpu, gz, gloss, NULL, gtg, gwt, N, in, 1.0f, 0.1f);
    compare("softmax+CE losses", loss, gloss, N);
    compare("softmax+CE gradient", z, gz, N * in);
    /* at a temperature, with the entropy (GRPO) */
    float *z2 = rnd(N * in, 4, 13), *gz2 = dev(z2, N * in), *ent = calloc(N, 4), *gent = dev(ent, N);
    cpu->xent(cpu, z2, loss, ent, tg, wt, N, in, 0.7f, 0.1f);
    gpu->xent(gpu, gz2, gloss, gent, gtg, gwt, N, in, 0.7f, 0.1f);
    compare("softmax+CE at t=0.7: losses", loss, gloss, N);
    compare("softmax+CE at t=0.7: entropy", ent, gent, N);
    compare("softmax+CE at t=0.7: gradient", z2, gz2, N * in);
    gpu->free(gpu, gz2), gpu->free(gpu, gent);
    free(z2), free(ent);
    /* rows gathered (every third one, backwards) and scattered back over other values */
    int32_t rows[8];
    for (int i = 0; i < 8; i++) rows[i] = 21 - 3 * i;
    int32_t *grows = devi(rows, 8);
    cpu->gather_rows(cpu, y, x, rows, 8, in);
    gpu->gather_rows(gpu, gy, gx, grows, 8, in);
    compare("gather rows", y, gy, 8 * in);
    cpu->scatter_rows(cpu, z, y, rows, 8, in);
    gpu->scatter_rows(gpu, gz, gy, grows, 8, in);
    compare("scatter rows", z, gz, N * in);
    gpu->free(gpu, grows);
    /* AdamW and the gradient norm */
    double ss_c = cpu->sum_squares(cpu, x, N * in), ss_g = gpu->sum_squares(gpu, gx, N * in);
    int ok = fabs(ss_c - ss_g) <= 1e-9 * ss_c;
    printf("%s %-28s %.9g vs %.9g\n", ok ? "ok  " : "FAIL", "sum of squares", ss_c, ss_g);
    failures += !ok;
    float *m = calloc(r * in, 4), *vv = calloc(r * in, 4), *gm = dev(m, r * in), *gvv = dev(vv, r * in);
    for (long step = 1; step <= 3; step++) {
        cpu->adamw(cpu, A, dA, m, vv, r * in, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.5f, step);
        gpu->adamw(gpu, gA, gdA, gm, gvv, r * in, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.5f, step);
    }
    compare("AdamW, 3 steps", A, gA, r * in);
}

/* the LoRA branch at rank r, with or without dropout: ranks up to
 * ZK_CUDA_LORA_MAX_R (32) take the fused kernels, larger ones cuBLAS */
static void test_lora_rank(size_t r, float p) {
    size_t N = 70, in = 300, out = 52; /* not multiples of any tile */
    float *x = rnd(N * in, 1, 41), *A = rnd(r * in, 0.3f, 42), *Bm = rnd(out * r, 0.3f, 43), *dy = rnd(N * out, 1, 44);
    float *y = rnd(N * out, 1, 45), *u = calloc(N * r, 4), *dx = rnd(N * in, 1, 46), *dA = rnd(r * in, 1, 47);
    float *dB = rnd(out * r, 1, 48), *du = calloc(N * r, 4);
    float *gx = dev(x, N * in), *gA = dev(A, r * in), *gB = dev(Bm, out * r), *gdy = dev(dy, N * out), *gy = dev(y, N * out);
    float *gu = dev(u, N * r), *gdx = dev(dx, N * in), *gdA = dev(dA, r * in), *gdB = dev(dB, out * r), *gdu = dev(du, N * r);
    zk_dropout drop = {p, 1234};
    cpu->lora_fwd(cpu, y, u, x, A, Bm, N, in, out, r, 0.5f, &drop);
    gpu->lora_fwd(gpu, gy, gu, gx, gA, gB, N, in, out, r, 0.5f, &drop);
    cpu->lora_bwd(cpu, dx, dA, dB, du, dy, x, u, A, Bm, N, in, out, r, 0.5f, &drop);
    gpu->lora_bwd(gpu, gdx, gdA, gdB, gdu, gdy, gx, gu, gA, gB, N, in, out, r, 0.5f, &drop);
    char what[64];
    snprintf(what, sizeof what, "LoRA r=%zu dropout %.2f: y", r, p);
    compare(what, y, gy, N * out);
    compare("  u", u, gu, N * r);
    compare("  dx (accumulated)", dx, gdx, N * in);
    compare("  dA (accumulated)", dA, gdA, r * in);
    compare("  dB (accumulated)", dB, gdB, out * r);
    float *ptrs[] = {gx, gA, gB, gdy, gy, gu, gdx, gdA, gdB, gdu};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) gpu->free(gpu, ptrs[i]);
    free(x), free(A), free(Bm), free(dy), free(y), free(u), free(dx), free(dA), free(dB), free(du);
}

/* bf16 compute: the tensor-core projections and flash attention against the
 * CPU's fp32 on the same inputs */
static void test_bf16_linear(void) {
    size_t N = 96, in = 160, out = 144;
    float *x = rnd(N * in, 1, 21), *W = rnd(out * in, 0.5f, 22), *dy = rnd(N * out, 1, 23);
    float *y = calloc(N * out, 4), *dx = rnd(N * in, 1, 24);
    /* bf16 weights on both sides (the CPU widens them exactly) */
    uint16_t *Wb = malloc(out * in * 2);
    for (size_t i = 0; i < out * in; i++) Wb[i] = zen_f32_to_bf16(W[i]);
    zk_weight wc = {Wb, ZEN_BF16}, wg;
    gpu16->weight_create(gpu16, &wg, Wb, ZEN_BF16, out * in);
    float *gx = dev(x, N * in), *gy = dev(y, N * out), *gdy = dev(dy, N * out), *gdx = dev(dx, N * in);
    cpu->linear_fwd(cpu, y, x, &wc, N, in, out);
    gpu16->linear_fwd(gpu16, gy, gx, &wg, N, in, out);
    compare_rel("bf16 linear forward", y, gy, N * out, 1e-2);
    cpu->linear_bwd(cpu, dx, dy, &wc, N, in, out, 1);
    gpu16->linear_bwd(gpu16, gdx, gdy, &wg, N, in, out, 1);
    compare_rel("bf16 linear backward (accumulate)", dx, gdx, N * in, 1e-2);
    /* an f32 weight is stored as bf16 in bf16 compute */
    zk_weight wf;
    gpu16->weight_create(gpu16, &wf, W, ZEN_F32, out * in);
    int ok = wf.dtype == ZEN_BF16;
    printf("%s %-34s %s\n", ok ? "ok  " : "FAIL", "f32 weight kept as bf16", zen_dtype_name(wf.dtype));
    failures += !ok;
    gpu16->weight_destroy(gpu16, &wf);
    gpu16->weight_destroy(gpu16, &wg);
    free(x), free(W), free(dy), free(y), free(dx), free(Wb);
}

/* block-quantised weights (--base-quant, GGUF bases): the CUDA dequantisers
 * (f32 compute, chunked; bf16 compute, the whole matrix into bf16) against
 * the CPU's on the same blocks */
/* decoding's rows (N <= ZK_DECODE_ROWS) on a weight of type q: against the
 * CPU's, f32 and bf16 compute, and each row alone the same bits as among
 * ZK_DECODE_ROWS (kernels.h); with a LoRA branch too */
static void test_decode_rows(zen_dtype q) {
    size_t N = ZK_DECODE_ROWS, in = 256, out = 72, r = 8;
    float *x = rnd(N * in, 1, 35), *W = rnd(out * in, 0.5f, 36), *A = rnd(r * in, 0.5f, 37), *B = rnd(out * r, 0.5f, 38);
    float *y = calloc(N * out, 4), *g = calloc(N * out, 4), *g1 = calloc(out, 4), *u = calloc(N * r, 4);
    void *Wq = malloc(zen_dtype_bytes(q, out * in));
    if (q == ZEN_F32) memcpy(Wq, W, out * in * 4);
    else if (zen_dtype_traits(q)->from_f32) zen_narrow(Wq, W, q, out * in);
    else ggml_quantize(Wq, W, out * in, (ggml_type_id)zen_dtype_traits(q)->ggml);
    zk_weight wc = {Wq, q};
    zk_backend *gs[2] = {gpu, gpu16};
    float *gx = dev(x, N * in), *gy = dev(y, N * out), *gA = dev(A, r * in), *gB = dev(B, out * r);
    float *gu = dev(u, N * r);
    cpu->linear_fwd(cpu, y, x, &wc, N, in, out);
    cpu->lora_fwd(cpu, y, u, x, A, B, N, in, out, r, 0.5f, NULL);
    for (int c = 0; c < 2; c++) {
        zk_backend *b = gs[c];
        if (c && q == ZEN_F32) continue; /* bf16 compute takes weights as bf16 or quantised */
        zk_weight wg;
        b->weight_create(b, &wg, Wq, q, out * in);
        b->linear_fwd(b, gy, gx, &wg, N, in, out);
        b->lora_fwd(b, gy, gu, gx, gA, gB, N, in, out, r, 0.5f, NULL);
        char what[80];
        snprintf(what, sizeof what, "%s decode rows + LoRA %s", zen_dtype_name(q), c ? "bf16" : "f32");
        if (c) compare_rel(what, y, gy, N * out, 1e-2);
        else compare(what, y, gy, N * out);
        b->download(b, g, gy, N * out * 4);
        int same = 1;
        for (size_t n = 0; n < N; n++) { /* row n alone */
            b->linear_fwd(b, gy, gx + n * in, &wg, 1, in, out);
            b->lora_fwd(b, gy, gu, gx + n * in, gA, gB, 1, in, out, r, 0.5f, NULL);
            b->download(b, g1, gy, out * 4);
            same &= !memcmp(g1, g + n * out, out * 4);
        }
        printf("%s %-34s %s\n", same ? "ok  " : "FAIL", what, "each row alone: the same bits");
        failures += !same;
        b->weight_destroy(b, &wg);
    }
    gpu->free(gpu, gx), gpu->free(gpu, gy), gpu->free(gpu, gA), gpu->free(gpu, gB), gpu->free(gpu, gu);
    free(x), free(W), free(A), free(B), free(y), free(g), free(g1), free(u), free(Wq);
}

static void test_quant_linear(zen_dtype q) {
    size_t N = 40, in = 256, out = 72; /* in: whole blocks of 32, 64 and 256 */
    float *x = rnd(N * in, 1, 31), *W = rnd(out * in, 0.5f, 32), *dy = rnd(N * out, 1, 33);
    float *y = calloc(N * out, 4), *dx = rnd(N * in, 1, 34);
    void *Wq = malloc(zen_dtype_bytes(q, out * in));
    if (zen_dtype_traits(q)->from_f32) zen_narrow(Wq, W, q, out * in);
    else ggml_quantize(Wq, W, out * in, (ggml_type_id)zen_dtype_traits(q)->ggml); /* the k-quants: formats/kquant.c */
    zk_weight wc = {Wq, q}, wg, wg16;
    gpu->weight_create(gpu, &wg, Wq, q, out * in);
    gpu16->weight_create(gpu16, &wg16, Wq, q, out * in);
    float *gx = dev(x, N * in), *gy = dev(y, N * out), *gdy = dev(dy, N * out), *gdx = dev(dx, N * in);
    char what[64];
    cpu->linear_fwd(cpu, y, x, &wc, N, in, out);
    gpu->linear_fwd(gpu, gy, gx, &wg, N, in, out);
    snprintf(what, sizeof what, "%s linear forward f32", zen_dtype_name(q));
    compare(what, y, gy, N * out);
    gpu16->linear_fwd(gpu16, gy, gx, &wg16, N, in, out);
    snprintf(what, sizeof what, "%s linear forward bf16", zen_dtype_name(q));
    compare_rel(what, y, gy, N * out, 1e-2);
    float *gdx16 = dev(dx, N * in);
    cpu->linear_bwd(cpu, dx, dy, &wc, N, in, out, 1);
    gpu->linear_bwd(gpu, gdx, gdy, &wg, N, in, out, 1);
    snprintf(what, sizeof what, "%s linear backward f32", zen_dtype_name(q));
    compare(what, dx, gdx, N * in);
    gpu16->linear_bwd(gpu16, gdx16, gdy, &wg16, N, in, out, 1);
    snprintf(what, sizeof what, "%s linear backward bf16", zen_dtype_name(q));
    compare_rel(what, dx, gdx16, N * in, 1e-2);
    int ok = wg16.dtype == q && !zk_status(gpu) && !zk_status(gpu16);
    printf("%s %-34s %s\n", ok ? "ok  " : "FAIL", "quantised weight kept quantised", zen_dtype_name(wg16.dtype));
    failures += !ok;
    gpu->weight_destroy(gpu, &wg);
    gpu16->weight_destroy(gpu16, &wg16);
    gpu->free(gpu, gx), gpu->free(gpu, gy), gpu->free(gpu, gdy), gpu->free(gpu, gdx), gpu->free(gpu, gdx16);
    free(x), free(W), free(dy), free(y), free(dx), free(Wq);
}

/* generation's attention over a paged KV cache (pages of 16 positions, the
 * page table in reverse order): start rows stored by a first call (a
 * prompt), then n new rows; CUDA against the CPU in f32 and, where the CPU
 * has native bf16, in bf16 (a bf16 cache, q and the probabilities rounded
 * where the CPU rounds them: the same products, sums in other orders) */
static int32_t *dev_ints(zk_backend *g, const int32_t *h, size_t n) {
    int32_t *d = g->alloc(g, n * sizeof(int32_t));
    g->upload(g, d, h, n * sizeof(int32_t));
    return d;
}

static void paged_call(zk_backend *x, int on_gpu, float *o, const float *q, const float *k, const float *v, void *kc,
                       void *vc, const int32_t *tables, size_t n_pages, size_t n, size_t start, size_t nh, size_t nkv,
                       size_t hd) {
    int32_t *pos = malloc(n * sizeof(int32_t)), *tab = calloc(n, sizeof(int32_t));
    for (size_t i = 0; i < n; i++) pos[i] = (int32_t)(start + i);
    int32_t *dp = on_gpu ? dev_ints(x, pos, n) : pos, *dt = on_gpu ? dev_ints(x, tab, n) : tab;
    int32_t *dtab = on_gpu ? dev_ints(x, tables, n_pages) : (int32_t *)tables;
    x->attention_paged_fwd(x, o, q, k, v, kc, vc, dp, dt, dtab, n, start + n, 16, nh, nkv, hd);
    if (on_gpu) x->free(x, dp), x->free(x, dt), x->free(x, dtab);
    free(pos), free(tab);
}

static void cached_attention_on(zk_backend *c, zk_backend *g, const char *prec, size_t n, size_t start, size_t nh,
                                size_t nkv, size_t hd) {
    size_t keys = start + n, kvd = nkv * hd, pages = (keys + 15) / 16, cache = pages * 16 * kvd * zk_cache_bytes(c);
    float *q = rnd(keys * nh * hd, 1, 41), *k = rnd(keys * kvd, 1, 42), *v = rnd(keys * kvd, 1, 43);
    for (size_t i = 0; i < keys * nh * hd; i++) q[i] *= 2.0f; /* scores neither flat nor one-hot */
    int32_t *tables = malloc(pages * sizeof(int32_t));
    for (size_t i = 0; i < pages; i++) tables[i] = (int32_t)(pages - 1 - i);
    float *o = calloc(keys * nh * hd, 4);
    void *kc = malloc(cache), *vc = malloc(cache);
    float *gq = dev(q, keys * nh * hd), *gk = dev(k, keys * kvd), *gv = dev(v, keys * kvd), *go = dev(o, keys * nh * hd);
    void *gkc = g->alloc(g, cache), *gvc = g->alloc(g, cache);
    if (start) {
        paged_call(c, 0, o, q, k, v, kc, vc, tables, pages, start, 0, nh, nkv, hd);
        paged_call(g, 1, go, gq, gk, gv, gkc, gvc, tables, pages, start, 0, nh, nkv, hd);
    }
    size_t qa = start * nh * hd, ka = start * kvd;
    paged_call(c, 0, o + qa, q + qa, k + ka, v + ka, kc, vc, tables, pages, n, start, nh, nkv, hd);
    paged_call(g, 1, go + qa, gq + qa, gk + ka, gv + ka, gkc, gvc, tables, pages, n, start, nh, nkv, hd);
    char what[80];
    snprintf(what, sizeof what, "paged attention %s n=%zu after %zu, %zu/%zu", prec, n, start, nh, nkv);
    if (zk_status(g) || zk_status(c)) {
        printf("FAIL %s: %s\n", what, zen_last_error());
        failures++;
    } else {
        compare_rel(what, o, go, keys * nh * hd, 1e-5);
    }
    g->free(g, gq), g->free(g, gk), g->free(g, gv), g->free(g, go), g->free(g, gkc), g->free(g, gvc);
    free(q), free(k), free(v), free(o), free(kc), free(vc), free(tables);
}

static void test_cached_attention(size_t n, size_t start, size_t nh, size_t nkv, size_t hd) {
    cached_attention_on(cpu, gpu, "f32", n, start, nh, nkv, hd);
    zk_backend *cpu16 = zk_open("cpu", "bf16");
    if (!cpu16) {
        printf("SKIP cached attention bf16: %s\n", zen_last_error());
        return;
    }
    cached_attention_on(cpu16, gpu16, "bf16", n, start, nh, nkv, hd);
    zk_close(cpu16);
}

static void test_flash_attention(size_t B, size_t T, size_t nh, size_t nkv, size_t hd, int docs) {
    size_t nq = B * T * nh * hd, nk = B * T * nkv * hd, nl = B * nh * T;
    float *q = rnd(nq, 1, 31), *k = rnd(nk, 1, 32), *v = rnd(nk, 1, 33), *dout = rnd(nq, 1, 34);
    float *o = calloc(nq, 4), *lse = calloc(nl, 4), *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4);
    /* scores of a useful size: q scaled so softmax is neither flat nor one-hot */
    for (size_t i = 0; i < nq; i++) q[i] *= 2.0f;
    float *gq = dev(q, nq), *gk = dev(k, nk), *gv = dev(v, nk), *gdout = dev(dout, nq);
    float *go = dev(o, nq), *glse = dev(lse, nl), *gdq = dev(dq, nq), *gdk = dev(dk, nk), *gdv = dev(dv, nk);
    int32_t *seg = malloc(B * T * sizeof(int32_t)), *pos = malloc(B * T * sizeof(int32_t));
    make_segments(seg, pos, B, T);
    int32_t *gseg = devi(seg, B * T);
    const int32_t *cs = docs ? seg : NULL, *gs = docs ? gseg : NULL;
    cpu->attention_fwd(cpu, o, lse, q, k, v, cs, B, T, nh, nkv, hd);
    gpu16->attention_fwd(gpu16, go, glse, gq, gk, gv, gs, B, T, nh, nkv, hd);
    cpu->attention_bwd(cpu, dq, dk, dv, dout, o, lse, q, k, v, cs, B, T, nh, nkv, hd);
    gpu16->attention_bwd(gpu16, gdq, gdk, gdv, gdout, go, glse, gq, gk, gv, gs, B, T, nh, nkv, hd);
    char what[80];
    snprintf(what, sizeof what, "flash fwd B%zu T%zu %zu/%zu hd%zu%s", B, T, nh, nkv, hd, docs ? " documents" : "");
    compare_rel(what, o, go, nq, 1e-2);
    compare_rel("  lse", lse, glse, nl, 1e-2);
    compare_rel("  dq", dq, gdq, nq, 2e-2);
    compare_rel("  dk", dk, gdk, nk, 2e-2);
    compare_rel("  dv", dv, gdv, nk, 2e-2);
    /* deterministic: a second backward gives the same bits */
    float *a1 = malloc(nk * 4), *a2 = malloc(nk * 4);
    gpu->download(gpu, a1, gdk, nk * 4);
    gpu16->attention_bwd(gpu16, gdq, gdk, gdv, gdout, go, glse, gq, gk, gv, gs, B, T, nh, nkv, hd);
    gpu->download(gpu, a2, gdk, nk * 4);
    int same = !memcmp(a1, a2, nk * 4);
    printf("%s %-34s\n", same ? "ok  " : "FAIL", "  backward bit-deterministic");
    failures += !same;
    float *ptrs[] = {gq, gk, gv, gdout, go, glse, gdq, gdk, gdv};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) gpu->free(gpu, ptrs[i]);
    gpu->free(gpu, gseg);
    free(q), free(k), free(v), free(dout), free(o), free(lse), free(dq), free(dk), free(dv), free(a1), free(a2);
    free(seg), free(pos);
}

/* A batch laid end to end (B = 1, T = all rows, segment starts counted from
 * the first row; kernels.h) is the same computation as the batch: the exact
 * f32 kernels (with a reserved plan, whose T bounds their shared memory) and
 * flash attention (sequences a whole number of its tiles long) give the same
 * bits for out, lse, dq, dk and dv. */
static void test_attention_end_to_end(zk_backend *g, const char *name, size_t B, size_t T, size_t nh, size_t nkv,
                                      size_t hd) {
    size_t N = B * T, nq = N * nh * hd, nk = N * nkv * hd, nl = nh * N;
    zk_reserve_plan plan = {.N = N, .B = B, .T = T, .heads = nh, .kv_heads = nkv, .head_dim = hd, .rope_theta = 1e4};
    if (g->reserve(g, &plan)) {
        printf("FAIL %s end to end: %s\n", name, zen_last_error());
        failures++;
        return;
    }
    float *q = rnd(nq, 2, 71), *k = rnd(nk, 1, 72), *v = rnd(nk, 1, 73), *dout = rnd(nq, 1, 74);
    float *gq = dev(q, nq), *gk = dev(k, nk), *gv = dev(v, nk), *gdout = dev(dout, nq);
    float *out[2], *lse[2], *dq[2], *dk[2], *dv[2];
    int32_t *seg = malloc(N * sizeof(int32_t)), *pos = malloc(N * sizeof(int32_t)), *flat = malloc(N * sizeof(int32_t));
    make_segments(seg, pos, B, T);
    for (size_t i = 0; i < N; i++) flat[i] = seg[i] + (int32_t)(i / T * T);
    int32_t *gseg[2] = {devi(seg, N), devi(flat, N)};
    for (int x = 0; x < 2; x++) {
        out[x] = g->alloc(g, nq * 4), lse[x] = g->alloc(g, nl * 4), dq[x] = g->alloc(g, nq * 4);
        dk[x] = g->alloc(g, nk * 4), dv[x] = g->alloc(g, nk * 4);
        size_t b = x ? 1 : B, t = x ? N : T;
        g->attention_fwd(g, out[x], lse[x], gq, gk, gv, gseg[x], b, t, nh, nkv, hd);
        g->attention_bwd(g, dq[x], dk[x], dv[x], gdout, out[x], lse[x], gq, gk, gv, gseg[x], b, t, nh, nkv, hd);
    }
    float *h0 = malloc(nq * 4), *h1 = malloc(nq * 4);
    int same = zk_status(g) == 0;
    float **bufs[4] = {out, dq, dk, dv};
    size_t sizes[4] = {nq, nq, nk, nk};
    for (int i = 0; i < 4; i++) {
        g->download(g, h0, bufs[i][0], sizes[i] * 4);
        g->download(g, h1, bufs[i][1], sizes[i] * 4);
        same &= !memcmp(h0, h1, sizes[i] * 4);
    }
    g->download(g, h0, lse[0], nl * 4);
    g->download(g, h1, lse[1], nl * 4);
    for (size_t b = 0; b < B; b++) /* [B, nh, T] against [1, nh, B*T] */
        for (size_t h = 0; h < nh; h++) same &= !memcmp(h0 + (b * nh + h) * T, h1 + h * N + b * T, T * 4);
    printf("%s %s attention, %zu x %zu end to end: same bits\n", same ? "ok  " : "FAIL", name, B, T);
    failures += !same;
    for (int x = 0; x < 2; x++) {
        g->free(g, out[x]), g->free(g, lse[x]), g->free(g, dq[x]), g->free(g, dk[x]), g->free(g, dv[x]);
        g->free(g, gseg[x]);
    }
    g->free(g, gq), g->free(g, gk), g->free(g, gv), g->free(g, gdout);
    free(q), free(k), free(v), free(dout), free(seg), free(pos), free(flat), free(h0), free(h1);
}

#ifdef ZEN_TEST_EMULATED
void zk_emu_flip_order(int flip);
#define FLIP_ORDER(x) zk_emu_flip_order(x)
#else
#define FLIP_ORDER(x) ((void)0)
#endif

/* bytes of a device buffer equal between two runs */
static void same_bits(const char *what, const float *a, const float *b_dev, size_t n) {
    float *b = malloc(n * sizeof(float));
    gpu->download(gpu, b, b_dev, n * sizeof(float));
    int same = !memcmp(a, b, n * sizeof(float));
    printf("%s %-34s\n", same ? "ok  " : "FAIL", what);
    failures += !same;
    free(b);
}

static void test_determinism(void) {
    size_t B = 2, T = 70, nh = 4, nkv = 2, hd = 16, nq = B * T * nh * hd, nk = B * T * nkv * hd, nl = B * nh * T;
    float *q = rnd(nq, 1, 41), *k = rnd(nk, 1, 42), *v = rnd(nk, 1, 43), *dout = rnd(nq, 1, 44);
    float *gq = dev(q, nq), *gk = dev(k, nk), *gv = dev(v, nk), *gdout = dev(dout, nq);
    float *go = gpu->alloc(gpu, nq * 4), *glse = gpu->alloc(gpu, nl * 4);
    float *gdq = gpu->alloc(gpu, nq * 4), *gdk = gpu->alloc(gpu, nk * 4), *gdv = gpu->alloc(gpu, nk * 4);
    float *first_dk = malloc(nk * 4), *first_dv = malloc(nk * 4), *first_dq = malloc(nq * 4);
    gpu->attention_fwd(gpu, go, glse, gq, gk, gv, NULL, B, T, nh, nkv, hd); /* f32 compute: the exact kernels */
    gpu->attention_bwd(gpu, gdq, gdk, gdv, gdout, go, glse, gq, gk, gv, NULL, B, T, nh, nkv, hd);
    gpu->download(gpu, first_dk, gdk, nk * 4);
    gpu->download(gpu, first_dv, gdv, nk * 4);
    gpu->download(gpu, first_dq, gdq, nq * 4);
    size_t n = 100003;
    float *x = rnd(n, 1, 45);
    for (size_t i = 0; i < n; i++) x[i] *= powf(10.0f, (float)(i % 13) - 6.0f); /* magnitudes 1e-6..1e6: order shows */
    float *gx = dev(x, n);
    double s1 = gpu->sum_squares(gpu, gx, n);
    size_t N = 40, C = 24, V = 7;
    int32_t tok[40];
    for (size_t i = 0; i < N; i++) tok[i] = (int32_t)(i * 5 % V); /* repeated tokens: several rows add into one */
    float *d_emb = rnd(N * C, 1, 46), *gd_emb = dev(d_emb, N * C), *first_dw = malloc(V * C * 4);
    int32_t *gtok = gpu->alloc(gpu, sizeof tok);
    gpu->upload(gpu, gtok, tok, sizeof tok);
    float *gdw = gpu->alloc(gpu, V * C * 4);
    gpu->zero(gpu, gdw, V * C * 4);
    gpu->embedding_bwd(gpu, gdw, gd_emb, gtok, N, C);
    gpu->download(gpu, first_dw, gdw, V * C * 4);
    FLIP_ORDER(1);
    gpu->attention_bwd(gpu, gdq, gdk, gdv, gdout, go, glse, gq, gk, gv, NULL, B, T, nh, nkv, hd);
    same_bits("exact attention dq: same bits", first_dq, gdq, nq);
    same_bits("exact attention dk: same bits", first_dk, gdk, nk);
    same_bits("exact attention dv: same bits", first_dv, gdv, nk);
    double s2 = gpu->sum_squares(gpu, gx, n);
    int ok = s1 == s2;
    printf("%s %-34s %.17g\n", ok ? "ok  " : "FAIL", "sum_squares: same bits", s1);
    failures += !ok;
    gpu->zero(gpu, gdw, V * C * 4);
    gpu->embedding_bwd(gpu, gdw, gd_emb, gtok, N, C);
    same_bits("embedding backward: same bits", first_dw, gdw, V * C);
    FLIP_ORDER(0);
    float *ptrs[] = {gq, gk, gv, gdout, go, glse, gdq, gdk, gdv, gx, gd_emb, gdw};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) gpu->free(gpu, ptrs[i]);
    gpu->free(gpu, gtok);
    free(q), free(k), free(v), free(dout), free(first_dk), free(first_dv), free(first_dq), free(x), free(d_emb),
        free(first_dw);
}

/* an op whose scratch cannot be had records a sticky failure and returns:
 * nothing exits, the status names the cause */
static void test_sticky_failure(void) {
    zk_backend *be = zk_open("cuda", "f32");
    size_t N = ZK_DECODE_ROWS + 8, in = 16, out = 8; /* above the decode rows: the GEMM path and its scratch */
    float *x = rnd(N * in, 1, 51), *W = rnd(out * in, 1, 52);
    uint16_t *Wh = malloc(out * in * 2);
    for (size_t i = 0; i < out * in; i++) Wh[i] = zen_f32_to_bf16(W[i]);
    zk_weight w;
    be->weight_create(be, &w, Wh, ZEN_BF16, out * in); /* f32 compute widens it through scratch */
    float *gx = be->alloc(be, N * in * 4), *gy = be->alloc(be, N * out * 4);
    be->upload(be, gx, x, N * in * 4);
    setenv("ZEN_FAULT_SCRATCH", "1", 1);
    be->linear_fwd(be, gy, gx, &w, N, in, out);
    int rc = zk_status(be);
    int ok = rc == ZEN_ERR_INTERNAL && strstr(zen_last_error(), "injected") != NULL;
    printf("%s %-34s %s\n", ok ? "ok  " : "FAIL", "failed scratch: sticky status", zen_last_error());
    failures += !ok;
    unsetenv("ZEN_FAULT_SCRATCH");
    be->free(be, gx);
    be->free(be, gy);
    be->weight_destroy(be, &w);
    zk_close(be);
    free(x), free(W), free(Wh);
}

/* the whole decoder on a zen-init tiny model: loss and every LoRA gradient,
 * f32 compute (close to the CPU) and bf16 compute (cosine) */
static void test_decoder(void) {
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/zen_test_cuda_%d", (int)getpid());
    zen_config c;
    zen_config_parse(&c, zen_preset_json("tiny"), "tiny");
    zen_model_write_random(dir, zen_preset_json("tiny"), &c, ZEN_BF16, 9, 1ull << 40);
    zen_model mc, mg, mh;
    zen_lora lc, lg, lh;
    zen_acts ac, ag, ah;
    if (zen_model_load(&mc, cpu, dir) || zen_model_load(&mg, gpu, dir) || zen_model_load(&mh, gpu16, dir)) {
        printf("FAIL decoder: %s\n", zen_last_error());
        failures++;
        return;
    }
    zen_lora_create(&lc, &c, cpu, 4, 8, 0, 0.1f, 0x7f, 3);
    zen_lora_create(&lg, &c, gpu, 4, 8, 0, 0.1f, 0x7f, 3);
    zen_lora_create(&lh, &c, gpu16, 4, 8, 0, 0.1f, 0x7f, 3);
    /* B != 0 so every gradient is exercised: the same values on both */
    for (size_t i = 0; i < lc.num_params; i++) lc.params[i] += 0.01f * (float)((i * 2654435761u) % 1000) / 1000.0f;
    gpu->upload(gpu, lg.params, lc.params, lc.num_params * sizeof(float));
    gpu->upload(gpu, lh.params, lc.params, lc.num_params * sizeof(float));
    zen_lora_alloc_grads(&lc);
    zen_lora_alloc_grads(&lg);
    zen_lora_alloc_grads(&lh);
    size_t B = 2, T = 32, N = B * T;
    int32_t in[64], tg[64];
    uint8_t mask[64];
    for (size_t i = 0; i < N; i++) in[i] = (int32_t)((i * 37) % 256), tg[i] = (int32_t)((i * 91 + 5) % 256), mask[i] = i % 4 != 0;
    int32_t dseg[64], dpos[64]; /* documents: host arrays, the decoder uploads them */
    make_segments(dseg, dpos, B, T);
    zen_acts_create(&ac, &mc, &lc, B, T, 0);
    zen_acts_create(&ag, &mg, &lg, B, T, 1); /* recompute on the GPU side */
    zen_acts_create(&ah, &mh, &lh, B, T, 1);
    double sc, sg, sh;
    zen_decoder_run(&mc, &lc, &ac, in, tg, mask, dpos, dseg, 1.0f / 48, 12345, &sc);
    zen_decoder_run(&mg, &lg, &ag, in, tg, mask, dpos, dseg, 1.0f / 48, 12345, &sg);
    zen_decoder_run(&mh, &lh, &ah, in, tg, mask, dpos, dseg, 1.0f / 48, 12345, &sh);
    int ok = fabs(sc - sg) <= 1e-5 * fabs(sc);
    printf("%s %-28s %.9g vs %.9g\n", ok ? "ok  " : "FAIL", "decoder loss f32 (dropout on)", sc / 48, sg / 48);
    failures += !ok;
    compare("decoder LoRA gradients f32", lc.grads, lg.grads, lc.num_params);
    ok = fabs(sc - sh) <= 1e-2 * fabs(sc);
    printf("%s %-28s %.9g vs %.9g\n", ok ? "ok  " : "FAIL", "decoder loss bf16", sc / 48, sh / 48);
    failures += !ok;
    float *gh = malloc(lc.num_params * 4);
    gpu->download(gpu, gh, lh.grads, lc.num_params * 4);
    double cg = 0, cc = 0, hh = 0;
    for (size_t i = 0; i < lc.num_params; i++) cg += (double)lc.grads[i] * gh[i], cc += (double)lc.grads[i] * lc.grads[i],
                                                   hh += (double)gh[i] * gh[i];
    double cosine = cg / sqrt(cc * hh + 1e-300);
    ok = cosine >= 0.999;
    printf("%s %-28s cosine %.6f (>= 0.999)\n", ok ? "ok  " : "FAIL", "decoder LoRA gradients bf16", cosine);
    failures += !ok;
    free(gh);
    zen_acts_free(&ac);
    zen_acts_free(&ag);
    zen_acts_free(&ah);
    zen_lora_free(&lc);
    zen_lora_free(&lg);
    zen_lora_free(&lh);
    zen_model_free(&mc);
    zen_model_free(&mg);
    zen_model_free(&mh);
    zen_remove_tree(dir);
}

/* packing: documents in one sequence lose on the GPU what each loses alone,
 * with the exact f32 attention and with bf16 flash attention (documents of
 * 37, 90, 1 and 72 rows: starts inside and across its tiles) */
static void test_packed_documents(void) {
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/zen_test_cuda_docs_%d", (int)getpid());
    zen_config c;
    zen_config_parse(&c, zen_preset_json("tiny"), "tiny");
    zen_model_write_random(dir, zen_preset_json("tiny"), &c, ZEN_BF16, 4, 1ull << 40);
    zk_backend *bes[2] = {gpu, gpu16};
    const char *names[2] = {"f32 exact attention", "bf16 flash attention"};
    const double tol[2] = {1e-5, 2e-2};
    const size_t lens[] = {37, 90, 1, 72};
    for (int i = 0; i < 2; i++) {
        zen_model m;
        zen_lora lo;
        packing_result r;
        int rc = zen_model_load(&m, bes[i], dir);
        if (!rc && !(rc = zen_lora_create(&lo, &c, bes[i], 4, 8, 0, 0, 0x7f, 6))) {
            rc = packing_check(&m, &lo, lens, 4, &r);
            zen_lora_free(&lo);
        }
        if (!rc) zen_model_free(&m);
        int ok = !rc && r.packed_vs_alone <= tol[i] && r.causal_vs_alone > 10 * tol[i];
        if (rc) printf("FAIL packed documents %s: %s\n", names[i], zen_last_error());
        else printf("%s packed documents vs alone, %-21s max loss rel %.2e (<= %.0e; documents ignored %.2e)\n",
                    ok ? "ok  " : "FAIL", names[i], r.packed_vs_alone, tol[i], r.causal_vs_alone);
        failures += !ok;
    }
    zen_remove_tree(dir);
}

int main(void) {
    cpu = zk_open("cpu", "f32");
    gpu = zk_open("cuda", "f32");
    if (!gpu) {
        printf("SKIPPED: %s\n", zen_last_error());
        zk_close(cpu);
        return 77; /* ctest SKIP_RETURN_CODE */
    }
    gpu16 = zk_open("cuda", "bf16");
    test_ops();
    test_lora_rank(8, 0.0f);
    test_lora_rank(32, 0.1f);
    test_lora_rank(40, 0.1f); /* above the fused kernels' rank: cuBLAS */
    test_bf16_linear();
    test_quant_linear(ZEN_Q8_0);
    test_quant_linear(ZEN_Q4_0);
    test_quant_linear(ZEN_NF4);
    test_quant_linear(ZEN_Q5_0);
    test_quant_linear(ZEN_Q5_1);
    test_quant_linear(ZEN_Q4_K);
    test_quant_linear(ZEN_Q5_K);
    test_quant_linear(ZEN_Q6_K);
    zen_dtype decode_types[] = {ZEN_F32, ZEN_BF16, ZEN_Q8_0, ZEN_Q4_0, ZEN_NF4, ZEN_Q4_K, ZEN_Q6_K};
    for (size_t i = 0; i < sizeof decode_types / sizeof decode_types[0]; i++) test_decode_rows(decode_types[i]);
    test_cached_attention(5, 0, 4, 2, 32);    /* a prompt: causal within the new rows */
    test_cached_attention(1, 37, 8, 2, 64);   /* a decode step */
    test_cached_attention(3, 300, 4, 4, 128); /* a chat turn after a long context (MHA) */
    test_flash_attention(2, 200, 8, 2, 32, 0);  /* T not a multiple of any tile */
    test_flash_attention(2, 200, 8, 2, 32, 1);  /* documents: segments across and inside tiles */
    test_flash_attention(1, 64, 4, 4, 64, 0);   /* MHA, exactly one tile */
    test_flash_attention(1, 1, 2, 1, 128, 0);   /* a single token */
#ifdef ZEN_TEST_EMULATED /* tests/emu runs this file on the CPU: a smaller case of the same kind */
    test_flash_attention(1, 97, 8, 2, 128, 0); /* Zen-nano's head size and GQA ratio */
    test_flash_attention(2, 97, 8, 2, 128, 1);
#else
    test_flash_attention(1, 333, 32, 8, 128, 0); /* Zen-nano's heads */
    test_flash_attention(2, 333, 32, 8, 128, 1);
#endif
    test_attention_end_to_end(gpu, "f32 exact", 3, 100, 4, 2, 32);
    test_attention_end_to_end(gpu16, "bf16 flash", 3, 128, 4, 2, 64);
    test_determinism();
    test_sticky_failure();
    test_decoder();
    test_packed_documents();
    zk_close(gpu16);
    zk_close(gpu);
    zk_close(cpu);
    printf("%d failed\n", failures);
    return failures ? 1 : 0;
}
