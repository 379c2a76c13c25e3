/* kernels/cpu/xent_cpu.c: softmax + cross-entropy over a block of logits, fused
 * with its gradient so probabilities are never stored beside the logits:
 *   loss_r = logsumexp(z_r) - z_r[target_r]
 *   dz_r   = (softmax(z_r) - onehot(target_r)) * weight_r * grad_scale   (in place)
 * and the same over z_r / t with a temperature t, with the entropy if asked. */
#include <math.h>

#include "cpu_ops.h"
#include "fast_exp.h"

/* a row divided by temperature t, or with its entropy: the same sums over z / t, in double */
static void xent_tempered(float *z, float *loss, float *entropy, int32_t target, float coeff, size_t V, float t) {
    float m = -INFINITY, inv_t = 1.0f / t;
    for (size_t j = 0; j < V; j++)
        if (z[j] > m) m = z[j];
    double sum = 0.0, spread = 0.0; /* sum_j e_j, sum_j e_j (z_j - m) / t with e_j = exp((z_j - m) / t) */
    for (size_t j = 0; j < V; j++) {
        float d = (z[j] - m) * inv_t;
        double e = (double)zk_expf(d);
        sum += e, spread += e * (double)d;
    }
    double lse = (double)m * (double)inv_t + log(sum);
    *loss = (float)(lse - (double)z[target] * (double)inv_t);
    if (entropy) *entropy = (float)(log(sum) - spread / sum);
    if (coeff == 0.0f) return;
    float lse_f = (float)lse, scaled = coeff * inv_t;
    for (size_t j = 0; j < V; j++) z[j] = zk_expf(z[j] * inv_t - lse_f) * scaled;
    z[target] -= scaled;
}

void cpu_xent(zk_backend *be, void *logits_, float *losses, float *entropy, const int32_t *targets,
              const float *weights, size_t rows, size_t V, float t, float grad_scale) {
    (void)be;
    float *logits = logits_; /* [rows, V] */
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float *z = logits + r * V;
        if (t != 1.0f || entropy) {
            float coeff = grad_scale != 0.0f ? weights[r] * grad_scale : 0.0f;
            if (grad_scale != 0.0f && coeff == 0.0f) {
                xent_tempered(z, &losses[r], entropy ? &entropy[r] : NULL, targets[r], 0.0f, V, t);
                for (size_t j = 0; j < V; j++) z[j] = 0.0f;
            } else {
                xent_tempered(z, &losses[r], entropy ? &entropy[r] : NULL, targets[r], coeff, V, t);
            }
            continue;
        }
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
