/* model/decoder.c: the Qwen3 decoder's forward and backward with LoRA on the
 * kernel interface, following Hugging Face modeling_qwen3.py:
 *
 *   x = embed(tokens)
 *   per layer:  h = rmsnorm(x);  q,k,v = proj(h)  (+ LoRA)
 *               q,k = rope(rmsnorm_per_head(q,k));  a = causal_gqa(q,k,v)
 *               x = x + o_proj(a);  h = rmsnorm(x)
 *               x = x + down(silu(gate(h)) * up(h))
 *   logits = rmsnorm(x) lm_head^T;  loss = masked cross-entropy
 *
 * The LM head and the loss are fused over chunks of ZEN_HEAD_ROWS token rows:
 * a chunk's logits [rows, V] are formed, turned into their gradient in place by
 * the softmax + cross-entropy, and consumed at once by the head's input
 * gradient, so logits for the whole batch never exist (at seq 2048 and
 * Qwen3's 151936-token vocabulary they would be 1.2 GB in fp32). */
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "../util/rng.h"
#include "decoder.h"

/* ---------------- arena layout ---------------- */

typedef struct {
    char *base; /* NULL while measuring */
    size_t used;
} bump;

static void *take(bump *b, size_t bytes) {
    size_t off = (b->used + 63) & ~(size_t)63;
    b->used = off + bytes;
    return b->base ? b->base + off : NULL;
}

typedef struct {
    size_t saved, scratch, logits;
} layout_sizes;

#define LAYOUT_SHARED 1u /* the shared-prefix attention scratch */
#define LAYOUT_DORA 2u   /* DoRA: the o and down outputs kept, and dz */
#define LAYOUT_DORA_DROP 4u /* DoRA with dropout: each projection's z kept, dropout(x) and its gradient */

static void layout_layer(bump *b, zen_layer_acts *s, const zen_config *c, size_t ab, int r,
                         unsigned targets, size_t B, size_t T, size_t X, unsigned flags) {
    size_t N = B * T, C = (size_t)c->hidden, F = (size_t)c->intermediate;
    size_t nh = (size_t)c->heads, nkv = (size_t)c->kv_heads, hd = (size_t)c->head_dim;
    s->xn1 = take(b, N * C * ab);
    s->rstd1 = take(b, N * sizeof(float));
    s->q_pre = take(b, N * nh * hd * ab);
    s->k_pre = take(b, N * nkv * hd * ab);
    s->rstd_q = take(b, N * nh * sizeof(float));
    s->rstd_k = take(b, N * nkv * sizeof(float));
    s->q = take(b, N * nh * hd * ab);
    s->k = take(b, N * nkv * hd * ab);
    s->v = take(b, N * nkv * hd * ab);
    s->att = take(b, N * nh * hd * ab);
    s->lse = take(b, (X > N ? X : N) * nh * sizeof(float)); /* per attention row: X of a shared layout */
    s->x_mid = take(b, N * C * ab);
    s->xn2 = take(b, N * C * ab);
    s->rstd2 = take(b, N * sizeof(float));
    s->gate = take(b, N * F * ab);
    s->up = take(b, N * F * ab);
    s->h = take(b, N * F * ab);
    for (int t = 0; t < ZEN_NUM_TARGETS; t++)
        s->lora_u[t] = ((targets >> t) & 1u) ? take(b, N * (size_t)r * sizeof(float)) : NULL;
    /* DoRA's dm needs each adapted projection's output; o's and down's are otherwise only added in */
    int dora = (flags & LAYOUT_DORA) != 0;
    s->o_out = dora && ((targets >> ZT_O) & 1u) ? take(b, N * C * ab) : NULL;
    s->down_out = dora && ((targets >> ZT_DOWN) & 1u) ? take(b, N * C * ab) : NULL;
    for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
        int in, out;
        zen_target_dims(c, (zen_target)t, &in, &out);
        s->dora_z[t] = (flags & LAYOUT_DORA_DROP) && ((targets >> t) & 1u) ? take(b, N * (size_t)out * ab) : NULL;
    }
}

/* Assigns every buffer of `a` inside base (or only measures when base is NULL).
 * a->resid must hold L+1 slots and a->layer L (or 1 with recompute) slots. */
static layout_sizes layout(zen_acts *a, const zen_config *c, size_t ab, int r, unsigned targets,
                           size_t B, size_t T, int recompute, unsigned flags, char *base) {
    layout_sizes sz;
    bump b = {base, 0};
    size_t N = B * T, C = (size_t)c->hidden, F = (size_t)c->intermediate;
    size_t qd = (size_t)c->heads * c->head_dim, kvd = (size_t)c->kv_heads * c->head_dim;
    size_t L = (size_t)c->layers;
    size_t X = (flags & LAYOUT_SHARED) && a->max_att_rows > N ? a->max_att_rows : N; /* attention rows */
    /* saved for backward: inputs, every layer's input, and (without recompute)
     * every layer's activations */
    a->tokens = take(&b, N * sizeof(int32_t));
    a->targets = take(&b, N * sizeof(int32_t));
    a->pos = take(&b, N * sizeof(int32_t));
    a->seg = take(&b, N * sizeof(int32_t));
    a->weights = take(&b, N * sizeof(float));
    for (size_t l = 0; l <= L; l++) a->resid[l] = take(&b, N * C * ab);
    if (!recompute)
        for (size_t l = 0; l < L; l++) layout_layer(&b, &a->layer[l], c, ab, r, targets, B, T, X, flags);
    sz.saved = b.used;
    /* scratch: the recomputed layer, the head, and the backward buffers */
    if (recompute) layout_layer(&b, &a->layer[0], c, ab, r, targets, B, T, X, flags);
    a->tmp_c = take(&b, N * C * ab);
    a->xf = take(&b, N * C * ab);
    a->rstd_f = take(&b, N * sizeof(float));
    a->losses = take(&b, N * sizeof(float));
    a->head_rows = take(&b, N * sizeof(int32_t));
    a->head_targets = take(&b, N * sizeof(int32_t));
    a->head_weights = take(&b, N * sizeof(float));
    a->head_losses = take(&b, N * sizeof(float));
    a->entropy = take(&b, N * sizeof(float));
    a->head_entropy = take(&b, N * sizeof(float));
    a->dres = take(&b, N * C * ab);
    a->dxn = take(&b, N * C * ab);
    a->datt = take(&b, N * qd * ab);
    a->dq = take(&b, N * qd * ab);
    a->dq_pre = take(&b, N * qd * ab);
    a->dk = take(&b, N * kvd * ab);
    a->dk_pre = take(&b, N * kvd * ab);
    a->dv = take(&b, N * kvd * ab);
    a->dh = take(&b, N * F * ab);
    a->dg = take(&b, N * F * ab);
    a->du = take(&b, N * F * ab);
    a->dlora_u = take(&b, N * (size_t)r * sizeof(float));
    if (flags & LAYOUT_DORA) { /* DoRA: a projection's output gradient scaled by g, [N, the widest out] */
        size_t widest = C > qd ? C : qd;
        a->dora_dz = take(&b, N * (widest > F ? widest : F) * ab);
        if (flags & LAYOUT_DORA_DROP) {
            a->dora_xd = take(&b, N * (widest > F ? widest : F) * ab);
            a->dora_dxd = take(&b, N * (widest > F ? widest : F) * ab);
        }
    }
    if (flags & LAYOUT_SHARED) { /* the attention layout of shared prefixes: up to X rows */
        a->sh.seg = take(&b, X * sizeof(int32_t));
        a->sh.from = take(&b, X * sizeof(int32_t));
        a->sh.out = take(&b, N * sizeof(int32_t));
        a->sh.again = take(&b, X * sizeof(int32_t));
        a->sh.q = take(&b, X * qd * ab);
        a->sh.k = take(&b, X * kvd * ab);
        a->sh.v = take(&b, X * kvd * ab);
        a->sh.att = take(&b, X * qd * ab);
        a->sh.dq = take(&b, X * qd * ab);
        a->sh.dk = take(&b, X * kvd * ab);
        a->sh.dv = take(&b, X * kvd * ab);
        a->sh.datt = take(&b, X * qd * ab);
        a->sh.again_rows = take(&b, N * kvd * ab);
    }
    sz.scratch = b.used - sz.saved;
    size_t before = b.used;
    a->logits = take(&b, zen_head_rows(N) * (size_t)c->vocab * ab);
    sz.logits = b.used - before;
    return sz;
}

