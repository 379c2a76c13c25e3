/* cli/cmd_info.c: `zen info FILE`: what is inside a SafeTensors file or model
 * directory, a GGUF file (every key and tensor with type and shape) or an HDF5
 * dataset; the tool to reach for when an engine refuses a file. */
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../data/dataset.h"
#include "../kernels/kernels.h"
#include "../formats/gguf.h"
#include "../formats/safetensors.h"
#include "../util/error.h"
#include "../util/file.h"
#include "commands.h"

static void print_scalar(gguf_value_type t, const unsigned char *p) {
    switch (t) {
    case GGUF_U8: printf("%u", *p); break;
    case GGUF_I8: printf("%d", (int8_t)*p); break;
    case GGUF_BOOL: printf("%s", *p ? "true" : "false"); break;
    case GGUF_U16: { uint16_t v; memcpy(&v, p, 2); printf("%u", v); break; }
    case GGUF_I16: { int16_t v; memcpy(&v, p, 2); printf("%d", v); break; }
    case GGUF_U32: { uint32_t v; memcpy(&v, p, 4); printf("%u", v); break; }
    case GGUF_I32: { int32_t v; memcpy(&v, p, 4); printf("%d", v); break; }
    case GGUF_F32: { float v; memcpy(&v, p, 4); printf("%g", v); break; }
    case GGUF_U64: { uint64_t v; memcpy(&v, p, 8); printf("%llu", (unsigned long long)v); break; }
    case GGUF_I64: { int64_t v; memcpy(&v, p, 8); printf("%lld", (long long)v); break; }
    case GGUF_F64: { double v; memcpy(&v, p, 8); printf("%g", v); break; }
    default: printf("?");
    }
}

/* a name or value from a file, with control characters escaped so a hostile
 * file cannot write to the terminal (ANSI sequences, carriage returns) */
static void print_escaped(const char *s, size_t max) {
    for (size_t i = 0; s[i] && i < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n') printf("\\n");
        else if (ch == '"') printf("\\\"");
        else if (ch == '\\') printf("\\\\");
        else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
        else putchar(ch);
    }
    if (strlen(s) > max) printf("...");
}

static void print_string(const char *s, size_t max) {
    putchar('"');
    print_escaped(s, max);
    putchar('"');
}

/* a key or tensor name padded to width */
static void print_name(const char *s, int width) {
    int plain = 1;
    for (size_t i = 0; s[i]; i++) plain &= (unsigned char)s[i] >= 0x20 && s[i] != 0x7f && s[i] != '\\' && s[i] != '"';
    if (plain) {
        printf("%-*s", width, s);
        return;
    }
    print_escaped(s, 200);
    putchar(' ');
}

static int info_gguf(const char *path) {
    gguf_file f;
    int rc = gguf_open(&f, path);
    if (rc) return rc;
    printf("%s: GGUF v%u, %llu keys, %llu tensors, alignment %u\n", path, f.version, (unsigned long long)f.n_kv,
           (unsigned long long)f.n_tensors, f.alignment);
    for (uint64_t i = 0; i < f.n_kv; i++) {
        const gguf_kv *kv = &f.kvs[i];
        printf("  ");
        print_name(kv->key, 44);
        if (kv->type == GGUF_ARRAY) {
            printf(" array[%s, %llu] ", gguf_type_name(kv->elem_type), (unsigned long long)kv->count);
            if (kv->elem_type == GGUF_STRING)
                for (uint64_t k = 0; k < kv->count && k < 4; k++) {
                    char *s = gguf_string(kv, k);
                    if (s) print_string(s, 40), putchar(' ');
                    free(s);
                }
            else
                for (uint64_t k = 0; k < kv->count && k < 8; k++) {
                    print_scalar(kv->elem_type, kv->value + k * gguf_scalar_size(kv->elem_type));
                    putchar(' ');
                }
            printf("%s\n", kv->count > (kv->elem_type == GGUF_STRING ? 4u : 8u) ? "..." : "");
        } else {
            printf(" %-6s ", gguf_type_name(kv->type));
            if (kv->type == GGUF_STRING) {
                char *s = gguf_string(kv, 0);
                if (s) print_string(s, 80);
                free(s);
            } else {
                print_scalar(kv->type, kv->value);
            }
            putchar('\n');
        }
    }
    for (uint64_t i = 0; i < f.n_tensors; i++) {
        const gguf_tensor_info *t = &f.tensors[i];
        printf("  tensor ");
        print_name(t->name, 40);
        printf(" %-5s [", ggml_type_name((ggml_type_id)t->type));
        for (uint32_t d = 0; d < t->n_dims; d++) printf(d ? ", %llu" : "%llu", (unsigned long long)t->ne[d]);
        printf("]\n");
    }
    gguf_close(&f);
    return 0;
}

