/* tests/test_model.c: model config checks, LoRA adapters (fresh init, PEFT round
 * trip), the memory plan, and decoder properties that need no reference: a fresh
 * adapter (B = 0) has zero A gradients; a batch of 2 gives the same gradients as
 * two accumulated batches of 1 with the loss normalised over both; documents
 * packed in one sequence give the losses they have alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/cpu/cpu_ops.h"
#include "model/model_load.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/generate.h"
#include "model/lora.h"
#include "model/model_init.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"
#include "packing_property.h"
#include "objectives/token_batch.h"

static char dir[256];
static zk_backend *be;

static void expect_config_error(const char *json, const char *fragment) {
    zen_config c;
    int rc = zen_config_parse(&c, json, "cfg.json");
    if (rc != ZEN_ERR_INPUT || !strstr(zen_last_error(), fragment))
        fail_msg("rc %d, message '%s' (expected '%s')", rc, zen_last_error(), fragment);
}

static void test_presets(void **state) {
    (void)state;
    zen_config c;
    assert_int_equal(zen_config_parse(&c, zen_preset_json("zen-nano-4b"), "zen-nano-4b"), 0);
    assert_int_equal(c.hidden, 2560);
    assert_int_equal(c.head_dim, 128);
    assert_true(c.tied);
    /* the real Qwen3-4B parameter count */
    assert_true(zen_config_param_count(&c) == 4022468096LL);
    assert_int_equal(zen_config_parse(&c, zen_preset_json("tiny"), "tiny"), 0);
    assert_int_equal(zen_config_parse(&c, zen_preset_json("small"), "small"), 0);
    assert_null(zen_preset_json("huge"));
}

static void test_config_errors(void **state) {
    (void)state;
    const char *base = zen_preset_json("tiny");
    char buf[4096];
    expect_config_error("{\"model_type\": \"llama\"}", "llama");
    expect_config_error("[1]", "object");
    expect_config_error("{", "not valid JSON");
    /* drop one key at a time */
    const char *keys[] = {"hidden_size", "num_key_value_heads", "head_dim", "rope_theta", "vocab_size",
                          "tie_word_embeddings", "rms_norm_eps", "max_position_embeddings"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        char pattern[64];
        snprintf(pattern, sizeof pattern, "\"%s\"", keys[k]);
        snprintf(buf, sizeof buf, "%s", base);
        char *at = strstr(buf, pattern);
        assert_non_null(at);
        at[1] = 'X'; /* rename the key */
        expect_config_error(buf, keys[k]);
    }
    snprintf(buf, sizeof buf, "%s", base);
    char *kv = strstr(buf, "\"num_key_value_heads\": 1");
    memcpy(kv, "\"num_key_value_heads\": 3", 24);
    expect_config_error(buf, "not a multiple");
    snprintf(buf, sizeof buf, "%s", base);
    char *hs = strstr(buf, "\"hidden_size\": 64");
    memcpy(hs, "\"hidden_size\": -4", 17);
    expect_config_error(buf, "hidden_size");
}

static void test_targets(void **state) {
    (void)state;
    unsigned m;
    assert_int_equal(zen_lora_parse_targets("all", &m), 0);
    assert_int_equal(m, 0x7f);
    assert_int_equal(zen_lora_parse_targets("q,v_proj,down", &m), 0);
    assert_int_equal(m, (1u << ZT_Q) | (1u << ZT_V) | (1u << ZT_DOWN));
    assert_int_equal(zen_lora_parse_targets("q,lm_head", &m), ZEN_ERR_INPUT);
    assert_non_null(strstr(zen_last_error(), "lm_head"));
}