static int acts_slots(zen_acts *a, const zen_config *c, int recompute) {
    a->resid = zen_calloc((size_t)c->layers + 1, sizeof(void *));
    a->layer = zen_calloc(recompute ? 1 : (size_t)c->layers, sizeof(zen_layer_acts));
    return a->resid && a->layer ? 0 : ZEN_ERR_INTERNAL;
}

/* the largest shapes a step's ops see: what the backend reserves up front
 * and what the plan counts as the backend's scratch */
/* quant_elems: the largest block-quantised matrix (0 if none) */
static zk_reserve_plan reserve_plan(const zen_config *cfg, zen_dtype weights_dtype, size_t quant_elems, int r,
                                    int has_lora, int dropout, size_t B, size_t T) {
    zk_reserve_plan p;
    memset(&p, 0, sizeof p);
    size_t N = B * T, C = (size_t)cfg->hidden, F = (size_t)cfg->intermediate, V = (size_t)cfg->vocab;
    size_t qd = (size_t)cfg->heads * (size_t)cfg->head_dim, widest = C > qd ? C : qd;
    widest = widest > F ? widest : F;
    p.N = N, p.B = B, p.T = T;
    p.heads = (size_t)cfg->heads, p.kv_heads = (size_t)cfg->kv_heads, p.head_dim = (size_t)cfg->head_dim;
    p.rope_theta = cfg->rope_theta;
    p.widest_in = widest;
    /* the widest matmul input or output gradient (rounded to bf16 by a bf16
     * backend): a projection's [N, widest] or a head chunk's [rows, V] */
    size_t matmul = N * widest, head = zen_head_rows(N) * V;
    p.matmul_elems = matmul > head ? matmul : head;
    /* the largest weight matrix: a projection or the head / embedding */
    size_t largest = V * C, largest_proj = 0;
    for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
        int in, out;
        zen_target_dims(cfg, (zen_target)t, &in, &out);
        if ((size_t)in * (size_t)out > largest_proj) largest_proj = (size_t)in * (size_t)out;
    }
    largest = largest > largest_proj ? largest : largest_proj;
    p.widen_elems = weights_dtype == ZEN_F32 && !quant_elems ? 0 : largest;
    p.quant_elems = quant_elems;
    p.lora_r = has_lora ? (size_t)r : 0;
    p.lora_dropout = has_lora && dropout;
    return p;
}

/* the projections (elements of all layers) whose rows fill whole blocks of q */
static size_t quantised_elems(const zen_config *cfg, zen_dtype q) {
    size_t n = 0;
    for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
        int in, out;
        zen_target_dims(cfg, (zen_target)t, &in, &out);
        if ((size_t)in % zen_dtype_block(q) == 0) n += (size_t)cfg->layers * (size_t)in * (size_t)out;
    }
    return n;
}

zen_plan zen_plan_make(const zen_config *cfg, const char *device, zen_dtype compute, size_t stored_bytes,
                       zen_dtype stored_dtype, int r, unsigned targets, size_t B, size_t T, int recompute,
                       int dropout) {
    return zen_plan_make_quant(cfg, device, compute, stored_bytes, stored_dtype, -1, 0, r, targets, B, T, recompute,
                               dropout);
}

zen_plan zen_plan_make_quant(const zen_config *cfg, const char *device, zen_dtype compute, size_t stored_bytes,
                             zen_dtype stored_dtype, int base_quant, size_t largest_quant, int r, unsigned targets,
                             size_t B, size_t T, int recompute, int dropout) {
    zen_dtype weights_dtype = zen_device_weight_dtype(stored_dtype, compute);
    size_t quant_elems = base_quant >= 0 ? quantised_elems(cfg, (zen_dtype)base_quant) : 0;
    if (zen_dtype_is_quant(stored_dtype)) weights_dtype = stored_dtype;
    zen_plan p;
    memset(&p, 0, sizeof p);
    zen_acts a;
    memset(&a, 0, sizeof a);
    if (acts_slots(&a, cfg, recompute) == 0) {
        layout_sizes sz = layout(&a, cfg, sizeof(float), r, targets, B, T, recompute, 0, NULL);
        p.saved_acts = sz.saved;
        p.scratch = sz.scratch;
        p.logits = sz.logits;
    }
    free(a.resid);
    free(a.layer);
    /* --base-quant quantises the projections: the largest of those is dequantised whole on CUDA */
    size_t largest_proj = 0;
    for (int t = 0; t < ZEN_NUM_TARGETS && quant_elems; t++) {
        int in, out;
        zen_target_dims(cfg, (zen_target)t, &in, &out);
        if ((size_t)in % zen_dtype_block((zen_dtype)base_quant) == 0 && (size_t)in * (size_t)out > largest_proj)
            largest_proj = (size_t)in * (size_t)out;
    }
    if (largest_quant) largest_proj = largest_quant;
    zk_reserve_plan rp = reserve_plan(cfg, weights_dtype, largest_proj, r, targets != 0, dropout, B, T);
    p.backend = zk_plan_scratch(device, compute, &rp);
    size_t lora = 0;
    for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
        if (!((targets >> t) & 1u)) continue;
        int in, out;
        zen_target_dims(cfg, (zen_target)t, &in, &out);
        lora += (size_t)cfg->layers * (size_t)r * (size_t)(in + out);
    }
    /* every element in the device's type, but the quantised projections; a
     * quantised file (GGUF) is used as stored */
    if (zen_dtype_is_quant(stored_dtype)) {
        p.weights = stored_bytes;
    } else {
        size_t elems = stored_bytes / zen_dtype_bytes(stored_dtype, 1);
        p.weights = zen_dtype_bytes(weights_dtype, elems - quant_elems) +
                    (quant_elems ? zen_dtype_bytes((zen_dtype)base_quant, quant_elems) : 0);
    }
    p.lora_params = lora * sizeof(float);
    p.lora_grads = lora * sizeof(float);
    p.optimizer = 2 * lora * sizeof(float);
    p.total = p.weights + p.lora_params + p.lora_grads + p.optimizer + p.saved_acts + p.scratch +
              p.logits + p.backend;
    return p;
}

