/* optim/adamw.h: AdamW with decoupled weight decay and bias correction over
 * the flat fp32 LoRA parameter buffer, with global gradient-norm clipping.
 * The moments live on the backend's device beside the parameters. */
#ifndef ZEN_ADAMW_H
#define ZEN_ADAMW_H
#include <stddef.h>

#include "../kernels/kernels.h"

typedef struct {
    zk_backend *be;
    size_t n;            /* parameters */
    float *m, *v;        /* [n] device fp32: first and second moments */
    long step;           /* updates done so far */
    float beta1, beta2, eps, weight_decay;
    float grad_clip;     /* max global L2 norm; 0 disables clipping */
} zen_adamw;

int zen_adamw_create(zen_adamw *opt, zk_backend *be, size_t n, float beta1, float beta2, float eps,
                     float weight_decay, float grad_clip);
void zen_adamw_free(zen_adamw *opt);
/* Global L2 norm of the gradients (before clipping). */
double zen_grad_norm(zk_backend *be, const float *grads, size_t n);
/* One update with learning rate lr. Clips the gradients to grad_clip by the
 * given norm (as torch.nn.utils.clip_grad_norm_: scale max/(norm + 1e-6) when
 * below 1), then applies AdamW. */
void zen_adamw_update(zen_adamw *opt, float *params, const float *grads, double grad_norm, float lr);

#endif