static void test_fresh_adapter_and_peft_roundtrip(void **state) {
    (void)state;
    zen_config c;
    zen_config_parse(&c, zen_preset_json("tiny"), "tiny");
    zen_lora a, b;
    assert_int_equal(zen_lora_create(&a, &c, be, 4, 16, 0, 0, 0x7f, 42), 0);
    assert_true(fabsf(a.scale - 4.0f) < 1e-7f);
    float bound = 1.0f / sqrtf((float)c.hidden);
    float *q_a = zen_lora_A(&a, a.params, 1, ZT_Q), *q_b = zen_lora_B(&a, a.params, 1, ZT_Q);
    double sum_sq = 0;
    for (int i = 0; i < 4 * c.hidden; i++) {
        assert_true(fabsf(q_a[i]) <= bound);
        sum_sq += q_a[i] * q_a[i];
    }
    /* variance of U(-b, b) is b^2/3 */
    assert_true(fabs(sum_sq / (4 * c.hidden) - bound * bound / 3) < 0.3 * bound * bound / 3);
    for (int i = 0; i < 4 * (c.heads * c.head_dim); i++) assert_true(q_b[i] == 0.0f);
    /* the same seed gives the same adapter */
    assert_int_equal(zen_lora_create(&b, &c, be, 4, 16, 0, 0, 0x7f, 42), 0);
    assert_memory_equal(a.params, b.params, a.num_params * sizeof(float));
    zen_lora_free(&b);
    /* rsLoRA scale alpha / sqrt(r) */
    assert_int_equal(zen_lora_create(&b, &c, be, 4, 16, 1, 0, 1, 1), 0);
    assert_true(fabsf(b.scale - 8.0f) < 1e-6f);
    zen_lora_free(&b);

    for (size_t i = 0; i < a.num_params; i++) a.params[i] = (float)i * 1e-3f; /* B != 0 too */
    char path[300];
    snprintf(path, sizeof path, "%s/adapter", dir);
    assert_int_equal(zen_lora_save_peft(&a, &c, path, "base", ZEN_F32), 0);
    assert_int_equal(zen_lora_load_peft(&b, &c, be, path), 0);
    assert_int_equal(b.r, 4);
    assert_int_equal(b.targets, 0x7f);
    assert_memory_equal(a.params, b.params, a.num_params * sizeof(float));
    zen_lora_free(&b);
    /* the adapter does not fit a model with another shape */
    zen_config other = c;
    other.hidden = 32;
    assert_int_equal(zen_lora_load_peft(&b, &other, be, path), ZEN_ERR_INPUT);
    assert_non_null(strstr(zen_last_error(), "shape"));
    zen_lora_free(&a);
}

static void test_plan(void **state) {
    (void)state;
    zen_config c;
    zen_config_parse(&c, zen_preset_json("zen-nano-4b"), "p");
    zen_plan keep = zen_plan_make(&c, "cpu", ZEN_F32, 8044936192ull, ZEN_BF16, 8, 0x7f, 1, 2048, 0, 0);
    zen_plan rec = zen_plan_make(&c, "cpu", ZEN_F32, 8044936192ull, ZEN_BF16, 8, 0x7f, 1, 2048, 1, 0);
    zen_plan gpu = zen_plan_make(&c, "cuda", ZEN_BF16, 8044936192ull, ZEN_BF16, 8, 0x7f, 1, 2048, 1, 1);
    /* LoRA r=8 on all seven targets of Qwen3-4B: 57344 * 8 per layer * 36 layers */
    assert_int_equal(keep.lora_params, (size_t)57344 * 8 * 36 * 4);
    /* recompute keeps only each layer's input: [L+1, T, C] fp32 plus inputs */
    assert_true(rec.saved_acts < keep.saved_acts / 10);
    assert_true(rec.saved_acts >= (size_t)37 * 2048 * 2560 * 4);
    /* the LM head runs in chunks of ZEN_HEAD_ROWS rows: 256 x 151936 fp32 */
    assert_int_equal(keep.logits, (size_t)256 * 151936 * 4);
    /* cpu, bf16 weights, no dropout: one widened 16 MiB chunk (4M fp32), each
     * thread's two attention tiles of 64 x 2048 fp32, the RoPE tables
     * (2 x 2048 x 64 fp32) and, where the fused LoRA kernels run, their B^T
     * and gradient sums (3 x 8 x 9728 fp32, the widest input) */
    size_t threads = (size_t)omp_get_max_threads();
    size_t lora = cpu_lora_fused_available() ? (size_t)3 * 8 * 9728 * 4 : 0;
    assert_int_equal(keep.backend,
                     ((size_t)4 << 20) * 4 + threads * 2 * 64 * 2048 * 4 + (size_t)2 * 2048 * 64 * 4 + lora);
    /* cuda bf16: 32 MiB cuBLAS workspace + the RoPE tables + the fused LoRA
     * kernels' partial sums (the larger of ceil(9728 / 96) x 2048 x 8 and
     * 2048 / 64 x 8 x 9728 fp32) + attention rows [32 heads, 2048] fp32 + bf16
     * copy of the widest matmul input (the head chunk, 256 x 151936) */
    size_t part = (size_t)102 * 2048 * 8 > (size_t)32 * 8 * 9728 ? (size_t)102 * 2048 * 8 : (size_t)32 * 8 * 9728;
    assert_int_equal(gpu.backend, ((size_t)32 << 20) + (size_t)2 * 2048 * 64 * 4 + part * 4 + (size_t)32 * 2048 * 4 +
                                      (size_t)256 * 151936 * 2);
    /* the budget: Zen-nano at seq 2048 with recompute fits 12 GiB in the plan */
    assert_true(gpu.total < ((size_t)12 << 30));
}

