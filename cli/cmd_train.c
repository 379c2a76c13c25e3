/* cli/cmd_train.c: `zen train CONFIG.json [--model DIR] [--data FILE.h5]
 * [--out DIR] [--set key=value]... [--resume]`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "../util/file.h"
#include "cli.h"
#include "commands.h"
#include "../train/dist.h"
#include "../train/run_config.h"
#include "../train/trainer.h"

static int set_path(zen_run_config *c, const char *key, const char *value) {
    char assignment[ZEN_PATH_MAX + 32];
    snprintf(assignment, sizeof assignment, "%s=%s", key, value);
    return zen_run_config_set(c, assignment);
}

/* --set may be given many times and every flag applies in order, so the
 * table only names them; the loop below reads argv itself */
static zen_opt opts[] = {
    {"--model", "DIR|FILE.gguf", "sets model", NULL},
    {"--data", "FILE.h5", "sets data", NULL},
    {"--out", "DIR", "sets out_dir", NULL},
    {"--set", "key=value", "sets any run config key (lora.r=16); may be repeated, later ones win", NULL},
    {"--base-quant", "none|nf4|q4_0|q8_0", "sets base_quant", NULL},
    {"--no-doc-mask", NULL, "sets doc_mask=false", NULL},
    {"--resume", NULL, "continue from the newest complete checkpoint in out_dir", NULL},
};

const zen_command zen_command_train = {
    "train", "a LoRA (DoRA) fine-tune from a JSON run config: SFT, DPO or ORPO; checkpoints, resume, ranks",
    "CONFIG.json", opts, ZEN_COUNT(opts), zen_cmd_train};

int zen_cmd_train(int argc, char **argv) {
    const char *config_path = NULL;
    int resume = 0, rc;
    zen_run_config cfg;
    zen_run_config_defaults(&cfg);
    /* the config file first, then the flags in order, so flags override it */
    for (int i = 2; i < argc; i++) {
        const zen_opt *o = NULL;
        for (int k = 0; k < ZEN_COUNT(opts); k++)
            if (!strcmp(argv[i], opts[k].name)) o = &opts[k];
        if (argv[i][0] != '-') {
            if (config_path) return zen_fail(ZEN_ERR_INPUT, "more than one config file ('%s' and '%s')", config_path, argv[i]);
            config_path = argv[i];
        } else if (!o) {
            return zen_fail(ZEN_ERR_INPUT, "unknown option '%s' (see zen train --help)", argv[i]);
        } else if (!strcmp(argv[i], "--resume")) {
            resume = 1;
        } else if (o->arg && ++i >= argc) {
            return zen_fail(ZEN_ERR_INPUT, "option %s needs a value", argv[i - 1]);
        }
    }
    if (!config_path) return zen_fail(ZEN_ERR_INPUT, "missing the run config (zen train CONFIG.json ...)");
    char *text = NULL;
    if ((rc = zen_read_text_file(config_path, &text))) return rc;
    rc = zen_run_config_apply_json(&cfg, text, config_path);
    free(text);
    for (int i = 2; i < argc && !rc; i++) {
        if (!strcmp(argv[i], "--model")) rc = set_path(&cfg, "model", argv[++i]);
        else if (!strcmp(argv[i], "--data")) rc = set_path(&cfg, "data", argv[++i]);
        else if (!strcmp(argv[i], "--out")) rc = set_path(&cfg, "out_dir", argv[++i]);
        else if (!strcmp(argv[i], "--set")) rc = zen_run_config_set(&cfg, argv[++i]);
        else if (!strcmp(argv[i], "--base-quant")) rc = set_path(&cfg, "base_quant", argv[++i]);
        else if (!strcmp(argv[i], "--no-doc-mask")) rc = zen_run_config_set(&cfg, "doc_mask=false");
    }
    char note[512];
    if (!rc) rc = zen_run_config_resolve(&cfg, note, sizeof note);
    if (!rc && note[0]) fprintf(stderr, "zen train: %s\n", note);
    if (!rc) rc = zen_run_config_validate(&cfg);
    if (!rc) rc = zen_train(&cfg, resume);
    if (rc >= 128) { /* stopped by a signal after a checkpoint: say how to go on */
        char msg[4096], *p = msg, *end = msg + sizeof msg;
        p += snprintf(p, (size_t)(end - p), "%s; resume with:", zen_last_error());
        if (zen_dist_get()->size > 1) p += snprintf(p, (size_t)(end - p), " mpirun -np %d", zen_dist_get()->size);
        for (int i = 0; i < argc && p < end; i++)
            p += snprintf(p, (size_t)(end - p), strpbrk(argv[i], " \t'\"$\\") ? " '%s'" : " %s", argv[i]);
        if (!resume && p < end) snprintf(p, (size_t)(end - p), " --resume");
        zen_fail(rc, "%s", msg);
    }
    return rc;
}
