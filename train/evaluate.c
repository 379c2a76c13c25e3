/* train/evaluate.c: reading batches and evaluating the mean loss of a dataset. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "dist.h"
#include "evaluate.h"

int zen_batch_alloc(zen_batch *b, size_t B, size_t T) {
    b->B = B;
    b->T = T;
    b->inputs = zen_malloc(B * T * sizeof(int32_t));
    b->targets = zen_malloc(B * T * sizeof(int32_t));
    b->mask = zen_malloc(B * T);
    b->pos = zen_malloc(B * T * sizeof(int32_t));
    b->seg = zen_malloc(B * T * sizeof(int32_t));
    b->run_buf = zen_malloc(4 * B * T * sizeof(int32_t));
    b->run_mask = zen_malloc(B * T);
    if (!b->inputs || !b->targets || !b->mask || !b->pos || !b->seg || !b->run_buf || !b->run_mask) {
        zen_batch_free(b);
        return ZEN_ERR_INTERNAL;
    }
    return 0;
}

void zen_batch_free(zen_batch *b) {
    free(b->inputs);
    free(b->targets);
    free(b->mask);
    free(b->pos);
    free(b->seg);
    free(b->run_buf);
    free(b->run_mask);
    memset(b, 0, sizeof *b);
}

int zen_batch_read_row(zen_batch *b, const zen_dataset *d, size_t row, int64_t seq) {
    size_t off = row * b->T;
    return zen_dataset_read(d, seq, b->T, b->inputs + off, b->targets + off, b->mask + off, b->pos + off,
                            b->seg + off);
}

size_t zen_batch_gather_live(const zen_batch *b) {
    size_t B = b->B, T = b->T, n = 0;
    int32_t *in = b->run_buf, *tg = in + B * T, *pos = tg + B * T, *seg = pos + B * T; /* each [<= B*T] */
    for (size_t r = 0; r < B; r++) {
        const size_t base = r * T;
        for (size_t s = 0, e; s < T; s = e) {
            for (e = s + 1; e < T && b->seg[base + e] == b->seg[base + s];) e++; /* the segment [s, e) */
            size_t keep = e;
            while (keep > s && !b->mask[base + keep - 1]) keep--;
            size_t rows = keep - s;
            memcpy(in + n, b->inputs + base + s, rows * sizeof(int32_t));
            memcpy(tg + n, b->targets + base + s, rows * sizeof(int32_t));
            memcpy(pos + n, b->pos + base + s, rows * sizeof(int32_t));
            memcpy(b->run_mask + n, b->mask + base + s, rows);
            for (size_t i = 0; i < rows; i++) seg[n + i] = (int32_t)n;
            n += rows;
        }
    }
    return n;
}

int zen_batch_run(const zen_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a, float grad_scale,
                  uint64_t dropout_seed, double *loss_sum) {
    size_t B = b->B, T = b->T, N = B * T;
    *loss_sum = 0.0;
    size_t n = a->logits_host ? N : zen_batch_gather_live(b); /* --save-logits wants every row */
    if (n == 0) return 0;
    if (n == N)
        return zen_decoder_run(m, lo, a, b->inputs, b->targets, b->mask, b->pos, b->seg, grad_scale, dropout_seed,
                               loss_sum);
    const int32_t *in = b->run_buf, *tg = in + N, *pos = tg + N, *seg = pos + N;
    a->B = 1, a->T = n; /* one sequence of the live rows: the kernels take it as the batch (kernels.h) */
    int rc = zen_decoder_run(m, lo, a, in, tg, b->run_mask, pos, seg, grad_scale, dropout_seed, loss_sum);
    a->B = B, a->T = T;
    return rc;
}

size_t zen_batch_mask_count(const zen_batch *b) {
    size_t n = 0;
    for (size_t i = 0; i < b->B * b->T; i++) n += b->mask[i];
    return n;
}

int zen_evaluate(const zen_model *m, const zen_lora *lo, zen_acts *a, const zen_dataset *d,
                 int64_t first, int64_t count, double *mean_loss, size_t *tokens) {
    const zen_dist *dist = zen_dist_get();
    int64_t batches = (count + (int64_t)a->B - 1) / (int64_t)a->B;
    /* each batch's loss sum and target count, from the rank that ran it */
    double *sums = zen_calloc((size_t)batches + 1, sizeof(double));
    int64_t *counts = zen_calloc((size_t)batches + 1, sizeof(int64_t));
    zen_batch b;
    int rc = sums && counts ? zen_batch_alloc(&b, a->B, a->T) : ZEN_ERR_INTERNAL;
    if (rc) {
        free(sums);
        free(counts);
        return zen_dist_agree(rc);
    }
    float *logits_host = a->logits_host; /* only the first batch's sequence 0 is kept */
    /* rank r runs batches r, r + N, ... */
    for (int64_t bi = dist->rank; bi < batches && !rc; bi += dist->size) {
        int64_t s = bi * (int64_t)a->B;
        a->logits_host = s == 0 ? logits_host : NULL;
        for (size_t row = 0; row < a->B && !rc; row++) {
            if (s + (int64_t)row < count) {
                rc = zen_batch_read_row(&b, d, row, first + s + (int64_t)row);
            } else { /* padding: a valid token, nothing counted, one segment */
                memset(b.inputs + row * a->T, 0, a->T * sizeof(int32_t));
                memset(b.targets + row * a->T, 0, a->T * sizeof(int32_t));
                memset(b.mask + row * a->T, 0, a->T);
                for (size_t t = 0; t < a->T; t++) b.pos[row * a->T + t] = (int32_t)t, b.seg[row * a->T + t] = 0;
            }
        }
        if (!rc) rc = zen_batch_run(&b, m, lo, a, 0.0f, 0, &sums[bi]);
        counts[bi] = (int64_t)zen_batch_mask_count(&b);
    }
    a->logits_host = logits_host;
    zen_batch_free(&b);
    if (!rc) rc = zk_status(m->be);
    if (!(rc = zen_dist_agree(rc))) {
        zen_dist_merge_f64(sums, (size_t)batches);
        zen_dist_sum_i64(counts, (int)batches);
    }
    /* the batches' sums in file order, as one process adds them */
    double sum = 0.0;
    size_t n = 0;
    for (int64_t bi = 0; bi < batches && !rc; bi++) {
        sum += sums[bi];
        n += (size_t)counts[bi];
    }
    free(sums);
    free(counts);
    if (rc) return rc;
    if (n == 0) return zen_fail(ZEN_ERR_INPUT, "%s: no target token with loss_mask 1 to evaluate", d->path);
    *mean_loss = sum / (double)n;
    *tokens = n;
    return 0;
}