/* a random f32 model of the tiny preset, written under dir/name and loaded */
static void load_tiny(zen_model *m, const char *name, uint64_t seed) {
    char mdir[300];
    snprintf(mdir, sizeof mdir, "%s/%s", dir, name);
    zen_config c;
    const char *json = zen_preset_json("tiny");
    zen_config_parse(&c, json, "tiny");
    assert_int_equal(zen_model_write_random(mdir, json, &c, ZEN_F32, seed, 1ull << 40), 0);
    assert_int_equal(zen_model_load(m, be, mdir), 0);
}

/* a tiny zen-init model: zero A gradients for a fresh adapter, and batch
 * accumulation that matches one batch */
static void test_decoder_properties(void **state) {
    (void)state;
    zen_model m;
    load_tiny(&m, "tiny", 3);
    const zen_config c = m.cfg;
    zen_lora lo;
    assert_int_equal(zen_lora_create(&lo, &m.cfg, be, 2, 4, 0, 0, 0x7f, 5), 0);
    assert_int_equal(zen_lora_alloc_grads(&lo), 0);
    /* four sequences as one batch of 4, and as 4 accumulated micro-batches of 1,
     * with the loss normalised by the mask count over all of them */
    size_t T = 6, B = 4, N = B * T;
    int32_t in[24], tg[24];
    uint8_t mask[24];
    size_t count = 0;
    for (size_t i = 0; i < N; i++) {
        in[i] = (int32_t)((i * 37) % 256), tg[i] = (int32_t)((i * 91 + 7) % 256);
        mask[i] = (uint8_t)(i % 5 != 2 && i % 7 != 3);
        count += mask[i];
    }
    zen_acts a4;
    assert_int_equal(zen_acts_create(&a4, &m, &lo, B, T, 0), 0);
    double sum4, sum1 = 0, part;
    float scale = 1.0f / (float)count;
    assert_int_equal(zen_decoder_run(&m, &lo, &a4, in, tg, mask, NULL, NULL, scale, 0, &sum4), 0);
    float *g4 = malloc(lo.num_params * sizeof(float));
    memcpy(g4, lo.grads, lo.num_params * sizeof(float));
    /* B = 0, so dA = du^T x with du = scale * dy B = 0 */
    for (int l = 0; l < c.layers; l++)
        for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
            int fin, fout;
            zen_target_dims(&c, (zen_target)t, &fin, &fout);
            float *gA = zen_lora_A(&lo, g4, l, t), *gB = zen_lora_B(&lo, g4, l, t);
            double nB = 0;
            for (int i = 0; i < 2 * fin; i++) assert_true(gA[i] == 0.0f);
            for (int i = 0; i < 2 * fout; i++) nB += fabs(gB[i]);
            assert_true(nB > 0);
        }
    zen_lora_zero_grads(&lo);
    zen_acts a1;
    assert_int_equal(zen_acts_create(&a1, &m, &lo, 1, T, 0), 0);
    for (size_t b = 0; b < B; b++) {
        assert_int_equal(zen_decoder_run(&m, &lo, &a1, in + b * T, tg + b * T, mask + b * T, NULL, NULL, scale, 0, &part), 0);
        sum1 += part;
    }
    assert_true(fabs(sum1 - sum4) < 1e-5 * fabs(sum4));
    double diff = 0, norm = 0;
    for (size_t i = 0; i < lo.num_params; i++) {
        diff += (lo.grads[i] - g4[i]) * (double)(lo.grads[i] - g4[i]);
        norm += (double)g4[i] * g4[i];
    }
    printf("accumulation of 4 micro-batches vs one batch of 4: loss rel %.2e, grads rel %.2e\n",
           fabs(sum1 - sum4) / fabs(sum4), sqrt(diff / norm));
    assert_true(sqrt(diff / norm) < 1e-5);
    /* token ids outside the vocab are refused with their position */
    in[7] = 300;
    assert_int_equal(zen_decoder_run(&m, &lo, &a1, in + T, tg, mask, NULL, NULL, 0, 0, &part), ZEN_ERR_INPUT);
    assert_non_null(strstr(zen_last_error(), "position 1"));
    free(g4);
    zen_acts_free(&a1);
    zen_acts_free(&a4);
    zen_lora_free(&lo);
    zen_model_free(&m);
}

