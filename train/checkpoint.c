/* train/checkpoint.c: saving, finding, loading and pruning checkpoints. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../formats/safetensors.h"
#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "../util/json.h"
#include "checkpoint.h"

#define CKPT_PREFIX "checkpoint-"

/* fault injection for the crash-safety test: ZEN_FAULT_KILL_IN_CHECKPOINT=STEP
 * kills the process with SIGKILL half-way through writing that checkpoint */
static void maybe_die_mid_save(long step) {
    const char *v = getenv("ZEN_FAULT_KILL_IN_CHECKPOINT");
    if (v && atol(v) == step) raise(SIGKILL);
}

static int write_optimizer(const char *path, const zen_adamw *opt) {
    zk_backend *be = opt->be;
    float *host = zen_malloc(opt->n * sizeof(float));
    if (!host) return ZEN_ERR_INTERNAL;
    char step[32], n[32];
    snprintf(step, sizeof step, "%ld", opt->step);
    snprintf(n, sizeof n, "%zu", opt->n);
    const char *meta[] = {"format", "zen-adamw-v1", "step", step, "num_params", n};
    st_entry e[2] = {{"exp_avg", ZEN_F32, 1, {(int64_t)opt->n}}, {"exp_avg_sq", ZEN_F32, 1, {(int64_t)opt->n}}};
    st_writer w;
    int rc = st_writer_open(&w, path, e, 2, meta, 3);
    if (!rc) {
        be->download(be, host, opt->m, opt->n * sizeof(float));
        rc = st_writer_put(&w, host, opt->n * sizeof(float));
        be->download(be, host, opt->v, opt->n * sizeof(float));
        if (!rc) rc = st_writer_put(&w, host, opt->n * sizeof(float));
        rc = rc ? (st_writer_abort(&w), rc) : st_writer_close(&w);
    }
    free(host);
    return rc;
}

static char *state_json(const zen_train_state *st, const zen_run_config *cfg) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "zen-trainer-state-v1");
    cJSON_AddNumberToObject(root, "step", (double)st->step);
    cJSON_AddNumberToObject(root, "epoch", (double)st->epoch);
    cJSON_AddNumberToObject(root, "batch_in_epoch", (double)st->batch_in_epoch);
    cJSON_AddNumberToObject(root, "elapsed_s", st->elapsed_s);
    cJSON_AddNumberToObject(root, "tokens_seen", st->tokens_seen);
    cJSON_AddNumberToObject(root, "data_tokens", (double)st->data_tokens);
    cJSON_AddNumberToObject(root, "ranks", (double)(st->ranks > 0 ? st->ranks : 1));
    cJSON *rng = cJSON_AddObjectToObject(root, "rng");
    cJSON_AddNumberToObject(rng, "seed", (double)cfg->seed);
    cJSON_AddStringToObject(rng, "data_order", "xoshiro256** Fisher-Yates per epoch, seeded from (seed, epoch)");
    cJSON_AddStringToObject(rng, "lora_dropout", "counter hash of (seed, step, micro-batch, layer, target, element)");
    char *cfg_text = zen_run_config_to_json(cfg);
    cJSON *cfg_json = cfg_text ? cJSON_Parse(cfg_text) : NULL;
    free(cfg_text);
    if (!cfg_json) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddItemToObject(root, "config", cfg_json);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

int zen_checkpoint_save(const char *out_dir, const zen_train_state *st, const zen_lora *lo,
                        const zen_config *model_cfg, const zen_adamw *opt, const zen_run_config *cfg) {
    char final_dir[ZEN_PATH_MAX + 64], tmp_dir[ZEN_PATH_MAX + 96], old_dir[ZEN_PATH_MAX + 96];
    snprintf(final_dir, sizeof final_dir, "%s/" CKPT_PREFIX "%ld", out_dir, st->step);
    snprintf(tmp_dir, sizeof tmp_dir, "%s.tmp", final_dir);
    snprintf(old_dir, sizeof old_dir, "%s.old", final_dir);
    zen_remove_tree(tmp_dir);
    int rc = zen_mkdir_p(tmp_dir);
    if (!rc) rc = zen_lora_save_peft(lo, model_cfg, tmp_dir, cfg->model, ZEN_F32);
    if (!rc) maybe_die_mid_save(st->step);
    char *opt_path = zen_path_join(tmp_dir, "optimizer.safetensors");
    char *state_path = zen_path_join(tmp_dir, "trainer_state.json");
    char *text = state_json(st, cfg);
    if (!rc && (!opt_path || !state_path || !text)) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    if (!rc) rc = write_optimizer(opt_path, opt);
    if (!rc) rc = zen_write_text_file(state_path, text);
    free(opt_path);
    free(state_path);
    free(text);
    if (!rc) {
        /* replace an existing checkpoint of the same step (a re-run after resume);
         * the old one comes back if the new one cannot take its place */
        zen_remove_tree(old_dir);
        int had_old = rename(final_dir, old_dir) == 0;
        if (!had_old && errno != ENOENT) {
            rc = zen_fail(ZEN_ERR_INTERNAL, "%s: cannot move aside: %s", final_dir, strerror(errno));
        } else if (rename(tmp_dir, final_dir) != 0) {
            rc = zen_fail(ZEN_ERR_INTERNAL, "%s: cannot rename into place: %s", final_dir, strerror(errno));
            if (had_old) rename(old_dir, final_dir);
        } else {
            zen_sync_parent(final_dir);
            zen_remove_tree(old_dir);
        }
    }
    if (rc) zen_remove_tree(tmp_dir);
    return rc;
}