size_t zen_shared_scratch_bytes(const zen_config *cfg, size_t rows, size_t att_rows) {
    zen_acts a;
    memset(&a, 0, sizeof a);
    a.max_att_rows = att_rows;
    size_t bytes = 0;
    if (acts_slots(&a, cfg, 1) == 0) {
        layout_sizes with = layout(&a, cfg, sizeof(float), 1, 0, 1, rows, 1, LAYOUT_SHARED, NULL);
        layout_sizes without = layout(&a, cfg, sizeof(float), 1, 0, 1, rows, 1, 0, NULL);
        bytes = with.saved + with.scratch - without.saved - without.scratch;
    }
    free(a.resid);
    free(a.layer);
    return bytes;
}

static int acts_create(zen_acts *a, const zen_model *m, const zen_lora *lo, size_t B, size_t T, size_t att_rows,
                       int recompute, int shared) {
    memset(a, 0, sizeof *a);
    const zen_config *c = &m->cfg;
    if (T < 1 || B < 1) return zen_fail(ZEN_ERR_INPUT, "batch %zu and seq-len %zu must be positive", B, T);
    if (T > (size_t)c->max_positions)
        return zen_fail(ZEN_ERR_INPUT, "seq-len %zu exceeds the model's max_position_embeddings %d", T,
                        c->max_positions);
    a->B = B;
    a->T = a->max_T = T;
    a->max_rows = B * T;
    a->max_att_rows = shared && att_rows > B * T ? att_rows : B * T;
    a->recompute = recompute;
    a->be = m->be;
    int r = lo ? lo->r : 1;
    unsigned targets = lo ? lo->targets : 0;
    if (acts_slots(a, c, recompute)) {
        zen_acts_free(a);
        return ZEN_ERR_INTERNAL;
    }
    unsigned flags = (shared ? LAYOUT_SHARED : 0u) | (lo && lo->dora ? LAYOUT_DORA : 0u) |
                     (lo && lo->dora && !lo->dora_clean_base && lo->dropout > 0.0f ? LAYOUT_DORA_DROP : 0u);
    layout_sizes sz = layout(a, c, m->be->act_bytes, r, targets, B, T, recompute, flags, NULL);
    a->arena_bytes = sz.saved + sz.scratch + sz.logits + 64;
    a->arena = m->be->alloc(m->be, a->arena_bytes);
    if (!a->arena) {
        zen_acts_free(a);
        return ZEN_ERR_INTERNAL;
    }
    layout(a, c, m->be->act_bytes, r, targets, B, T, recompute, flags, a->arena);
    a->sh.enabled = shared;
    /* the backend's scratch, reserved now so a step does not allocate */
    if (m->be->reserve) {
        zen_dtype wd = zen_device_weight_dtype(m->main_dtype, m->be->compute);
        /* the attention runs over up to max_att_rows rows: reserved as that many sequences of T */
        size_t att_seqs = (a->max_att_rows + T - 1) / T;
        zk_reserve_plan rp = reserve_plan(c, wd, m->largest_quant, r, lo != NULL, lo && lo->dropout > 0.0f,
                                          att_seqs > B ? att_seqs : B, T);
        int rc = m->be->reserve(m->be, &rp);
        if (rc) {
            zen_acts_free(a);
            return rc;
        }
    }
    return 0;
}

int zen_acts_create(zen_acts *a, const zen_model *m, const zen_lora *lo, size_t B, size_t T, int recompute) {
    return acts_create(a, m, lo, B, T, 0, recompute, 0);
}

int zen_acts_create_shared(zen_acts *a, const zen_model *m, const zen_lora *lo, size_t B, size_t T, size_t att_rows,
                           int recompute) {
    return acts_create(a, m, lo, B, T, att_rows, recompute, 1);
}

void zen_acts_free(zen_acts *a) {
    if (a->be) a->be->free(a->be, a->arena);
    free(a->resid);
    free(a->layer);
    memset(a, 0, sizeof *a);
}

/* ---------------- forward ---------------- */

/* the LoRA dropout of projection t in layer l for this run: its own mask seed
 * per (run seed, layer, target), as PEFT gives each LoRA layer its own dropout */
static zk_dropout lora_dropout(const zen_lora *lo, const zen_acts *a, int l, zen_target t) {
    zk_dropout d = {0.0f, 0};
    if (a->dropout_seed && lo->dropout > 0.0f) {
        zen_rng rng;
        zen_rng_seed(&rng, a->dropout_seed ^ ((uint64_t)(l * ZEN_NUM_TARGETS + (int)t + 1) << 32));
        d.p = lo->dropout;
        d.seed = zen_rng_next(&rng);
    }
    return d;
}

/* DoRA with dropout as PEFT trains it (a second base matmul), unless the
 * adapter keeps the (m/n - 1) term on x (dora_clean_base) */
static int dora_peft_dropout(const zen_lora *lo, const zen_acts *a, zen_target t) {
    return zen_lora_has(lo, t) && lo->dora && !lo->dora_clean_base && a->dropout_seed && lo->dropout > 0.0f;
}

/* DoRA with LoRA dropout, as PEFT runs it in training (the (g - 1) term on
 * the dropped-out input, xd = dropout(x)):
 *   y = x W^T + (g - 1) xd W^T + g s xd A^T B^T = (x - xd) W^T + g z,
 *   z = xd W^T + s xd A^T B^T (kept for dm = sum dy z / n) */
