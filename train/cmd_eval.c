/* train/cmd_eval.c: `zen eval`: the token-weighted mean masked loss and the
 * perplexity of a model (+ adapter) over every sequence of a dataset, in order,
 * without dropout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/safetensors.h"
#include "../util/error.h"
#include "cli.h"
#include "commands.h"
#include "evaluate.h"

int zen_cmd_eval(int argc, char **argv) {
    zen_opt o[] = {{"--model", 1, NULL},   {"--adapter", 1, NULL}, {"--data", 1, NULL},
                   {"--seq-len", 1, NULL}, {"--batch", 1, NULL},   {"--device", 1, NULL},
                   {"--recompute", 0, NULL}, {"--dtype", 1, NULL}, {"--save-logits", 1, NULL}, {"--help", 0, NULL}};
    int n = (int)(sizeof o / sizeof o[0]), rc;
    if ((rc = zen_cli_parse(argc, argv, 2, o, n, "eval"))) return rc;
    if (zen_cli_get(o, n, "--help")) {
        printf("zen eval --model DIR [--adapter DIR] --data FILE.h5 --seq-len T [--batch B]\n"
               "         [--device cpu|cuda] [--dtype auto|f32|bf16] [--recompute]\n"
               "         [--save-logits FILE.safetensors]   (the logits [T, V] of sequence 0, F32)\n");
        return 0;
    }
    const char *model_dir, *data_path, *adapter_dir = zen_cli_get(o, n, "--adapter");
    const char *device = zen_cli_get(o, n, "--device");
    long long T, B;
    if ((rc = zen_cli_require(o, n, "--model", "eval", &model_dir)) ||
        (rc = zen_cli_require(o, n, "--data", "eval", &data_path)) ||
        (rc = zen_cli_int(o, n, "--seq-len", -1, 1, 1 << 20, &T)) ||
        (rc = zen_cli_int(o, n, "--batch", 1, 1, 1 << 16, &B)))
        return rc;
    if (T < 0) return zen_fail(ZEN_ERR_INPUT, "missing required option --seq-len");
    zk_backend *be = zk_open(device ? device : "cpu", zen_cli_get(o, n, "--dtype"));
    if (!be) return ZEN_ERR_INPUT;
    zen_model m = {0};
    zen_lora lo = {0};
    zen_acts a = {0};
    zen_dataset d = {0};
    double loss = 0;
    size_t tokens = 0;
    int64_t seqs = 0;
    if ((rc = zen_model_load(&m, be, model_dir))) goto done;
    if (adapter_dir && (rc = zen_lora_load_peft(&lo, &m.cfg, be, adapter_dir))) goto done;
    if ((rc = zen_dataset_open(&d, data_path, m.cfg.vocab))) goto done;
    seqs = zen_dataset_num_sequences(&d, (size_t)T);
    if (seqs < 1) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: %lld tokens, fewer than one sequence of %lld", data_path,
                      (long long)d.n_tokens, T);
        goto done;
    }
    if ((rc = zen_acts_create(&a, &m, adapter_dir ? &lo : NULL, (size_t)B, (size_t)T,
                              zen_cli_get(o, n, "--recompute") != NULL)))
        goto done;
    const char *logits_path = zen_cli_get(o, n, "--save-logits");
    if (logits_path && !(a.logits_host = zen_malloc((size_t)T * (size_t)m.cfg.vocab * sizeof(float)))) {
        rc = ZEN_ERR_INTERNAL;
        goto done;
    }
    if ((rc = zen_evaluate(&m, adapter_dir ? &lo : NULL, &a, &d, 0, seqs, &loss, &tokens))) goto done;
    if (logits_path) {
        /* sequence 0 was in the first batch; its logits were saved before the later batches */
        st_entry e = {"logits", ZEN_F32, 2, {T, m.cfg.vocab}};
        st_writer w;
        if (!(rc = st_writer_open(&w, logits_path, &e, 1, NULL, 0))) {
            rc = st_writer_put(&w, a.logits_host, (size_t)T * (size_t)m.cfg.vocab * sizeof(float));
            rc = rc ? (st_writer_abort(&w), rc) : st_writer_close(&w);
        }
        if (rc) goto done;
    }
    printf("loss %.9g\nppl %.9g\n", loss, exp(loss));
    fprintf(stderr, "evaluated %lld sequences of %lld (%zu target tokens)\n", (long long)seqs, T, tokens);
done:
    free(a.logits_host);
    zen_acts_free(&a);
    zen_lora_free(&lo);
    zen_dataset_close(&d);
    zen_model_free(&m);
    zk_close(be);
    return rc;
}
