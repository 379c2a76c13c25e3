/* export/export.h: `zen export`: the base model merged with an adapter
 * (W + s B A computed in fp32, converted once) as a Hugging Face SafeTensors
 * directory or a llama.cpp GGUF file, and the adapter alone as PEFT, a
 * llama.cpp LoRA GGUF, or mlx-lm's layout. Every output streams tensor by
 * tensor and appears under its name only when complete. */
#ifndef ZEN_EXPORT_H
#define ZEN_EXPORT_H
#include <stdint.h>

#include "../formats/gguf.h"
#include "../model/lora.h"

typedef enum { ZEN_EXPORT_SAFETENSORS, ZEN_EXPORT_GGUF, ZEN_EXPORT_PEFT, ZEN_EXPORT_GGUF_LORA, ZEN_EXPORT_MLX } zen_export_format;

typedef struct {
    const char *model_dir;
    const char *adapter_dir; /* NULL: the base model alone (merged formats only) */
    zen_export_format format;
    const char *dtype;       /* NULL: the base model's dtype (f32 for adapters) */
    const char *out;
    uint64_t shard_bytes;
    int no_tokenizer;        /* gguf: write no tokenizer (vocab-less model) */
} zen_export_opts;

/* "safetensors" | "gguf" | "peft" | "gguf-lora" | "mlx"; -1 if unknown */
int zen_export_parse_format(const char *name, zen_export_format *out);
int zen_export(const zen_export_opts *o);

/* the adapter-only formats (export/export_adapter.c): out is the directory
 * (peft, mlx) or the file (gguf-lora); host holds the adapter's A and B */
int zen_export_adapter(const zen_export_opts *o, const zen_model *m, const zen_lora *lo, const float *host,
                       const char *out);

/* the GGUF tokenizer metadata from a model directory's tokenizer.json and
 * tokenizer_config.json, tokens padded to n_vocab with [PADi]; and a GGUF
 * base's own tokenizer keys copied into a merged export of it (export/gguf_vocab.c) */
int zen_gguf_add_tokenizer(gguf_writer *w, const char *model_dir, int n_vocab);
int zen_gguf_copy_tokenizer(gguf_writer *w, const gguf_file *src);

#endif