static void dora_dropout_fwd(const zen_model *m, const zen_lora *lo, const zen_acts *a, int l, zen_target t, void *y,
                             const void *x, float *u) {
    zk_backend *be = m->be;
    size_t N = a->B * a->T;
    int in, out;
    zen_target_dims(&m->cfg, t, &in, &out);
    zk_dropout drop = lora_dropout(lo, a, l, t), none = {0.0f, 0};
    const zen_layer_acts *s = &a->layer[a->recompute ? 0 : l];
    void *z = s->dora_z[t];
    be->dropout(be, a->dora_xd, x, &drop, N * (size_t)in);
    be->linear_fwd(be, z, a->dora_xd, &m->layers[l].proj[t], N, (size_t)in, (size_t)out);
    be->linear_fwd(be, y, x, &m->layers[l].proj[t], N, (size_t)in, (size_t)out);
    be->scale_cols(be, y, z, lo->dora_minus1, N, (size_t)out, 1); /* y = (x - xd) W^T */
    be->lora_fwd(be, z, u, a->dora_xd, zen_lora_A(lo, lo->params, l, t), zen_lora_B(lo, lo->params, l, t), N,
                 (size_t)in, (size_t)out, (size_t)lo->r, lo->scale, &none);
    be->scale_cols(be, y, z, zen_lora_G(lo, lo->dora_g, l, t), N, (size_t)out, 1);
}

/* its backward: dm += sum dy z / n; dx += dy W + dropout'(((g - 1) dy) W + the LoRA
 * input gradient of g dy); dA, dB from g dy on xd */
static void dora_dropout_bwd(const zen_model *m, const zen_lora *lo, zen_acts *a, int l, zen_target t, void *dx,
                             const void *dy, const void *x, const float *u, int accumulate) {
    zk_backend *be = m->be;
    size_t N = a->B * a->T;
    int in, out;
    zen_target_dims(&m->cfg, t, &in, &out);
    zk_dropout drop = lora_dropout(lo, a, l, t), none = {0.0f, 0};
    const zen_layer_acts *s = &a->layer[a->recompute ? 0 : l];
    const zk_weight *w = &m->layers[l].proj[t];
    be->col_dot(be, zen_lora_M(lo, lo->grads, l, t), dy, s->dora_z[t], zen_lora_G(lo, lo->dora_inv_n, l, t), N,
                (size_t)out);
    be->linear_bwd(be, dx, dy, w, N, (size_t)in, (size_t)out, accumulate);
    be->scale_cols(be, a->dora_dz, dy, zen_lora_G(lo, lo->dora_gm1, l, t), N, (size_t)out, 0);
    be->linear_bwd(be, a->dora_dxd, a->dora_dz, w, N, (size_t)in, (size_t)out, 0);
    be->scale_cols(be, a->dora_dz, dy, zen_lora_G(lo, lo->dora_g, l, t), N, (size_t)out, 0);
    be->dropout(be, a->dora_xd, x, &drop, N * (size_t)in);
    be->lora_bwd(be, a->dora_dxd, zen_lora_A(lo, lo->grads, l, t), zen_lora_B(lo, lo->grads, l, t), a->dlora_u,
                 a->dora_dz, a->dora_xd, u, zen_lora_A(lo, lo->params, l, t), zen_lora_B(lo, lo->params, l, t), N,
                 (size_t)in, (size_t)out, (size_t)lo->r, lo->scale, &none);
    be->dropout(be, a->dora_dxd, a->dora_dxd, &drop, N * (size_t)in);
    be->add(be, dx, dx, a->dora_dxd, N * (size_t)in);
}

/* y[N,out] = x W^T (+ LoRA branch, saving u = dropout(x) A^T) */
static void project(const zen_model *m, const zen_lora *lo, const zen_acts *a, int l, zen_target t,
                    void *y, const void *x, float *u) {
    zk_backend *be = m->be;
    size_t N = a->B * a->T;
    int in, out;
    zen_target_dims(&m->cfg, t, &in, &out);
    if (dora_peft_dropout(lo, a, t)) {
        dora_dropout_fwd(m, lo, a, l, t, y, x, u);
        return;
    }
    be->linear_fwd(be, y, x, &m->layers[l].proj[t], N, (size_t)in, (size_t)out);
    if (zen_lora_has(lo, t)) {
        zk_dropout drop = lora_dropout(lo, a, l, t);
        be->lora_fwd(be, y, u, x, zen_lora_A(lo, lo->params, l, t), zen_lora_B(lo, lo->params, l, t), N,
                     (size_t)in, (size_t)out, (size_t)lo->r, lo->scale, &drop);
        /* DoRA: y = g (x W^T + s x A^T B^T), g = m / n per output column */
        if (lo->dora) be->scale_cols(be, y, y, zen_lora_G(lo, lo->dora_g, l, t), N, (size_t)out, 0);
    }
}

