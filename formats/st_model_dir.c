/* formats/st_model_dir.c: a model directory's weights as one SafeTensors file or
 * as shards with model.safetensors.index.json (Hugging Face's layout), written
 * tensor by tensor. Used by zen init and zen export. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "safetensors.h"

static size_t entry_bytes(const st_entry *e) {
    size_t n = zen_dtype_bytes(e->dtype, 1);
    for (int d = 0; d < e->ndim; d++) n *= (size_t)e->shape[d];
    return n;
}

static void shard_name(char *buf, size_t cap, int shard, int shards) {
    if (shards == 1) snprintf(buf, cap, "model.safetensors");
    else snprintf(buf, cap, "model-%05d-of-%05d.safetensors", shard + 1, shards);
}

int st_write_model_dir(const char *dir, const st_entry *entries, int count, uint64_t shard_bytes,
                       st_produce_fn produce, void *ctx) {
    int *shard_of = zen_calloc((size_t)(count ? count : 1), sizeof(int));
    if (!shard_of) return ZEN_ERR_INTERNAL;
    int shards = 1;
    uint64_t in_shard = 0, total = 0;
    for (int i = 0; i < count; i++) {
        uint64_t bytes = entry_bytes(&entries[i]);
        if (in_shard > 0 && in_shard + bytes > shard_bytes) {
            shards++;
            in_shard = 0;
        }
        shard_of[i] = shards - 1;
        in_shard += bytes;
        total += bytes;
    }
    int rc = zen_mkdir_p(dir);
    const char *meta[] = {"format", "pt"};
    char name[64];
    for (int s = 0; s < shards && !rc; s++) {
        int first = -1, n = 0;
        for (int i = 0; i < count; i++)
            if (shard_of[i] == s) {
                if (first < 0) first = i;
                n++;
            }
        shard_name(name, sizeof name, s, shards);
        char *path = zen_path_join(dir, name);
        st_writer w;
        if (!path) rc = ZEN_ERR_INTERNAL;
        else if (!(rc = st_writer_open(&w, path, entries + first, n, meta, 1))) {
            for (int i = first; i < first + n && !rc; i++) rc = produce(ctx, i, &w);
            rc = rc ? (st_writer_abort(&w), rc) : st_writer_close(&w);
        }
        free(path);
    }
    if (!rc && shards > 1) {
        cJSON *root = cJSON_CreateObject();
        cJSON *m = cJSON_AddObjectToObject(root, "metadata");
        cJSON_AddNumberToObject(m, "total_size", (double)total);
        cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
        for (int i = 0; i < count; i++) {
            shard_name(name, sizeof name, shard_of[i], shards);
            cJSON_AddStringToObject(map, entries[i].name, name);
        }
        rc = zen_write_json_file(dir, "model.safetensors.index.json", root);
    }
    free(shard_of);
    return rc;
}
