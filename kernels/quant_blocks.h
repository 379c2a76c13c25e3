/* kernels/quant_blocks.h: the block-quantized weight layouts zen computes
 * with, each a run of blocks along a matrix row (little-endian, f16 = IEEE
 * half), with its row dequantiser; the quantisers zen applies at load time
 * (--base-quant) and on export.
 *
 *   Q8_0  34 bytes per 32:  f16 d; int8 q[32]              x = d q
 *   Q4_0  18 bytes per 32:  f16 d; u8 qs[16]               x = d (q - 8),
 *         q[j] = qs[j] & 15, q[j + 16] = qs[j] >> 4
 *   Q5_0  22 bytes per 32:  f16 d; u32 qh; u8 qs[16]       x = d (q - 16)
 *   Q5_1  24 bytes per 32:  f16 d, m; u32 qh; u8 qs[16]    x = d q + m
 *   Q4_K 144 bytes per 256, Q5_K 176, Q6_K 210: ggml's super-blocks
 *         (formats/kquant.c describes them and quantises them)
 *   NF4   36 bytes per 64:  f32 absmax; u8 qs[32]          x = absmax NF4[q],
 *         bitsandbytes' NF4 code (QLoRA: the 16 quantiles of N(0, 1) scaled
 *         to [-1, 1]); element 2j in the high nibble of qs[j], 2j + 1 in the
 *         low one, as bitsandbytes packs them; q is the code whose interval
 *         between midpoints holds x / absmax (x * (1 / absmax), as
 *         bitsandbytes computes it). The absmax is not quantised again
 *         (no double quantisation): 4.5 bits per weight.
 * The ggml layouts equal ggml-common.h's byte for byte, and the dequantisers
 * compute as ggml's dequantize_row_* do (this file is built without fused
 * multiply-add). */
#ifndef ZK_QUANT_BLOCKS_H
#define ZK_QUANT_BLOCKS_H
#include <stddef.h>
#include <stdint.h>

/* NF4's 16 levels, lowest first */
extern const float zk_nf4_levels[16];

/* a little-endian IEEE half at p (the scales of ggml's blocks) */
void zk_put_f16le(uint8_t *p, float v);
float zk_get_f16le(const uint8_t *p);
/* the 6-bit scale and min of sub-block j of a Q4_K / Q5_K block's 12 packed bytes */
void zk_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m);

/* n fp32 values (a multiple of the block) to blocks, and blocks to n fp32 */
void zk_quantize_q8_0(void *dst, const float *x, size_t n);
void zk_quantize_q4_0(void *dst, const float *x, size_t n);
void zk_quantize_nf4(void *dst, const float *x, size_t n);
void zk_dequantize_q8_0(float *y, const void *src, size_t n);
void zk_dequantize_q4_0(float *y, const void *src, size_t n);
void zk_dequantize_q5_0(float *y, const void *src, size_t n);
void zk_dequantize_q5_1(float *y, const void *src, size_t n);
void zk_dequantize_q4_k(float *y, const void *src, size_t n);
void zk_dequantize_q5_k(float *y, const void *src, size_t n);
void zk_dequantize_q6_k(float *y, const void *src, size_t n);
void zk_dequantize_nf4(float *y, const void *src, size_t n);

#endif