static void layer_forward(const zen_model *m, const zen_lora *lo, zen_acts *a, int l,
                          zen_layer_acts *s, const void *x_in, void *x_out) {
    zk_backend *be = m->be;
    const zen_config *c = &m->cfg;
    const zen_layer_weights *w = &m->layers[l];
    size_t B = a->B, T = a->T, N = B * T, C = (size_t)c->hidden, F = (size_t)c->intermediate;
    size_t nh = (size_t)c->heads, nkv = (size_t)c->kv_heads, hd = (size_t)c->head_dim;

    /* attention block */
    be->rmsnorm_fwd(be, s->xn1, s->rstd1, x_in, w->attn_norm, N, C, c->rms_eps);
    project(m, lo, a, l, ZT_Q, s->q_pre, s->xn1, s->lora_u[ZT_Q]);
    project(m, lo, a, l, ZT_K, s->k_pre, s->xn1, s->lora_u[ZT_K]);
    project(m, lo, a, l, ZT_V, s->v, s->xn1, s->lora_u[ZT_V]);
    be->rmsnorm_fwd(be, s->q, s->rstd_q, s->q_pre, w->q_norm, N * nh, hd, c->rms_eps);
    be->rmsnorm_fwd(be, s->k, s->rstd_k, s->k_pre, w->k_norm, N * nkv, hd, c->rms_eps);
    be->rope_fwd(be, s->q, a->pos, N, a->max_T, nh, hd, c->rope_theta);
    be->rope_fwd(be, s->k, a->pos, N, a->max_T, nkv, hd, c->rope_theta);
    if (a->sh.layout) { /* shared prefixes: attention on the gathered layout, each row's output taken back */
        size_t X = a->sh.layout->att_rows;
        be->gather_rows(be, a->sh.q, s->q, a->sh.from, X, nh * hd);
        be->gather_rows(be, a->sh.k, s->k, a->sh.from, X, nkv * hd);
        be->gather_rows(be, a->sh.v, s->v, a->sh.from, X, nkv * hd);
        be->attention_fwd(be, a->sh.att, s->lse, a->sh.q, a->sh.k, a->sh.v, a->sh.seg, 1, X, nh, nkv, hd);
        be->gather_rows(be, s->att, a->sh.att, a->sh.out, N, nh * hd);
    } else {
        be->attention_fwd(be, s->att, s->lse, s->q, s->k, s->v, a->seg, B, T, nh, nkv, hd);
    }
    void *o_out = s->o_out ? s->o_out : a->tmp_c; /* DoRA keeps it for dm */
    project(m, lo, a, l, ZT_O, o_out, s->att, s->lora_u[ZT_O]);
    be->add(be, s->x_mid, x_in, o_out, N * C);

    /* MLP block */
    be->rmsnorm_fwd(be, s->xn2, s->rstd2, s->x_mid, w->ffn_norm, N, C, c->rms_eps);
    project(m, lo, a, l, ZT_GATE, s->gate, s->xn2, s->lora_u[ZT_GATE]);
    project(m, lo, a, l, ZT_UP, s->up, s->xn2, s->lora_u[ZT_UP]);
    be->swiglu_fwd(be, s->h, s->gate, s->up, N * F);
    void *down_out = s->down_out ? s->down_out : a->tmp_c;
    project(m, lo, a, l, ZT_DOWN, down_out, s->h, s->lora_u[ZT_DOWN]);
    be->add(be, x_out, s->x_mid, down_out, N * C);
}

/* ---------------- backward ---------------- */

/* dx (+)= dy W  and the LoRA gradients of projection t; x is its saved
 * input, y its saved output (DoRA: dm = sum_n dy y / m, then the rest of
 * the backward runs on dz = g dy) */
static void project_backward(const zen_model *m, const zen_lora *lo, zen_acts *a, int l,
                             zen_target t, void *dx, const void *dy, const void *x, const float *u,
                             int accumulate, const void *y) {
    zk_backend *be = m->be;
    size_t N = a->B * a->T;
    int in, out;
    zen_target_dims(&m->cfg, t, &in, &out);
    if (dora_peft_dropout(lo, a, t)) {
        dora_dropout_bwd(m, lo, a, l, t, dx, dy, x, u, accumulate);
        return;
    }
    if (zen_lora_has(lo, t) && lo->dora) {
        be->col_dot(be, zen_lora_M(lo, lo->grads, l, t), dy, y, zen_lora_G(lo, lo->dora_inv_m, l, t), N, (size_t)out);
        be->scale_cols(be, a->dora_dz, dy, zen_lora_G(lo, lo->dora_g, l, t), N, (size_t)out, 0);
        dy = a->dora_dz;
    }
    be->linear_bwd(be, dx, dy, &m->layers[l].proj[t], N, (size_t)in, (size_t)out, accumulate);
    if (zen_lora_has(lo, t)) {
        zk_dropout drop = lora_dropout(lo, a, l, t);
        be->lora_bwd(be, dx, zen_lora_A(lo, lo->grads, l, t), zen_lora_B(lo, lo->grads, l, t), a->dlora_u,
                     dy, x, u, zen_lora_A(lo, lo->params, l, t), zen_lora_B(lo, lo->params, l, t), N,
                     (size_t)in, (size_t)out, (size_t)lo->r, lo->scale, &drop);
    }
}

/* The attention backward on a shared-prefix layout: each row's output
 * gradient goes to the attention row it came from (a prefix's other reads
 * get 0), the layout's q, k, v and output are gathered again from the saved
 * rows (a prefix row's further outputs are only multiplied by their zero
 * gradient), and dq, dk, dv come back from the rows' own reads; each further
 * read of a prefix row adds its k and v gradient (its q gradient is 0). */
static void shared_attention_bwd(const zen_model *m, zen_acts *a, const zen_layer_acts *s) {
    zk_backend *be = m->be;
    const zen_config *c = &m->cfg;
    const zen_shared_layout *sl = a->sh.layout;
    size_t N = a->B * a->T, X = sl->att_rows, S = sl->twice, ab = be->act_bytes;
    size_t qd = (size_t)c->heads * (size_t)c->head_dim, kvd = (size_t)c->kv_heads * (size_t)c->head_dim;
    be->zero(be, a->sh.datt, X * qd * ab);
    be->scatter_rows(be, a->sh.datt, a->datt, a->sh.out, N, qd);
    be->gather_rows(be, a->sh.att, s->att, a->sh.from, X, qd);
    be->gather_rows(be, a->sh.q, s->q, a->sh.from, X, qd);
    be->gather_rows(be, a->sh.k, s->k, a->sh.from, X, kvd);
    be->gather_rows(be, a->sh.v, s->v, a->sh.from, X, kvd);
    be->attention_bwd(be, a->sh.dq, a->sh.dk, a->sh.dv, a->sh.datt, a->sh.att, s->lse, a->sh.q, a->sh.k, a->sh.v,
                      a->sh.seg, 1, X, (size_t)c->heads, (size_t)c->kv_heads, (size_t)c->head_dim);
    be->gather_rows(be, a->dq, a->sh.dq, a->sh.out, N, qd);
    be->gather_rows(be, a->dk, a->sh.dk, a->sh.out, N, kvd);
    be->gather_rows(be, a->dv, a->sh.dv, a->sh.out, N, kvd);
    for (size_t r = 0; S && r < zen_shared_again(sl); r++) { /* each further read of the prefixes, in order */
        be->gather_rows(be, a->sh.again_rows, a->sh.dk, a->sh.again + r * S, S, kvd);
        be->add(be, a->dk, a->dk, a->sh.again_rows, S * kvd);
        be->gather_rows(be, a->sh.again_rows, a->sh.dv, a->sh.again + r * S, S, kvd);
        be->add(be, a->dv, a->dv, a->sh.again_rows, S * kvd);
    }
}

