/* cli/cmd_eval.c: `zen eval`: an objective's loss and metrics (sft: the
 * token-weighted mean masked loss and the perplexity) of a model (+ adapter)
 * over every item of a dataset, in order, without dropout, through the
 * objective interface; and `zen eval --choices`: multiple-choice accuracy. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/safetensors.h"
#include "../util/error.h"
#include "cli.h"
#include "cli_objective.h"
#include "commands.h"
#include "../train/dist.h"
#include "../train/evaluate.h"
#include "../train/eval_choices.h"
#include "../train/eval_prompts.h"
#include "../train/session.h"

/* zen eval --choices FILE.jsonl */
static int eval_choices(zen_opt *o, int n) {
    const char *model_dir, *path = zen_cli_get(o, n, "--choices"), *adapter_dir = zen_cli_get(o, n, "--adapter");
    long long T, B;
    int rc;
    if ((rc = zen_cli_require(o, n, "--model", "eval", &model_dir)) ||
        (rc = zen_cli_int(o, n, "--seq-len", 2048, 2, 1 << 20, &T)) || (rc = zen_cli_int(o, n, "--batch", 4, 1, 1 << 16, &B)))
        return rc;
    static const char *const not_here[] = {"--data", "--save-logits", "--no-doc-mask"};
    for (int i = 0; i < 3; i++)
        if (zen_cli_get(o, n, not_here[i])) return zen_fail(ZEN_ERR_INPUT, "%s does not apply to --choices", not_here[i]);
    zen_session s;
    zen_tokenizer *t = NULL;
    zen_choices_result res;
    memset(&res, 0, sizeof res);
    if (!(rc = zen_session_open(&s, zen_cli_get(o, n, "--device"), zen_cli_get(o, n, "--dtype"),
                                zen_cli_get(o, n, "--base-quant"), model_dir)) &&
        !(rc = adapter_dir ? zen_session_load_adapter(&s, adapter_dir) : 0) &&
        !(rc = zen_open_tokenizer(model_dir, &t)) &&
        !(rc = zen_session_make_pair_acts(&s, (size_t)B, (size_t)T, zen_cli_get(o, n, "--recompute") != NULL)) &&
        !(rc = zen_session_dora_setup(&s, 0)))
        rc = zen_eval_choices(&s.model, s.has_lora ? &s.lora : NULL, &s.acts, t, path, (size_t)B, (size_t)T, &res);
    if (!rc && zen_dist_get()->rank == 0) {
        printf("acc %.9g\nacc_norm %.9g\n", res.acc, res.acc_norm);
        fprintf(stderr, "zen eval: %.0f records from %s (%.0f with the context run once for all choices); device %s: %s\n",
                res.records, path, res.shared, s.be->name, s.be->info);
    }
    zen_tokenizer_free(t);
    zen_session_close(&s);
    return rc;
}

/* zen eval --prompts FILE.h5 --reward JSON */
static int eval_prompts(zen_opt *o, int n) {
    const char *model_dir, *path = zen_cli_get(o, n, "--prompts"), *adapter_dir = zen_cli_get(o, n, "--adapter");
    const char *rewards = zen_cli_get(o, n, "--reward"), *weights = zen_cli_get(o, n, "--reward-weights");
    long long samples, max_new, seed, top_k;
    double temperature, top_p;
    int rc;
    if ((rc = zen_cli_require(o, n, "--model", "eval", &model_dir)) ||
        (rc = zen_cli_int(o, n, "--n", 1, 1, 1 << 16, &samples)) ||
        (rc = zen_cli_int(o, n, "--max-new-tokens", 512, 1, 1 << 20, &max_new)) ||
        (rc = zen_cli_int(o, n, "--seed", 0, 0, 1LL << 62, &seed)) ||
        (rc = zen_cli_int(o, n, "--top-k", 0, 0, 1 << 24, &top_k)) ||
        (rc = zen_cli_float(o, n, "--temperature", 0.0, 0.0, 100.0, &temperature)) ||
        (rc = zen_cli_float(o, n, "--top-p", 1.0, 1e-6, 1.0, &top_p)))
        return rc;
    if (!rewards) return zen_fail(ZEN_ERR_INPUT, "--prompts needs --reward JSON: the rewards to score by (a JSON list)");
    static const char *const not_here[] = {"--data", "--save-logits", "--choices", "--objective"};
    for (int i = 0; i < 4; i++)
        if (zen_cli_get(o, n, not_here[i])) return zen_fail(ZEN_ERR_INPUT, "%s does not apply to --prompts", not_here[i]);
    zen_session s;
    zen_tokenizer *t = NULL;
    zen_prompts_result res;
    zen_sampling samp = {(float)temperature, (float)top_p, 0.0f, (int)top_k};
    if (!(rc = zen_session_open(&s, zen_cli_get(o, n, "--device"), zen_cli_get(o, n, "--dtype"),
                                zen_cli_get(o, n, "--base-quant"), model_dir)) &&
        !(rc = adapter_dir ? zen_session_load_adapter(&s, adapter_dir) : 0) && !(rc = zen_open_tokenizer(model_dir, &t)) &&
        !(rc = zen_session_dora_setup(&s, 0)))
        rc = zen_eval_prompts(&s.model, s.has_lora ? &s.lora : NULL, t, path, rewards, weights ? weights : "",
                              (int)samples, (size_t)max_new, &samp, (unsigned long long)seed, &res);
    if (!rc && zen_dist_get()->rank == 0) {
        printf("reward %.9g\n", res.reward);
        for (int k = 0; k < res.n_rewards; k++) printf("rewards/%s/mean %.9g\n", res.names[k], res.mean[k]);
        fprintf(stderr, "zen eval: %zu prompts, %zu samples (%s), %zu tokens in %.2f s; device %s: %s\n", res.prompts,
                res.samples, temperature > 0 ? "sampled" : "greedy", res.tokens, res.seconds, s.be->name, s.be->info);
    }
    zen_tokenizer_free(t);
    zen_session_close(&s);
    return rc;
}