/* zen_batch_run leaves out the rows no loss needs (each segment's rows after
 * its last masked-in target: padding, a prompt cut off by the window's end,
 * a sequence without loss) and runs the others end to end: the loss and
 * every LoRA gradient equal the whole batch's, and the rows left out are the
 * ones counted by hand */
static void test_batch_live_rows(void **state) {
    (void)state;
    zen_model m;
    load_tiny(&m, "tiny-live", 6);
    zen_lora lo;
    assert_int_equal(zen_lora_create(&lo, &m.cfg, be, 2, 4, 0, 0, 0x7f, 7), 0);
    assert_int_equal(zen_lora_alloc_grads(&lo), 0);
    for (int l = 0; l < m.cfg.layers; l++) /* a B that is not 0, so A has gradients too */
        for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
            int fin, fout;
            zen_target_dims(&m.cfg, (zen_target)t, &fin, &fout);
            float *Bm = zen_lora_B(&lo, lo.params, l, t);
            for (int i = 0; i < 2 * fout; i++) Bm[i] = 0.05f * (float)(((i * 37 + l * 11 + t) % 17) - 8) / 8.0f;
        }
    enum { B = 3, T = 40, N = B * T };
    zen_batch b;
    assert_int_equal(zen_batch_alloc(&b, B, T), 0);
    /* sequence 0: documents [0, 10) (loss on 6..8), [10, 25) (loss on 12..19,
     * then a prompt cut off by the next), [25, 40) padding (no loss);
     * sequence 1: one document without loss; sequence 2: [0, 5) no loss, then
     * [5, 40) with loss on its last row only. Live rows: 9 + 10 + 0 + 0 + 35. */
    size_t count = 0;
    for (size_t i = 0; i < N; i++) {
        size_t r = i / T, t = i % T, s;
        if (r == 0) s = t < 10 ? 0 : t < 25 ? 10 : 25;
        else if (r == 1) s = 0;
        else s = t < 5 ? 0 : 5;
        b.seg[i] = (int32_t)s, b.pos[i] = (int32_t)(t - s);
        b.inputs[i] = (int32_t)((i * 37) % 256), b.targets[i] = (int32_t)((i * 91 + 7) % 256);
        b.mask[i] = (uint8_t)((r == 0 && ((t >= 6 && t <= 8) || (t >= 12 && t <= 19))) || (r == 2 && t == T - 1));
        count += b.mask[i];
    }
    float scale = 1.0f / (float)count;
    zen_acts a;
    assert_int_equal(zen_acts_create(&a, &m, &lo, B, T, 0), 0);
    double whole, live;
    assert_int_equal(zen_decoder_run(&m, &lo, &a, b.inputs, b.targets, b.mask, b.pos, b.seg, scale, 0, &whole), 0);
    float *g = malloc(lo.num_params * sizeof(float));
    memcpy(g, lo.grads, lo.num_params * sizeof(float));
    zen_lora_zero_grads(&lo);
    assert_int_equal(zen_batch_gather_live(&b), 9 + 10 + 35);
    assert_int_equal(zen_batch_run(&b, &m, &lo, &a, scale, 0, &live), 0);
    assert_true(a.B == B && a.T == T);
    double diff = 0, norm = 0;
    for (size_t i = 0; i < lo.num_params; i++) {
        diff += (lo.grads[i] - g[i]) * (double)(lo.grads[i] - g[i]);
        norm += (double)g[i] * g[i];
    }
    printf("the live rows (54 of 120) against the whole batch: loss rel %.2e, grads rel %.2e (norm %.2e)\n",
           fabs(live - whole) / fabs(whole), sqrt(diff / norm), sqrt(norm));
    assert_true(norm > 0);
    assert_true(fabs(live - whole) < 1e-6 * fabs(whole));
    assert_true(sqrt(diff / norm) < 1e-5);
    free(g);
    zen_acts_free(&a);
    zen_batch_free(&b);
    zen_lora_free(&lo);
    zen_model_free(&m);
}