/* On entry a->dres holds dLoss/dx_out of layer l; on exit dLoss/dx_in. */
static void layer_backward(const zen_model *m, const zen_lora *lo, zen_acts *a, int l,
                           const zen_layer_acts *s, const void *x_in) {
    zk_backend *be = m->be;
    const zen_config *c = &m->cfg;
    const zen_layer_weights *w = &m->layers[l];
    size_t B = a->B, T = a->T, N = B * T, C = (size_t)c->hidden, F = (size_t)c->intermediate;
    size_t nh = (size_t)c->heads, nkv = (size_t)c->kv_heads, hd = (size_t)c->head_dim;

    /* MLP block: x_out = x_mid + down(h) */
    project_backward(m, lo, a, l, ZT_DOWN, a->dh, a->dres, s->h, s->lora_u[ZT_DOWN], 0, s->down_out);
    be->swiglu_bwd(be, a->dg, a->du, a->dh, s->gate, s->up, N * F);
    project_backward(m, lo, a, l, ZT_GATE, a->dxn, a->dg, s->xn2, s->lora_u[ZT_GATE], 0, s->gate);
    project_backward(m, lo, a, l, ZT_UP, a->dxn, a->du, s->xn2, s->lora_u[ZT_UP], 1, s->up);
    /* dres becomes dLoss/dx_mid: the residual path plus the norm's input gradient */
    be->rmsnorm_bwd(be, a->dres, NULL, a->dxn, s->x_mid, s->rstd2, w->ffn_norm, N, C, 1);

    /* attention block: x_mid = x_in + o(att) */
    project_backward(m, lo, a, l, ZT_O, a->datt, a->dres, s->att, s->lora_u[ZT_O], 0, s->o_out);
    if (a->sh.layout) {
        shared_attention_bwd(m, a, s);
    } else {
        be->attention_bwd(be, a->dq, a->dk, a->dv, a->datt, s->att, s->lse, s->q, s->k, s->v, a->seg, B, T, nh,
                          nkv, hd);
    }
    be->rope_bwd(be, a->dq, a->pos, N, a->max_T, nh, hd, c->rope_theta);
    be->rope_bwd(be, a->dk, a->pos, N, a->max_T, nkv, hd, c->rope_theta);
    be->rmsnorm_bwd(be, a->dq_pre, NULL, a->dq, s->q_pre, s->rstd_q, w->q_norm, N * nh, hd, 0);
    be->rmsnorm_bwd(be, a->dk_pre, NULL, a->dk, s->k_pre, s->rstd_k, w->k_norm, N * nkv, hd, 0);
    project_backward(m, lo, a, l, ZT_Q, a->dxn, a->dq_pre, s->xn1, s->lora_u[ZT_Q], 0, s->q_pre);
    project_backward(m, lo, a, l, ZT_K, a->dxn, a->dk_pre, s->xn1, s->lora_u[ZT_K], 1, s->k_pre);
    project_backward(m, lo, a, l, ZT_V, a->dxn, a->dv, s->xn1, s->lora_u[ZT_V], 1, s->v);
    be->rmsnorm_bwd(be, a->dres, NULL, a->dxn, x_in, s->rstd1, w->attn_norm, N, C, 1);
}

/* ---------------- the whole model ---------------- */

static int check_tokens(const int32_t *ids, size_t N, size_t T, int vocab, const char *what) {
    for (size_t i = 0; i < N; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return zen_fail(ZEN_ERR_INPUT,
                            "%s token id %d at sequence %zu position %zu is outside the model's vocab "
                            "[0, %d)", what, ids[i], i / T, i % T, vocab);
    return 0;
}

/* checks the segments of a batch: per sequence, seg[t] <= t and never
 * decreasing, pos[t] = t - seg[t] below max_T (what the kernels rely on) */
static int check_segments(const int32_t *pos, const int32_t *seg, size_t B, size_t T, size_t max_T) {
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++) {
            int32_t s = seg[b * T + t];
            if (s < 0 || (size_t)s > t || (t && s < seg[b * T + t - 1]) || pos[b * T + t] != (int32_t)t - s ||
                (size_t)pos[b * T + t] >= max_T)
                return zen_fail(ZEN_ERR_INTERNAL, "batch segments are inconsistent at sequence %zu position %zu", b, t);
        }
    return 0;
}

/* checks a shared-prefix layout against the rows' positions (what the
 * kernels and exactness rely on): segments as kernels.h wants them, each no
 * longer than max_T; every attention row reads a row whose position is its
 * offset in its segment; every row's output comes from one of its reads;
 * *exact_backward = every row is read once, and rows 0 .. twice-1
 * again_reads more times at att_again (what the backward sums) */
static int check_shared(const zen_shared_layout *sl, const int32_t *pos, size_t N, size_t max_rows, size_t max_T,
                        int *exact_backward) {
    size_t X = sl->att_rows;
    if (X < 1 || X > max_rows || sl->twice > N)
        return zen_fail(ZEN_ERR_INTERNAL, "shared layout: %zu attention rows (planned %zu), %zu read again of %zu", X,
                        max_rows, sl->twice, N);
    int32_t *reads = zen_calloc(N ? N : 1, sizeof(int32_t));
    if (!reads) return ZEN_ERR_INTERNAL;
    int rc = 0;
    for (size_t x = 0; x < X && !rc; x++) {
        int32_t sg = sl->att_seg[x], from = sl->att_from[x];
        int starts = x == 0 || sg != sl->att_seg[x - 1];
        if (sg < 0 || (size_t)sg > x || (starts && (size_t)sg != x) || x - (size_t)sg >= max_T || from < 0 ||
            (size_t)from >= N || pos[from] != (int32_t)(x - (size_t)sg))
            rc = zen_fail(ZEN_ERR_INTERNAL, "shared layout: attention row %zu is inconsistent", x);
        else
            reads[from]++;
    }
    *exact_backward = 1;
    for (size_t n = 0; n < N && !rc; n++) {
        int32_t o = sl->att_out[n];
        if (o < 0 || (size_t)o >= X || sl->att_from[o] != (int32_t)n)
            rc = zen_fail(ZEN_ERR_INTERNAL, "shared layout: row %zu takes its output from a row that does not read it", n);
        size_t again = zen_shared_again(sl);
        for (size_t r = 0; n < sl->twice && r < again && !rc; r++) {
            int32_t g = sl->att_again[r * sl->twice + n];
            if (g < 0 || (size_t)g >= X || g == o || sl->att_from[g] != (int32_t)n)
                rc = zen_fail(ZEN_ERR_INTERNAL, "shared layout: row %zu's read %zu is inconsistent", n, r + 2);
        }
        if (reads[n] != 1 + (n < sl->twice ? (int32_t)again : 0)) *exact_backward = 0;
    }
    free(reads);
    return rc;
}

/* checks the rows and uploads them: tokens, targets, the mask as weights,
 * positions and segments (or a shared layout's index arrays) */
