/* objectives/ref_logps.c: an objective's precomputed reference log-probabilities (see ref_logps.h). */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "ref_logps.h"

static const char MAGIC[8] = {'Z', 'E', 'N', 'R', 'E', 'F', '0', '1'};
#define HEADER_BYTES 24

/* FNV-1a, 64-bit */
static void mix(uint64_t *h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) *h = (*h ^ c[i]) * 0x100000001b3ull;
}

static void mix_stat(uint64_t *h, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return;
    int64_t v[3] = {(int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec, (int64_t)st.st_mtim.tv_nsec};
    mix(h, v, sizeof v);
}

/* the model: its path, every file of its directory (or the file itself), config and storage */
static void mix_model(uint64_t *h, const zen_model *m, const char *path) {
    char real[4096];
    if (realpath(path, real)) mix(h, real, strlen(real));
    mix_stat(h, path);
    DIR *dir = opendir(path);
    if (dir) { /* names in readdir order vary: sum each file's own hash */
        uint64_t sum = 0;
        struct dirent *e;
        while ((e = readdir(dir))) {
            if (e->d_name[0] == '.') continue;
            uint64_t f = 0xcbf29ce484222325ull;
            char *p = zen_path_join(path, e->d_name);
            mix(&f, e->d_name, strlen(e->d_name));
            if (p) mix_stat(&f, p);
            free(p);
            sum += f;
        }
        closedir(dir);
        mix(h, &sum, sizeof sum);
    }
    const zen_config *c = &m->cfg;
    int64_t v[12] = {c->hidden, c->intermediate, c->layers, c->heads, c->kv_heads, c->head_dim, c->vocab, c->tied,
                     (int64_t)m->weight_bytes, m->main_dtype, m->base_quant, m->be->compute};
    mix(h, v, sizeof v);
    mix(h, &c->rope_theta, sizeof c->rope_theta);
    mix(h, &c->rms_eps, sizeof c->rms_eps);
}

static int key_of(const zen_model *m, const char *model_path, const zen_lora *ref, const zen_dataset *d,
                  const zen_ref_spec *spec, uint64_t *key) {
    uint64_t h = 0xcbf29ce484222325ull;
    char real[4096];
    if (realpath(d->path, real)) mix(&h, real, strlen(real));
    mix_stat(&h, d->path);
    int64_t dv[2] = {d->n_tokens, d->n_records};
    mix(&h, dv, sizeof dv);
    if (spec->k != 2 || spec->salt) { /* another layout than DPO's pairs (whose files keep their keys) */
        int64_t sv[2] = {spec->k, (int64_t)spec->salt};
        mix(&h, sv, sizeof sv);
    }
    mix_model(&h, m, model_path);
    if (ref) { /* the reference adapter's values and scale */
        float *p = zen_malloc(ref->num_params * sizeof(float));
        if (!p) return ZEN_ERR_INTERNAL;
        ref->be->download(ref->be, p, ref->params, ref->num_params * sizeof(float));
        mix(&h, p, ref->num_params * sizeof(float));
        mix(&h, &ref->scale, sizeof ref->scale);
        free(p);
    } else {
        mix(&h, "base", 4);
    }
    *key = h;
    return 0;
}

/* items already in a partial file with this header (0 if none or another) */
static int64_t partial_done(const char *path, uint64_t key, int64_t pairs, int k) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char head[HEADER_BYTES];
    int64_t done = 0;
    if (fread(head, 1, HEADER_BYTES, f) == HEADER_BYTES && !memcmp(head, MAGIC, 8) &&
        !memcmp(head + 8, &key, 8) && !memcmp(head + 16, &pairs, 8)) {
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        done = size > HEADER_BYTES ? (int64_t)((size - HEADER_BYTES) / (8 * k)) : 0;
        if (done > pairs) done = 0;
    }
    fclose(f);
    return done;
}

