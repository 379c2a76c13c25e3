/* objectives/token_batch.c: micro-batches of token sequences (see token_batch.h). */
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "token_batch.h"

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