static int upload_rows(const zen_model *m, zen_acts *a, const int32_t *inputs, const int32_t *targets,
                       const uint8_t *mask, const int32_t *pos, const int32_t *seg) {
    zk_backend *be = m->be;
    size_t B = a->B, T = a->T, N = B * T;
    const zen_shared_layout *sl = a->sh.layout;
    if (N > a->max_rows || (!pos && T > a->max_T))
        return zen_fail(ZEN_ERR_INTERNAL, "decoder: a batch of %zu x %zu rows exceeds the planned %zu x %zu", B, T,
                        a->max_rows / a->max_T, a->max_T);
    int rc = check_tokens(inputs, N, T, m->cfg.vocab, "input");
    if (!rc) rc = check_tokens(targets, N, T, m->cfg.vocab, "target");
    if (rc) return rc;
    if (sl) {
        if (!a->sh.enabled || !pos || seg || B != 1)
            return zen_fail(ZEN_ERR_INTERNAL, "decoder: a shared layout needs zen_acts_create_shared, one sequence "
                            "of rows, positions and no segments");
        if ((rc = check_shared(sl, pos, N, a->max_att_rows, a->max_T, &a->sh.exact_backward))) return rc;
    } else {
        if ((!pos) != (!seg)) return zen_fail(ZEN_ERR_INTERNAL, "decoder: positions and segments come together");
        if (pos && (rc = check_segments(pos, seg, B, T, a->max_T))) return rc;
    }
    float *host = zen_malloc(N * sizeof(float)); /* [N] mask as floats */
    int32_t *rows = pos ? NULL : zen_malloc(2 * N * sizeof(int32_t)); /* one segment per sequence: pos t, seg 0 */
    if (!host || (!pos && !rows)) {
        free(host);
        return ZEN_ERR_INTERNAL;
    }
    if (!pos) {
        for (size_t i = 0; i < N; i++) rows[i] = (int32_t)(i % T), rows[N + i] = 0;
        pos = rows, seg = rows + N;
    }
    for (size_t i = 0; i < N; i++) host[i] = mask[i] ? 1.0f : 0.0f;
    be->upload(be, a->weights, host, N * sizeof(float));
    be->upload(be, a->tokens, inputs, N * sizeof(int32_t));
    be->upload(be, a->targets, targets, N * sizeof(int32_t));
    be->upload(be, a->pos, pos, N * sizeof(int32_t));
    if (sl) {
        be->upload(be, a->sh.seg, sl->att_seg, sl->att_rows * sizeof(int32_t));
        be->upload(be, a->sh.from, sl->att_from, sl->att_rows * sizeof(int32_t));
        be->upload(be, a->sh.out, sl->att_out, N * sizeof(int32_t));
        if (sl->twice) be->upload(be, a->sh.again, sl->att_again, zen_shared_again(sl) * sl->twice * sizeof(int32_t));
    } else {
        be->upload(be, a->seg, seg, N * sizeof(int32_t));
    }
    free(rows);
    free(host);
    return 0;
}

static void forward_layers(const zen_model *m, const zen_lora *lo, zen_acts *a) {
    zk_backend *be = m->be;
    const zen_config *c = &m->cfg;
    size_t N = a->B * a->T, C = (size_t)c->hidden, L = (size_t)c->layers;
    be->embedding_fwd(be, a->resid[0], a->tokens, &m->embed, N, C);
    for (size_t l = 0; l < L; l++) {
        zen_layer_acts *s = &a->layer[a->recompute ? 0 : l];
        layer_forward(m, lo, a, (int)l, s, a->resid[l], a->resid[l + 1]);
    }
    be->rmsnorm_fwd(be, a->xf, a->rstd_f, a->resid[L], m->final_norm, N, C, c->rms_eps);
}

static void backward_layers(const zen_model *m, const zen_lora *lo, zen_acts *a) {
    zk_backend *be = m->be;
    const zen_config *c = &m->cfg;
    size_t N = a->B * a->T, C = (size_t)c->hidden, L = (size_t)c->layers;
    be->rmsnorm_bwd(be, a->dres, NULL, a->dxn, a->resid[L], a->rstd_f, m->final_norm, N, C, 0);
    for (size_t l = L; l-- > 0;) {
        zen_layer_acts *s = &a->layer[a->recompute ? 0 : l];
        if (a->recompute) /* run the layer again from its saved input; x_out is discarded */
            layer_forward(m, lo, a, (int)l, s, a->resid[l], a->tmp_c);
        layer_backward(m, lo, a, (int)l, s, a->resid[l]);
    }
}

/* The rows whose loss counts go to the LM head (a masked-out row's logits
 * change nothing; SFT masks out the prompts): with fewer than N of them
 * their indices, targets and weights (row_weight, or 1) are uploaded, and
 * head_pass gathers them into tmp_c, free between the forward and the
 * backward; each chunk's input gradient is written over its rows there,
 * then scattered into dxn (the other rows' gradient is 0). Every row goes
 * through with logits_host (zen eval --save-logits) or when all count. */
static int head_setup(const zen_model *m, zen_acts *a, const int32_t *targets, const uint8_t *mask,
                      const float *row_weight) {
    zk_backend *be = m->be;
    size_t N = a->B * a->T, M = 0;
    for (size_t i = 0; i < N; i++) M += mask[i] != 0;
    a->head_count = M;
    a->head_compact = !a->logits_host && M < N;
    float *w = zen_malloc((N ? N : 1) * sizeof(float)); /* [M] or [N] weights */
    int32_t *rows_host = zen_malloc(2 * (M ? M : 1) * sizeof(int32_t)); /* [M] rows, [M] their targets */
    if (!w || !rows_host) {
        free(w);
        free(rows_host);
        return ZEN_ERR_INTERNAL;
    }
    if (a->head_compact) {
        for (size_t i = 0, j = 0; i < N; i++)
            if (mask[i]) rows_host[j] = (int32_t)i, rows_host[M + j] = targets ? targets[i] : 0,
                         w[j++] = row_weight ? row_weight[i] : 1.0f;
        if (targets) { /* the forward; the backward keeps them */
            be->upload(be, a->head_rows, rows_host, M * sizeof(int32_t));
            be->upload(be, a->head_targets, rows_host + M, M * sizeof(int32_t));
        }
        be->upload(be, a->head_weights, w, M * sizeof(float));
    } else if (row_weight) {
        for (size_t i = 0; i < N; i++) w[i] = mask[i] ? row_weight[i] : 0.0f;
        be->upload(be, a->weights, w, N * sizeof(float));
    }
    free(w);
    free(rows_host);
    return 0;
}

/* the LM head and loss over the head's rows in chunks (logits, losses; with
 * grad_scale != 0 also dxn, the gradient at the final norm's output) */