static void print_st_file(const st_file *f) {
    size_t total = 0;
    for (int i = 0; i < f->count; i++) total += (size_t)f->tensors[i].numel;
    printf("%s: SafeTensors, %d tensors, %zu parameters\n", f->path, f->count, total);
    for (int i = 0; i < f->meta_count; i++) {
        printf("  metadata ");
        print_escaped(f->meta_keys[i], 200);
        printf(" = ");
        print_escaped(f->meta_values[i], 200);
        putchar('\n');
    }
    for (int i = 0; i < f->count; i++) {
        const st_tensor *t = &f->tensors[i];
        printf("  ");
        print_name(t->name, 64);
        printf(" %-5s [", t->dtype);
        for (int d = 0; d < t->ndim; d++) printf(d ? ", %lld" : "%lld", (long long)t->shape[d]);
        printf("]\n");
    }
}

static int info_safetensors_dir(const char *dir) {
    char *cfg = zen_path_join(dir, "config.json"), *adapter = zen_path_join(dir, "adapter_model.safetensors");
    int rc = 0;
    if (adapter && !zen_file_exists(adapter)) { /* an mlx-lm adapter (zen export --format mlx) */
        free(adapter);
        adapter = zen_path_join(dir, "adapters.safetensors");
    }
    char *text = NULL;
    if (cfg && zen_file_exists(cfg) && !zen_read_text_file(cfg, &text)) printf("%s:\n%s\n", cfg, text);
    free(text);
    text = NULL;
    if (adapter && zen_file_exists(adapter)) {
        char *acfg = zen_path_join(dir, "adapter_config.json");
        if (acfg && !zen_read_text_file(acfg, &text)) printf("%s:\n%s\n", acfg, text);
        free(text);
        free(acfg);
        st_file f;
        if (!(rc = st_open(&f, adapter))) {
            print_st_file(&f);
            st_close(&f);
        }
    } else {
        st_set s;
        if (!(rc = st_set_open_dir(&s, dir))) {
            for (int i = 0; i < s.count; i++) print_st_file(&s.files[i]);
            st_set_close(&s);
        }
    }
    free(cfg);
    free(adapter);
    return rc;
}

static int info_hdf5(const char *path) {
    zen_dataset d = {0};
    int rc = zen_dataset_open(&d, path, INT32_MAX);
    if (rc) return rc;
    printf("%s: zen-tokens-v1 dataset, %lld tokens (int32), vocab_size %lld, loss_mask %s\n", path,
           (long long)d.n_tokens, (long long)d.vocab_size, d.has_mask ? "present" : "absent (all tokens count)");
    if (d.n_docs >= 0) printf("  %lld documents (/doc_offsets): kept apart in training unless --no-doc-mask\n",
                              (long long)d.n_docs);
    if (d.records != ZEN_RECORDS_TOKENS) { /* records: what they are, how many, laid out how */
        const zen_record_layout *l = zen_record_layout_of(d.records);
        printf("  %lld %s (root attribute %s, zen data --format %s): %d documents each: %s\n", (long long)d.n_records,
               l->noun, l->attribute, l->format, l->docs_per_record, l->documents);
    } else if (d.packed_seq_len)
        printf("  packed for seq-len %lld (zen data --pack): %lld sequences\n", (long long)d.packed_seq_len,
               (long long)zen_dataset_num_sequences(&d, (size_t)d.packed_seq_len));
    else
        for (int T = 128; T <= 4096; T *= 2)
            printf("  seq-len %4d: %lld sequences\n", T, (long long)zen_dataset_num_sequences(&d, (size_t)T));
    zen_dataset_close(&d);
    return 0;
}

static zen_opt opts[] = {
    {"--cpu", NULL, "instead of a file: the CPU's kernel levels, the one in use, OpenBLAS's core, oneDNN's ISA", NULL},
};

const zen_command zen_command_info = {
    "info", "what a SafeTensors file, model or adapter directory, GGUF file or dataset holds",
    "FILE|DIR", opts, ZEN_COUNT(opts), zen_cmd_info};

int zen_cmd_info(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[2], "--cpu")) { /* the CPU's kernel levels and libraries */
        zk_cpu_describe(stdout);
        return 0;
    }
    if (argc != 3) return zen_fail(ZEN_ERR_INPUT, "expected one FILE or DIR (zen info FILE)");
    const char *path = argv[2];
    struct stat st;
    if (stat(path, &st) != 0) return zen_fail(ZEN_ERR_INPUT, "%s: no such file or directory", path);
    if (S_ISDIR(st.st_mode)) return info_safetensors_dir(path);
    FILE *f = fopen(path, "rb");
    unsigned char magic[9] = {0};
    size_t got = f ? fread(magic, 1, 9, f) : 0;
    if (f) fclose(f);
    if (got >= 4 && !memcmp(magic, "GGUF", 4)) return info_gguf(path);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Fis_hdf5(path) > 0) return info_hdf5(path);
    if (got == 9 && magic[8] == '{') {
        st_file sf;
        int rc = st_open(&sf, path);
        if (!rc) {
            print_st_file(&sf);
            st_close(&sf);
        }
        return rc;
    }
    return zen_fail(ZEN_ERR_INPUT, "%s: not a SafeTensors, GGUF or HDF5 file", path);
}
