/* kernels/cpu/xent_cpu.c: softmax + cross-entropy over a block of logits, fused
 * with its gradient so probabilities are never stored beside the logits:
 *   loss_r = logsumexp(z_r) - z_r[target_r]
 *   dz_r   = (softmax(z_r) - onehot(target_r)) * weight_r * grad_scale   (in place)
 */
#include <math.h>

#include "cpu_ops.h"
#include "fast_exp.h"

void cpu_xent(zk_backend *be, void *logits_, float *losses, const int32_t *targets,
              const float *weights, size_t rows, size_t V, float grad_scale) {
    (void)be;
    float *logits = logits_; /* [rows, V] */
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float *z = logits + r * V;
        float m = -INFINITY;
        for (size_t j = 0; j < V; j++)
            if (z[j] > m) m = z[j];
        double lse = (double)m + log((double)zk_sum_exp(z, V, m));
        losses[r] = (float)(lse - (double)z[targets[r]]);
        if (grad_scale != 0.0f) {
            float coeff = weights[r] * grad_scale;
            if (coeff == 0.0f) {
                for (size_t j = 0; j < V; j++) z[j] = 0.0f;
            } else {
                float lse_f = (float)lse;
                for (size_t j = 0; j < V; j++) z[j] = zk_expf(z[j] - lse_f) * coeff;
                z[targets[r]] -= coeff;
            }
        }
    }
}
