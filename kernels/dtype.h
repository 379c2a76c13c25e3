/* kernels/dtype.h: the storage types of tensors, in one table of type
 * traits (kernels/dtype.c): every type a SafeTensors or GGUF file can name,
 * with its elements per block and bytes per block, the ggml id and the
 * SafeTensors name, and, for the types zen computes with (zen_dtype), the
 * row dequantiser (and the quantiser where zen writes the type itself).
 * Computing is fp32 (or bf16 GEMM inputs); a weight is dequantised a chunk
 * of rows at a time. The scalar f16 and bf16 conversions are kernels/half.h's. */
#ifndef ZEN_DTYPE_H
#define ZEN_DTYPE_H
#include <stddef.h>
#include <stdint.h>

#include "half.h"

/* the types zen stores weights in and computes from */
typedef enum {
    ZEN_F32 = 0, ZEN_F16 = 1, ZEN_BF16 = 2,
    ZEN_Q8_0, ZEN_Q4_0, ZEN_Q5_0, ZEN_Q5_1, ZEN_Q4_K, ZEN_Q5_K, ZEN_Q6_K, ZEN_NF4,
    ZEN_NUM_DTYPES
} zen_dtype;

typedef struct {
    const char *name;     /* "F32", "BF16", "Q4_K", "NF4": as SafeTensors / ggml spell it */
    int dtype;            /* its zen_dtype, or -1: a type files may hold that zen does not compute with */
    int ggml;             /* its ggml_type id, or -1 (NF4; SafeTensors' integer types) */
    int safetensors;      /* 1 if SafeTensors files name it */
    uint32_t block;       /* elements per block (1 for plain types) */
    uint32_t block_bytes; /* bytes per block */
    /* count elements (a multiple of block) to fp32; NULL where zen does not read it */
    void (*to_f32)(float *dst, const void *src, size_t count);
    /* fp32 to the type; NULL where zen does not write it here (the k-quants and
     * Q5_0 / Q5_1 are formats/kquant.c's) */
    void (*from_f32)(void *dst, const float *src, size_t count);
} zen_type_traits;

/* the traits of a zen_dtype */
const zen_type_traits *zen_dtype_traits(zen_dtype t);
/* the type of a ggml id, or of a SafeTensors dtype name; NULL if unknown */
const zen_type_traits *zen_type_by_ggml(uint32_t ggml_id);
const zen_type_traits *zen_type_by_safetensors(const char *name);
/* a zen_dtype by name (case-insensitive: "f32", "bf16", "q4_0", "nf4"); -1 if unknown */
int zen_dtype_parse(const char *name, zen_dtype *out);
/* the same for the plain float types only (f32, f16, bf16): what a
 * SafeTensors tensor or a float --dtype may be; -1 otherwise */
int zen_dtype_parse_float(const char *name, zen_dtype *out);
/* "F32", "Q4_0", "NF4" */
const char *zen_dtype_name(zen_dtype t);

static inline uint32_t zen_dtype_block(zen_dtype t) { return zen_dtype_traits(t)->block; }
/* bytes of count elements (count a multiple of the block) */
static inline size_t zen_dtype_bytes(zen_dtype t, size_t count) {
    const zen_type_traits *tr = zen_dtype_traits(t);
    return count / tr->block * tr->block_bytes;
}
/* 1 for the block-quantised types */
static inline int zen_dtype_is_quant(zen_dtype t) { return zen_dtype_traits(t)->block > 1; }

/* count elements of src (stored as t; count a multiple of its block) into fp32 dst */
void zen_widen(float *dst, const void *src, zen_dtype t, size_t count);
/* count fp32 elements into dst stored as t (a type with a from_f32) */
void zen_narrow(void *dst, const float *src, zen_dtype t, size_t count);

#endif
