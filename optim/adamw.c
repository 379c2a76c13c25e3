/* optim/adamw.c: AdamW and global-norm clipping on top of the backend's kernels. */
#include <math.h>
#include <string.h>

#include "../util/error.h"
#include "adamw.h"

int zen_adamw_create(zen_adamw *opt, zk_backend *be, size_t n, float beta1, float beta2, float eps,
                     float weight_decay, float grad_clip) {
    memset(opt, 0, sizeof *opt);
    opt->be = be;
    opt->n = n;
    opt->beta1 = beta1;
    opt->beta2 = beta2;
    opt->eps = eps;
    opt->weight_decay = weight_decay;
    opt->grad_clip = grad_clip;
    opt->m = be->alloc(be, n * sizeof(float));
    opt->v = be->alloc(be, n * sizeof(float));
    if (!opt->m || !opt->v) {
        zen_adamw_free(opt);
        return ZEN_ERR_INTERNAL;
    }
    be->zero(be, opt->m, n * sizeof(float));
    be->zero(be, opt->v, n * sizeof(float));
    return 0;
}

void zen_adamw_free(zen_adamw *opt) {
    if (opt->be) {
        opt->be->free(opt->be, opt->m);
        opt->be->free(opt->be, opt->v);
    }
    memset(opt, 0, sizeof *opt);
}

double zen_grad_norm(zk_backend *be, const float *grads, size_t n) {
    return sqrt(be->sum_squares(be, grads, n));
}

void zen_adamw_update(zen_adamw *opt, float *params, const float *grads, double grad_norm, float lr) {
    float scale = 1.0f;
    if (opt->grad_clip > 0.0f) {
        double coef = (double)opt->grad_clip / (grad_norm + 1e-6);
        if (coef < 1.0) scale = (float)coef;
    }
    opt->step++;
    opt->be->adamw(opt->be, params, grads, opt->m, opt->v, opt->n, lr, opt->beta1, opt->beta2, opt->eps,
                   opt->weight_decay, scale, opt->step);
}