static void head_pass(const zen_model *m, zen_acts *a, float grad_scale) {
    zk_backend *be = m->be;
    size_t N = a->B * a->T, T = a->T, C = (size_t)m->cfg.hidden, V = (size_t)m->cfg.vocab, ab = be->act_bytes;
    int compact = a->head_compact, backward = grad_scale != 0.0f;
    size_t M = a->head_count;
    const char *head_in = compact ? a->tmp_c : a->xf;
    char *head_dx = compact ? a->tmp_c : a->dxn;
    const int32_t *head_targets = compact ? a->head_targets : a->targets;
    const float *head_weights = compact ? a->head_weights : a->weights;
    float *head_losses = compact ? a->head_losses : a->losses;
    float *head_entropy = !a->entropy_host ? NULL : compact ? a->head_entropy : a->entropy;
    float t = a->head_temperature > 0.0f ? a->head_temperature : 1.0f;
    size_t R = compact ? M : N, chunk = zen_head_rows(N);
    if (compact) be->gather_rows(be, a->tmp_c, a->xf, a->head_rows, M, C);
    for (size_t r0 = 0; r0 < R; r0 += chunk) {
        size_t rows = R - r0 < chunk ? R - r0 : chunk;
        be->linear_fwd(be, a->logits, head_in + r0 * C * ab, &m->lm_head, rows, C, V);
        if (a->logits_host && r0 < T) /* sequence 0's rows */
            be->download_act(be, a->logits_host + r0 * V, a->logits, (T - r0 < rows ? T - r0 : rows) * V);
        be->xent(be, a->logits, head_losses + r0, head_entropy ? head_entropy + r0 : NULL, head_targets + r0,
                 head_weights + r0, rows, V, t, grad_scale);
        if (backward) /* dxf = dlogits lm_head (over this chunk's own rows of tmp_c when compact) */
            be->linear_bwd(be, head_dx + r0 * C * ab, a->logits, &m->lm_head, rows, C, V, 0);
    }
    if (compact) {
        be->zero(be, a->losses, N * sizeof(float));
        be->scatter_rows(be, a->losses, a->head_losses, a->head_rows, M, 1);
        if (head_entropy) {
            be->zero(be, a->entropy, N * sizeof(float));
            be->scatter_rows(be, a->entropy, a->head_entropy, a->head_rows, M, 1);
        }
        if (backward) {
            be->zero(be, a->dxn, N * C * ab);
            be->scatter_rows(be, a->dxn, a->tmp_c, a->head_rows, M, C);
        }
    }
}

int zen_decoder_run(const zen_model *m, const zen_lora *lo, zen_acts *a, const int32_t *inputs,
                    const int32_t *targets, const uint8_t *mask, const int32_t *pos, const int32_t *seg,
                    float grad_scale, uint64_t dropout_seed, double *loss_sum) {
    zk_backend *be = m->be;
    size_t N = a->B * a->T;
    int backward = grad_scale != 0.0f;
    if (backward && lo && !lo->grads)
        return zen_fail(ZEN_ERR_INTERNAL, "decoder backward called without LoRA gradient buffers");
    if (backward && a->sh.layout)
        return zen_fail(ZEN_ERR_INTERNAL, "decoder: a shared layout's backward goes through zen_decoder_backward");
    int rc = upload_rows(m, a, inputs, targets, mask, pos, seg);
    if (!rc) rc = head_setup(m, a, targets, mask, NULL);
    if (rc) return rc;
    a->dropout_seed = dropout_seed;
    forward_layers(m, lo, a);
    /* the head and loss, with the head's backward fused into each chunk */
    head_pass(m, a, grad_scale);
    float *host = zen_malloc(N * sizeof(float)); /* [N] losses */
    if (!host) return ZEN_ERR_INTERNAL;
    be->download(be, host, a->losses, N * sizeof(float));
    double sum = 0.0;
    for (size_t i = 0; i < N; i++)
        if (mask[i]) sum += host[i];
    *loss_sum = sum;
    free(host);
    if (backward) backward_layers(m, lo, a);
    return zk_status(be); /* an op that could not run (out of memory, a device fault) */
}

int zen_decoder_forward(const zen_model *m, const zen_lora *lo, zen_acts *a, const int32_t *inputs,
                        const int32_t *targets, const uint8_t *mask, const int32_t *pos, const int32_t *seg,
                        uint64_t dropout_seed, float *row_loss) {
    zk_backend *be = m->be;
    size_t N = a->B * a->T;
    int rc = upload_rows(m, a, inputs, targets, mask, pos, seg);
    if (!rc) rc = head_setup(m, a, targets, mask, NULL);
    if (rc) return rc;
    a->dropout_seed = dropout_seed;
    forward_layers(m, lo, a);
    /* with head_grad_in_forward the head's backward runs fused, at unit weights */
    a->head_grad_kept = a->head_grad_in_forward;
    head_pass(m, a, a->head_grad_kept ? 1.0f : 0.0f);
    be->download(be, row_loss, a->losses, N * sizeof(float));
    if (a->entropy_host) be->download(be, a->entropy_host, a->entropy, N * sizeof(float));
    for (size_t i = 0; i < N; i++)
        if (!mask[i]) {
            row_loss[i] = 0.0f;
            if (a->entropy_host) a->entropy_host[i] = 0.0f;
        }
    return zk_status(be);
}

int zen_decoder_backward(const zen_model *m, const zen_lora *lo, zen_acts *a, const uint8_t *mask,
                         const float *row_weight) {
    if (lo && !lo->grads) return zen_fail(ZEN_ERR_INTERNAL, "decoder backward called without LoRA gradient buffers");
    if (a->sh.layout && !a->sh.exact_backward)
        return zen_fail(ZEN_ERR_INTERNAL, "decoder: this shared layout reads its prefixes unevenly (forward only)");
    if (a->head_grad_kept) { /* dxn holds each row's unit-weight gradient: scale the rows by their weights */
        size_t N = a->B * a->T;
        float *w = zen_malloc((N ? N : 1) * sizeof(float));
        if (!w) return ZEN_ERR_INTERNAL;
        for (size_t i = 0; i < N; i++) w[i] = mask[i] ? row_weight[i] : 0.0f;
        m->be->upload(m->be, a->weights, w, N * sizeof(float));
        free(w);
        m->be->scale_rows(m->be, a->dxn, a->weights, N, (size_t)m->cfg.hidden);
        a->head_grad_kept = 0;
        backward_layers(m, lo, a);
        return zk_status(m->be);
    }
    int rc = head_setup(m, a, NULL, mask, row_weight);
    if (rc) return rc;
    head_pass(m, a, 1.0f);
    backward_layers(m, lo, a);
    return zk_status(m->be);
}