/* packing: documents of 7, 1, 13 and 19 tokens in one sequence lose exactly
 * what each loses alone; ignoring the documents does not */
static void test_packed_documents(void **state) {
    (void)state;
    zen_model m;
    load_tiny(&m, "tiny-docs", 4);
    zen_lora lo;
    assert_int_equal(zen_lora_create(&lo, &m.cfg, be, 4, 8, 0, 0, 0x7f, 6), 0);
    for (size_t i = 0; i < lo.num_params; i++) lo.params[i] += 0.02f * (float)((i * 2654435761u) % 1000) / 1000.0f;
    const size_t lens[] = {7, 1, 13, 19};
    packing_result r;
    assert_int_equal(packing_check(&m, &lo, lens, 4, &r), 0);
    printf("packed documents vs each alone: max loss rel %.2e (documents ignored: %.2e)\n", r.packed_vs_alone,
           r.causal_vs_alone);
    assert_true(r.packed_vs_alone < 1e-5);
    assert_true(r.causal_vs_alone > 1e-2);
    zen_lora_free(&lo);
    zen_model_free(&m);
}

/* the frequencies of 200,000 draws against hand-computed truncated
 * distributions of p = (0.4, 0.25, 0.15, 0.1, 0.06, 0.04) */
static void check_draws(const float *logits, const zen_sampling *s, const double *want) {
    int count[6] = {0};
    zen_rng rng;
    zen_rng_seed(&rng, 7);
    const int n = 200000;
    for (int i = 0; i < n; i++) count[zen_sample(logits, 6, s, &rng)]++;
    for (int j = 0; j < 6; j++) {
        double got = (double)count[j] / n;
        if (fabs(got - want[j]) > 0.006) fail_msg("token %d: drawn %.4f, expected %.4f", j, got, want[j]);
    }
}