static zen_opt opts[] = {
    {"--model", "DIR|FILE.gguf", "the base model (required)", NULL},
    {"--adapter", "DIR", "a PEFT adapter, applied unmerged", NULL},
    {"--data", "FILE.h5", "the dataset: the objective's loss and metrics over every item, in order", NULL},
    {"--choices", "FILE.jsonl", "instead of --data: records {context, choices, label}: acc and acc_norm", NULL},
    {"--prompts", "FILE.h5", "or a prompts file (zen data --format prompts): what the model generates, rewarded", NULL},
    {"--reward", "JSON", "--prompts: the reward functions, a JSON list as the run config's rewards", NULL},
    {"--reward-weights", "JSON", "--prompts: one weight per reward (default all 1)", NULL},
    {"--n", "1", "--prompts: samples per prompt", NULL},
    {"--max-new-tokens", "512", "--prompts: the longest completion", NULL},
    {"--temperature", "0", "--prompts: 0 is greedy", NULL},
    {"--top-p", "1", "--prompts: nucleus sampling", NULL},
    {"--top-k", "0", "--prompts: the k most likely (0: all)", NULL},
    {"--seed", "0", "--prompts: the samples' seed", NULL},
    {"--seq-len", "T", "tokens per sequence (required with --data; --choices: 2048)", NULL},
    {"--batch", "B", "sequences per forward pass (default 1; --choices: 4)", NULL},
    {"--device", "cpu|cuda", "the backend (default cpu)", NULL},
    {"--dtype", "auto|f32|bf16", "compute precision", NULL},
    {"--recompute", NULL, "the training forward's recompute layout (the same numbers)", NULL},
    {"--no-doc-mask", NULL, "read the file as one causal stream", NULL},
    {"--base-quant", "none|nf4|q4_0|q8_0", "quantise the projections at load", NULL},
    {"--save-logits", "FILE.safetensors", "the logits [T, V] of sequence 0, F32", NULL},
    ZEN_CLI_OBJECTIVE_OPTS,
    {"--reference", "base|DIR", "the reference model: the base (adapter off, the default) or a frozen adapter", NULL},
};

const zen_command zen_command_eval = {
    "eval", "an objective's loss and metrics on a dataset, multiple-choice accuracy (--choices), or rewards of what "
    "the model generates (--prompts)",
    NULL, opts, ZEN_COUNT(opts), zen_cmd_eval};

