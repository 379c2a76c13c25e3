/* train/evaluate.c: evaluation through the objective interface (see evaluate.h). */
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "dist.h"
#include "evaluate.h"

int zen_evaluate(zen_objective *o, const zen_objective_env *e, const zen_dataset *d, int64_t first, int64_t count,
                 double *values, double *tokens) {
    const zen_dist *dist = zen_dist_get();
    const zen_objective_ops *ops = o->ops;
    int64_t B = (int64_t)o->B, batches = (count + B - 1) / B;
    size_t per = (size_t)ops->n_sums + 1; /* each batch's sums and its trained tokens */
    double *sums = zen_calloc((size_t)batches * per + 1, sizeof(double));
    double *pre = zen_calloc((size_t)ops->n_pre, sizeof(double));
    int64_t *ids = zen_malloc((size_t)B * sizeof(int64_t));
    int rc = sums && pre && ids ? 0 : ZEN_ERR_INTERNAL;
    float *logits_host = e->a->logits_host; /* only the first batch's first sequence is kept */
    for (int64_t bi = dist->rank; bi < batches && !rc; bi += dist->size) {
        int64_t n = count - bi * B < B ? count - bi * B : B;
        for (int64_t i = 0; i < n; i++) ids[i] = first + bi * B + i;
        e->a->logits_host = bi == 0 ? logits_host : NULL;
        double *out = sums + (size_t)bi * per;
        int j = o->eval_slot;
        if (!(rc = ops->load(o, j, d, ids, (size_t)n)) && !(rc = ops->pre(o, j, e, pre)))
            rc = ops->run(o, j, e, 0, 0, pre, out);
        out[ops->n_sums] = pre[0];
    }
    e->a->logits_host = logits_host;
    if (!rc) rc = zk_status(e->m->be);
    if (!(rc = zen_dist_agree(rc))) zen_dist_merge_f64(sums, (size_t)batches * per);
    /* the batches' sums in file order, as one process adds them */
    double *total = zen_calloc(per, sizeof(double));
    if (!rc && !total) rc = ZEN_ERR_INTERNAL;
    if (total) zen_objective_zero_sums(o, total);
    for (int64_t bi = 0; bi < batches && !rc; bi++) {
        zen_objective_add_sums(o, total, sums + (size_t)bi * per);
        total[ops->n_sums] += sums[(size_t)bi * per + ops->n_sums];
    }
    if (!rc) {
        ops->values(o, total, values);
        *tokens = total[ops->n_sums];
        if (*tokens == 0) rc = zen_fail(ZEN_ERR_INPUT, "%s: no target with loss_mask 1 to evaluate", d->path);
    }
    free(total);
    free(sums);
    free(pre);
    free(ids);
    return rc;
}