/* the rule written apart: sort all (probability desc, id asc), keep top_k, cut at top_p and min_p, walk u */
static int ref_desc(const void *a, const void *b) {
    const double *x = a, *y = b;
    if (x[0] != y[0]) return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

static int32_t ref_sample(const float *logits, int32_t V, const zen_sampling *s, zen_rng *rng) {
    double *p = malloc((size_t)V * 2 * sizeof(double)), top = logits[0], sum = 0;
    for (int32_t i = 1; i < V; i++) top = logits[i] > top ? logits[i] : top;
    for (int32_t i = 0; i < V; i++) sum += p[2 * i] = exp(((double)logits[i] - top) / s->temperature), p[2 * i + 1] = i;
    for (int32_t i = 0; i < V; i++) p[2 * i] = (float)(p[2 * i] / sum); /* zen keeps them as floats */
    qsort(p, (size_t)V, 2 * sizeof(double), ref_desc);
    int32_t keep = s->top_k > 0 && s->top_k < V ? s->top_k : V;
    double cum = 0, total = 0, acc = 0;
    for (int32_t i = 0; s->top_p < 1.0f && i < keep; i++)
        if ((cum += p[2 * i]) >= s->top_p) keep = i + 1;
    for (int32_t i = 1; s->min_p > 0.0f && i < keep; i++)
        if (p[2 * i] < s->min_p * p[0]) keep = i;
    for (int32_t i = 0; i < keep; i++) total += p[2 * i];
    double u = (double)zen_rng_uniform(rng) * total;
    int32_t pick = (int32_t)p[2 * (keep - 1) + 1];
    for (int32_t i = 0; i < keep; i++)
        if ((acc += p[2 * i]) > u) {
            pick = (int32_t)p[2 * i + 1];
            break;
        }
    free(p);
    return pick;
}

/* top_k's partial selection picks what sorting the whole vocabulary picks, draw for draw */
static void test_sampling_top_k_exact(void **state) {
    (void)state;
    enum { V = 5000 };
    static float logits[V];
    zen_rng g;
    zen_rng_seed(&g, 11);
    for (int i = 0; i < V; i++) logits[i] = (float)(4.0 * zen_rng_uniform(&g)) + (i % 97 == 0 ? 3.0f : 0.0f);
    logits[17] = logits[4000]; /* a tie: the lower id first */
    zen_sampling cases[] = {{0.8f, 1.0f, 0.0f, 1}, {0.8f, 1.0f, 0.0f, 20}, {1.0f, 0.9f, 0.0f, 50},
                            {0.6f, 0.95f, 0.05f, 200}, {1.0f, 1.0f, 0.0f, 4999}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        zen_rng a, b;
        zen_rng_seed(&a, 100 + c), zen_rng_seed(&b, 100 + c);
        for (int d = 0; d < 300; d++) assert_int_equal(zen_sample(logits, V, &cases[c], &a), ref_sample(logits, V, &cases[c], &b));
    }
}

static void test_sampling(void **state) {
    (void)state;
    static const double p[6] = {0.4, 0.25, 0.15, 0.1, 0.06, 0.04};
    float logits[6];
    for (int j = 0; j < 6; j++) logits[j] = (float)log(p[j]) + 3.0f; /* a constant shift changes nothing */
    zen_sampling plain = {1.0f, 1.0f, 0.0f, 0};
    check_draws(logits, &plain, p);
    zen_sampling k3 = {1.0f, 1.0f, 0.0f, 3}; /* the 3 most likely, renormalised over 0.8 */
    check_draws(logits, &k3, (double[6]){0.5, 0.3125, 0.1875, 0, 0, 0});
    zen_sampling p7 = {1.0f, 0.7f, 0.0f, 0}; /* 0.4 + 0.25 = 0.65 < 0.7, with 0.15: 0.8 */
    check_draws(logits, &p7, (double[6]){0.5, 0.3125, 0.1875, 0, 0, 0});
    zen_sampling p6 = {1.0f, 0.6f, 0.0f, 0}; /* 0.65 >= 0.6: two tokens */
    check_draws(logits, &p6, (double[6]){0.4 / 0.65, 0.25 / 0.65, 0, 0, 0, 0});
    zen_sampling m = {1.0f, 1.0f, 0.2f, 0}; /* at least 0.2 x 0.4 = 0.08: four tokens over 0.9 */
    check_draws(logits, &m, (double[6]){0.4 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.1 / 0.9, 0, 0});
    zen_sampling t2 = {2.0f, 1.0f, 0.0f, 0}; /* temperature 2: p^(1/2), renormalised */
    double t[6], z = 0;
    for (int j = 0; j < 6; j++) z += t[j] = sqrt(p[j]);
    for (int j = 0; j < 6; j++) t[j] /= z;
    check_draws(logits, &t2, t);
    zen_sampling greedy = {0.0f, 1.0f, 0.0f, 0};
    zen_rng rng;
    zen_rng_seed(&rng, 1);
    float tie[4] = {1.0f, 5.0f, 5.0f, 2.0f};
    assert_int_equal(zen_sample(tie, 4, &greedy, &rng), 1); /* the lowest id among equal maxima */
}

int main(int argc, char **argv) {
    (void)argc;
    if (test_cpu_isa_setup(argv)) return 2;
    snprintf(dir, sizeof dir, "/tmp/zen_test_model_%d", (int)getpid());
    zen_mkdir_p(dir);
    be = zk_open("cpu", "f32");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_fresh_adapter_and_peft_roundtrip),
        cmocka_unit_test(test_plan),
        cmocka_unit_test(test_decoder_properties),
        cmocka_unit_test(test_batch_live_rows),
        cmocka_unit_test(test_packed_documents),
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_sampling_top_k_exact),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zk_close(be);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) rc |= 0;
    return rc;
}