int zen_cmd_eval(int argc, char **argv) {
    zen_opt *o = opts;
    int n = ZEN_COUNT(opts), rc;
    if ((rc = zen_cli_parse(argc, argv, 2, o, n, "eval"))) return rc;
    const char *model_dir, *data_path, *adapter_dir = zen_cli_get(o, n, "--adapter");
    const char *device = zen_cli_get(o, n, "--device");
    if (zen_cli_get(o, n, "--choices")) return eval_choices(o, n);
    if (zen_cli_get(o, n, "--prompts")) return eval_prompts(o, n);
    long long T, B;
    if ((rc = zen_cli_require(o, n, "--model", "eval", &model_dir)) ||
        (rc = zen_cli_require(o, n, "--data", "eval", &data_path)) ||
        (rc = zen_cli_int(o, n, "--seq-len", -1, 1, 1 << 20, &T)) ||
        (rc = zen_cli_int(o, n, "--batch", 1, 1, 1 << 16, &B)))
        return rc;
    if (T < 0) return zen_fail(ZEN_ERR_INPUT, "missing required option --seq-len");
    const zen_objective_ops *ops;
    zen_objective_opts opts;
    if ((rc = zen_cli_objective(argc, argv, o, n, &ops, &opts))) return rc;
    const char *logits_path = zen_cli_get(o, n, "--save-logits"), *reference = zen_cli_get(o, n, "--reference");
    if (logits_path && !ops->per_sequence_logits)
        return zen_fail(ZEN_ERR_INPUT, "--save-logits keeps the logits of the file's sequence 0; objective %s runs %s, "
                        "not the file's sequences", ops->name, ops->item);
    int with_ref = ops->uses_reference && ops->uses_reference(&opts);
    if (reference && !with_ref)
        return zen_fail(ZEN_ERR_INPUT, "--reference is the reference model of an objective that has one; objective %s "
                        "has none", ops->name);
    zen_session s;
    zen_objective obj;
    memset(&obj, 0, sizeof obj);
    double *values = NULL, tokens = 0;
    int64_t items = 0;
    if ((rc = zen_session_open(&s, device, zen_cli_get(o, n, "--dtype"), zen_cli_get(o, n, "--base-quant"), model_dir))) goto done;
    if (adapter_dir && (rc = zen_session_load_adapter(&s, adapter_dir))) goto done;
    if (logits_path && (rc = zen_check_output(logits_path, &s.model, adapter_dir, data_path))) goto done;
    if ((rc = zen_objective_init(&obj, ops, &opts, zen_dist_ranks(), (size_t)B, (size_t)T, 1,
                                 !zen_cli_get(o, n, "--no-doc-mask"))))
        goto done;
    if ((rc = ops->open(&obj, &s.data, data_path, s.model.cfg.vocab, &items))) goto done;
    /* a reference: --reference DIR, or the base (what a run that started fresh compared against) */
    if (!reference) reference = "base";
    if (with_ref && strcmp(reference, "base") && (rc = zen_session_load_reference(&s, reference))) goto done;
    if ((rc = zen_objective_make_acts(&obj, &s.model, s.has_lora ? &s.lora : NULL, zen_cli_get(o, n, "--recompute") != NULL,
                                      &s.acts)))
        goto done;
    if ((rc = zen_session_dora_setup(&s, 0))) goto done;
    if (logits_path && !(s.acts.logits_host = zen_malloc((size_t)T * (size_t)s.model.cfg.vocab * sizeof(float)))) {
        rc = ZEN_ERR_INTERNAL;
        goto done;
    }
    if (!(values = zen_calloc((size_t)obj.n_metrics + 1, sizeof(double)))) {
        rc = ZEN_ERR_INTERNAL;
        goto done;
    }
    zen_objective_env env = {&s.model, s.has_lora ? &s.lora : NULL, s.has_ref ? &s.ref : NULL, &s.acts, 0, 0, NULL};
    if ((rc = zen_evaluate(&obj, &env, &s.data, 0, items, values, &tokens))) goto done;
    if (!isfinite(values[0])) {
        rc = zen_session_nonfinite(&s, "the eval loss", values[0]);
        goto done;
    }
    if (logits_path && zen_dist_get()->rank == 0) {
        /* sequence 0 was in the first batch; its logits were saved before the later batches */
        st_entry e = {"logits", ZEN_F32, 2, {T, s.model.cfg.vocab}};
        st_writer w;
        if (!(rc = st_writer_open(&w, logits_path, &e, 1, NULL, 0))) {
            rc = st_writer_put(&w, s.acts.logits_host, (size_t)T * (size_t)s.model.cfg.vocab * sizeof(float));
            rc = rc ? (st_writer_abort(&w), rc) : st_writer_close(&w);
        }
        if (rc) goto done;
    }
    if (zen_dist_get()->rank == 0) {
        for (int i = 0; i < obj.n_metrics; i++) printf("%s %.9g\n", obj.metrics[i], values[i]);
        fprintf(stderr, "evaluated %lld %s of up to %lld tokens (%.0f target tokens), objective %s", (long long)items,
                ops->item, T, tokens, ops->name);
        if (zen_dist_get()->size > 1) fprintf(stderr, " over %d ranks", zen_dist_get()->size);
        fprintf(stderr, "; device %s: %s\n", s.be->name, s.be->info);
    }
done:
    /* every rank's outcome, so that one failing alone does not leave the
     * others waiting (its message is the one reported) */
    rc = zen_dist_settle(rc);
    free(values);
    zen_objective_free(&obj);
    free(s.acts.logits_host);
    s.acts.logits_host = NULL;
    zen_session_close(&s);
    return rc;
}
