/* model/dora.h: DoRA (weight-decomposed LoRA) as PEFT defines it
 * (peft/tuners/lora/dora.py, variants.py):
 *   y = x W^T + (g - 1) * (x W^T) + g * s (x A^T) B^T,  g = m / n per output row,
 *   n = ||W + s B A|| (row-wise L2), treated as a constant in backward;
 * m [out] is trained, and starts as n (= ||W|| per row with B = 0). With
 * LoRA dropout on, PEFT feeds the dropped-out x to the (g - 1) term too
 * (variants.py: base_result = None, x = dropout(x)), which costs a second
 * matmul through W each way; lora.dora_clean_base keeps that term on x
 * (y = g (x W^T + s dropout(x) A^T B^T), mlx-lm's DoRA), for one.
 *
 * n changes only when A and B do, so it is computed once per optimizer
 * step, not per micro-batch or row, without forming B A:
 *   n^2 = ||W_o||^2 + 2 s sum_k B_ok (A W^T)_ko + s^2 B_o (A A^T) B_o^T,
 * where ||W_o||^2 is the base's (one pass over each projection, at set-up,
 * from the weights as the matmuls read them: dequantised a row at a time)
 * and A W^T is one matmul of r rows through W. */
#ifndef ZEN_DORA_H
#define ZEN_DORA_H
#include "lora.h"
#include "weights.h"

/* The fixed part (the base's squared row norms) and the device vectors of
 * a DoRA adapter (lo->dora); then g and 1/m as zen_dora_refresh. With
 * init_magnitude (a fresh adapter) m is set to n first. Needs the
 * backend's scratch for a matmul of r rows (zen_acts_create first). */
int zen_dora_setup(zen_lora *lo, const zen_model *m, int init_magnitude);
/* g = m / n and 1 / m from the adapter's current A, B and m: after every
 * update of the adapter (and after loading one). */
int zen_dora_refresh(zen_lora *lo, const zen_model *m);
/* bytes DoRA adds to a step of `rows` token rows: the kept o and down
 * outputs (every layer's, or one layer's with recompute), dz, the device
 * vectors and A W^T, the magnitudes with their gradients and AdamW
 * moments; with PEFT's dropout (peft_dropout) also every projection's z
 * and dropout(x) with its gradient. */
size_t zen_dora_plan_bytes(const zen_config *cfg, unsigned targets, int r, size_t rows, int recompute, int peft_dropout);

#endif