static int read_final(const char *path, uint64_t key, int64_t pairs, int k, double *out) {
    FILE *f = fopen(path, "rb");
    if (!f) return zen_fail(ZEN_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    unsigned char head[HEADER_BYTES];
    int ok = fread(head, 1, HEADER_BYTES, f) == HEADER_BYTES && !memcmp(head, MAGIC, 8) && !memcmp(head + 8, &key, 8) &&
             !memcmp(head + 16, &pairs, 8) &&
             fread(out, sizeof(double), (size_t)(k * pairs), f) == (size_t)(k * pairs);
    fclose(f);
    return ok ? 0 : zen_fail(ZEN_ERR_INPUT, "%s: not the reference log-probabilities of %lld items it should hold "
                             "(truncated or changed?); remove it to compute them again", path, (long long)pairs);
}

/* the pass over items [done, pairs), a chunk of ranks x batch at a time; rank 0 appends */
static int compute(const zen_model *m, const zen_lora *ref, zen_acts *a, zen_pair_batch *b, size_t batch,
                   const zen_ranks *dist, const zen_ref_spec *spec, const char *partial, uint64_t key, int64_t done,
                   int64_t pairs) {
    const size_t k = (size_t)spec->k;
    FILE *f = NULL;
    int rc = 0;
    if (dist->rank == 0) {
        f = fopen(partial, done ? "ab" : "wb");
        if (!f) rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot write: %s", partial, strerror(errno));
        if (!rc && !done && (fwrite(MAGIC, 1, 8, f) != 8 || fwrite(&key, 8, 1, f) != 1 || fwrite(&pairs, 8, 1, f) != 1))
            rc = zen_fail(ZEN_ERR_INPUT, "%s: write failed", partial);
    }
    if ((rc = dist->agree(rc))) {
        if (f) fclose(f);
        return rc;
    }
    size_t chunk = batch * (size_t)dist->size;
    double *vals = zen_malloc(k * chunk * sizeof(double)), *g = zen_malloc(k * batch * sizeof(double));
    rc = vals && g ? 0 : ZEN_ERR_INTERNAL;
    for (int64_t at = done; at < pairs && !rc; at += (int64_t)chunk) {
        size_t n = (size_t)(pairs - at) < chunk ? (size_t)(pairs - at) : chunk;
        memset(vals, 0, k * chunk * sizeof(double));
        int64_t first = at + (int64_t)(batch * (size_t)dist->rank);
        int64_t mine = (int64_t)n - (int64_t)(batch * (size_t)dist->rank);
        if (mine > (int64_t)batch) mine = (int64_t)batch;
        if (mine > 0) {
            zen_pair_batch_clear(b);
            for (int64_t i = 0; i < mine && !rc; i++) rc = spec->add(spec->ctx, b, first + i);
            if (!rc) rc = zen_pair_batch_logps(b, m, ref, a, 0, spec->k, g, NULL);
            if (!rc) memcpy(vals + k * (size_t)(first - at), g, k * (size_t)mine * sizeof(double));
        }
        if ((rc = dist->agree(rc))) break;
        dist->merge_f64(vals, k * n);
        if (f && (fwrite(vals, sizeof(double), k * n, f) != k * n || fflush(f)))
            rc = zen_fail(ZEN_ERR_INPUT, "%s: write failed: %s", partial, strerror(errno));
        rc = dist->agree(rc);
    }
    free(vals);
    free(g);
    if (f && fclose(f) && !rc) rc = zen_fail(ZEN_ERR_INPUT, "%s: write failed", partial);
    return dist->agree(rc);
}

int zen_ref_logps_get(const zen_model *m, const char *model_path, const zen_lora *ref, zen_acts *a,
                      const zen_dataset *d, zen_pair_batch *b, size_t batch, const zen_ranks *dist,
                      const zen_ref_spec *spec, double **out, FILE *say) {
    uint64_t key;
    int64_t pairs = spec->items;
    int rc = key_of(m, model_path, ref, d, spec, &key);
    if (rc) return rc;
    char *path = zen_malloc(strlen(d->path) + 40), *partial = zen_malloc(strlen(d->path) + 48);
    double *vals = zen_malloc((size_t)(spec->k * pairs) * sizeof(double));
    if (!path || !partial || !vals) {
        free(path);
        free(partial);
        free(vals);
        return ZEN_ERR_INTERNAL;
    }
    sprintf(path, "%s.ref-%016llx.logps", d->path, (unsigned long long)key);
    sprintf(partial, "%s.partial", path);
    int have = zen_file_exists(path);
    dist->bcast(&have, sizeof have);
    if (!have) {
        int64_t done = dist->rank == 0 ? partial_done(partial, key, pairs, spec->k) : 0;
        dist->bcast(&done, sizeof done);
        if (say && dist->rank == 0)
            fprintf(say, "  reference log-probabilities: computing %lld %s%s into %s\n", (long long)(pairs - done),
                    spec->noun,
                    done ? " (continuing a pass that stopped)" : "", path);
        rc = compute(m, ref, a, b, batch, dist, spec, partial, key, done, pairs);
        if (!rc && dist->rank == 0) rc = zen_atomic_commit_path(partial, path);
        rc = dist->agree(rc);
    } else if (say && dist->rank == 0) {
        fprintf(say, "  reference log-probabilities: read from %s (computed before for this data and base)\n", path);
    }
    if (!rc) rc = dist->agree(read_final(path, key, pairs, spec->k, vals));
    free(path);
    free(partial);
    if (rc) {
        free(vals);
        return rc;
    }
    *out = vals;
    return 0;
}
