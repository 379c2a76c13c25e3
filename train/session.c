/* train/session.c: the set-up zen grad, zen eval and zen train share (see session.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../model/gguf_tokenizer.h"
#include "../model/model_load.h"
#include "../model/dora.h"

#include "../util/atomic_file.h"

#include "../util/error.h"
#include "../util/file.h"
#include "dist.h"
#include "session.h"

int zen_session_open(zen_session *s, const char *device, const char *dtype, const char *base_quant,
                     const char *model_dir) {
    memset(s, 0, sizeof *s);
    int quant = -1, rc;
    if (base_quant && (rc = zen_base_quant_parse(base_quant, &quant))) return zen_fail_context(rc, "option --base-quant");
    /* each rank of a machine on its own device (GPU) */
    if (!(s->be = zk_open_index(device ? device : "cpu", dtype, zen_dist_get()->local_rank))) return ZEN_ERR_INPUT;
    if (s->be->note[0]) fprintf(stderr, "zen: note: %s\n", s->be->note);
    if ((rc = zen_model_load_quant(&s->model, s->be, model_dir, quant))) return rc;
    if (quant >= 0 && zen_dist_get()->rank == 0) {
        char bytes[32];
        zen_format_bytes(bytes, sizeof bytes, s->model.quant_bytes);
        fprintf(stderr, "zen: base projections quantised to %s at load: %s", zen_dtype_name((zen_dtype)quant), bytes);
        if (s->model.quant_kept)
            fprintf(stderr, "; %d kept as stored (rows not a whole number of %u-element blocks)", s->model.quant_kept,
                    zen_dtype_block((zen_dtype)quant));
        fputc('\n', stderr);
    }
    return 0;
}

int zen_session_load_adapter(zen_session *s, const char *adapter_dir) {
    int rc = zen_lora_load_peft(&s->lora, &s->model.cfg, s->be, adapter_dir);
    s->has_lora = !rc;
    return rc;
}

int zen_session_fresh_adapter(zen_session *s, int r, float alpha, int rslora, float dropout, unsigned targets,
                              uint64_t seed, int dora) {
    int rc = zen_lora_create_dora(&s->lora, &s->model.cfg, s->be, r, alpha, rslora, dropout, targets, seed, dora);
    s->has_lora = !rc;
    return rc;
}

int zen_session_dora_setup(zen_session *s, int fresh) {
    int rc = s->has_lora ? zen_dora_setup(&s->lora, &s->model, fresh) : 0;
    if (!rc && s->has_ref) rc = zen_dora_setup(&s->ref, &s->model, 0);
    return rc;
}

int zen_session_make_pair_acts(zen_session *s, size_t B, size_t T, int recompute) {
    return zen_acts_create_shared(&s->acts, &s->model, s->has_lora ? &s->lora : NULL, 2 * B, T, 0, recompute);
}

int zen_session_load_reference(zen_session *s, const char *adapter_dir) {
    int rc = zen_lora_load_peft(&s->ref, &s->model.cfg, s->be, adapter_dir);
    if (rc) return rc;
    s->has_ref = 1;
    if (s->has_lora && (s->ref.r != s->lora.r || s->ref.targets != s->lora.targets))
        return zen_fail(ZEN_ERR_INPUT, "reference adapter %s: rank %d on targets 0x%x, but the trained adapter has rank "
                        "%d on 0x%x; they must match", adapter_dir, s->ref.r, s->ref.targets, s->lora.r,
                        s->lora.targets);
    return 0;
}

int zen_session_nonfinite(const zen_session *s, const char *what, double value) {
    char where[1024];
    const char *shown = isnan(value) ? "nan" : value > 0 ? "inf" : "-inf";
    int found = zen_model_find_nonfinite(&s->model, where, sizeof where);
    if (found == 0 && s->has_lora) found = zen_lora_find_nonfinite(&s->lora, &s->model.cfg, where, sizeof where);
    if (found > 0) return zen_fail(ZEN_ERR_INPUT, "%s is %s: %s", what, shown, where);
    return zen_fail(ZEN_ERR_INTERNAL, "%s is %s though every weight is finite (an overflow in the computation)", what,
                    shown);
}

int zen_open_tokenizer(const char *path, zen_tokenizer **t) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) return zen_tokenizer_from_gguf(t, path);
    return zen_tokenizer_load(t, path);
}

int zen_check_output(const char *out, const zen_model *m, const char *adapter_dir, const char *data_path) {
    int rc = zen_model_check_output(m, out, adapter_dir);
    if (!rc && data_path && zen_same_file(out, data_path))
        rc = zen_fail(ZEN_ERR_INPUT, "--out %s is the dataset being read; write elsewhere", out);
    return rc ? rc : zen_output_ready(out);
}

void zen_session_close(zen_session *s) {
    zen_acts_free(&s->acts);
    zen_lora_free(&s->lora);
    if (s->has_ref) zen_lora_free(&s->ref);
    zen_dataset_close(&s->data);
    zen_model_free(&s->model);
    zk_close(s->be);
    memset(s, 0, sizeof *s);
}