/* step of a complete checkpoint directory name, or -1 */
static long checkpoint_step(const char *out_dir, const char *name) {
    size_t plen = strlen(CKPT_PREFIX);
    if (strncmp(name, CKPT_PREFIX, plen) != 0) return -1;
    char *end;
    long step = strtol(name + plen, &end, 10);
    if (end == name + plen || *end || step < 0) return -1;
    char path[ZEN_PATH_MAX + 128];
    snprintf(path, sizeof path, "%s/%s/trainer_state.json", out_dir, name);
    return zen_file_exists(path) ? step : -1;
}

long zen_checkpoint_latest(const char *out_dir) {
    DIR *d = opendir(out_dir);
    if (!d) return -1;
    long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s = checkpoint_step(out_dir, e->d_name);
        if (s > best) best = s;
    }
    closedir(d);
    return best;
}

void zen_checkpoint_prune(const char *out_dir, long keep) {
    DIR *d = opendir(out_dir);
    if (!d) return;
    long steps[4096];
    int n = 0;
    struct dirent *e;
    char path[ZEN_PATH_MAX + 128];
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (!strncmp(e->d_name, CKPT_PREFIX, strlen(CKPT_PREFIX)) && len > 4 &&
            (!strcmp(e->d_name + len - 4, ".tmp") || !strcmp(e->d_name + len - 4, ".old"))) {
            snprintf(path, sizeof path, "%s/%s", out_dir, e->d_name);
            zen_remove_tree(path); /* leftovers of an interrupted save */
            continue;
        }
        long s = checkpoint_step(out_dir, e->d_name);
        if (s >= 0 && n < 4096) steps[n++] = s;
    }
    closedir(d);
    if (keep <= 0 || n <= keep) return;
    /* remove all but the `keep` largest steps */
    for (int removed = 0; removed < n - keep; removed++) {
        int min_i = -1;
        for (int i = 0; i < n; i++)
            if (steps[i] >= 0 && (min_i < 0 || steps[i] < steps[min_i])) min_i = i;
        snprintf(path, sizeof path, "%s/" CKPT_PREFIX "%ld", out_dir, steps[min_i]);
        zen_remove_tree(path);
        steps[min_i] = -1;
    }
}

/* a non-negative integer below 2^53 written as a decimal string */
static int parse_count(const char *text, long *out) {
    if (!text || !*text) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end || v < 0 || v > (1LL << 53)) return -1;
    *out = (long)v;
    return 0;
}

static int read_moments(const char *path, zen_adamw *opt, long max_step) {
    st_file f;
    int rc = st_open(&f, path);
    if (rc) return rc;
    const st_tensor *m = st_find(&f, "exp_avg"), *v = st_find(&f, "exp_avg_sq");
    const char *step = st_meta(&f, "step");
    int64_t shape[1] = {(int64_t)opt->n};
    long updates = 0;
    if (!m || !v || !step)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: missing exp_avg, exp_avg_sq or the step", path);
    else if (parse_count(step, &updates) || updates > max_step)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: step '%s' is not an update count in [0, %ld]", path, step, max_step);
    else if (strcmp(m->dtype, "F32") || strcmp(v->dtype, "F32"))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: moments must be F32", path);
    else if (!(rc = st_check_shape(&f, m, 1, shape)) && !(rc = st_check_shape(&f, v, 1, shape))) {
        opt->be->upload(opt->be, opt->m, m->data, opt->n * sizeof(float));
        opt->be->upload(opt->be, opt->v, v->data, opt->n * sizeof(float));
        opt->step = updates;
    }
    st_close(&f);
    return rc;
}

/* a JSON number that is an integer in [0, 2^53] */
static int state_count(const cJSON *root, const char *key, long *out, const char *origin) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    double v = cJSON_IsNumber(item) ? item->valuedouble : -1;
    if (!(v >= 0 && v <= 9007199254740992.0) || v != (double)(long long)v)
        return zen_fail(ZEN_ERR_INPUT, "%s: '%s' must be a non-negative integer", origin, key);
    *out = (long)v;
    return 0;
}

/* a JSON number, finite and >= 0 */
static int state_amount(const cJSON *root, const char *key, double *out, const char *origin) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsNumber(item) || !(item->valuedouble >= 0 && item->valuedouble < 1e300))
        return zen_fail(ZEN_ERR_INPUT, "%s: '%s' must be a finite number >= 0", origin, key);
    *out = item->valuedouble;
    return 0;
}

int zen_checkpoint_parse_state(const char *text, size_t len, const char *origin, zen_train_state *st,
                               zen_run_config *saved_cfg) {
    cJSON *root = NULL;
    int rc = zen_json_parse(text, len, origin, &root);
    if (rc) return rc;
    memset(st, 0, sizeof *st);
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(root, "config");
    if (!cJSON_IsObject(root) || !cJSON_IsString(format) || strcmp(format->valuestring, "zen-trainer-state-v1"))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: not a zen trainer state (format zen-trainer-state-v1)", origin);
    else if (!(rc = state_count(root, "step", &st->step, origin)) && !(rc = state_count(root, "epoch", &st->epoch, origin)) &&
             !(rc = state_count(root, "batch_in_epoch", &st->batch_in_epoch, origin)) &&
             !(rc = state_amount(root, "elapsed_s", &st->elapsed_s, origin)) &&
             !(rc = state_amount(root, "tokens_seen", &st->tokens_seen, origin)) &&
             !(rc = cJSON_HasObjectItem(root, "data_tokens") ? state_count(root, "data_tokens", &st->data_tokens, origin) : 0) &&
             !(rc = cJSON_HasObjectItem(root, "ranks") ? state_count(root, "ranks", &st->ranks, origin) : 0) &&
             !(rc = st->ranks > 65536 ? zen_fail(ZEN_ERR_INPUT, "%s: 'ranks' %ld is past 65536", origin, st->ranks) : 0) &&
             !cJSON_IsObject(cfg))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: missing the run config ('config')", origin);
    if (!rc) {
        char *cfg_text = cJSON_PrintUnformatted(cfg);
        zen_run_config_defaults(saved_cfg);
        rc = cfg_text ? zen_run_config_apply_json(saved_cfg, cfg_text, origin) : zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        if (!rc) rc = zen_run_config_validate(saved_cfg);
        if (rc) rc = zen_fail_context(rc, "checkpoint config");
        free(cfg_text);
    }
    cJSON_Delete(root);
    return rc;
}

int zen_checkpoint_check_position(const zen_train_state *st, const char *origin, long total_steps,
                                  long steps_per_epoch) {
    if (st->step > total_steps)
        return zen_fail(ZEN_ERR_INPUT, "%s: step %ld is past the run's %ld steps (raise max_steps or epochs to "
                        "continue it)", origin, st->step, total_steps);
    if (steps_per_epoch < 1 || st->epoch != st->step / steps_per_epoch || st->batch_in_epoch != st->step % steps_per_epoch)
        return zen_fail(ZEN_ERR_INPUT, "%s: epoch %ld, batch %ld do not match step %ld at %ld steps per epoch (another "
                        "dataset or batch size?)", origin, st->epoch, st->batch_in_epoch, st->step, steps_per_epoch);
    return 0;
}

int zen_checkpoint_load(const char *out_dir, long step, zen_train_state *st, zen_lora *lo,
                        const zen_config *model_cfg, zen_adamw *opt, zen_run_config *saved_cfg) {
    char dir[ZEN_PATH_MAX + 64], path[ZEN_PATH_MAX + 128];
    snprintf(dir, sizeof dir, "%s/" CKPT_PREFIX "%ld", out_dir, step);
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    char *text = NULL;
    size_t len = 0;
    int rc = zen_read_file_bytes(path, &text, &len);
    if (!rc) rc = zen_checkpoint_parse_state(text, len, path, st, saved_cfg);
    free(text);
    if (!rc && st->step != step)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: step %ld, but the directory is checkpoint-%ld", path, st->step, step);
    if (rc) return rc;
    zen_lora saved;
    if ((rc = zen_lora_load_peft(&saved, model_cfg, lo->be, dir))) return rc;
    if (saved.num_params != lo->num_params || saved.r != lo->r || saved.targets != lo->targets || saved.dora != lo->dora)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: adapter shape differs from the run's LoRA config", dir);
    else {
        /* device -> host -> device keeps to the backend interface */
        float *host = zen_malloc(lo->num_params * sizeof(float));
        if (!host) rc = ZEN_ERR_INTERNAL;
        else {
            lo->be->download(lo->be, host, saved.params, lo->num_params * sizeof(float));
            lo->be->upload(lo->be, lo->params, host, lo->num_params * sizeof(float));
            free(host);
        }
    }
    zen_lora_free(&saved);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    return read_moments(path, opt, st->step);
}
