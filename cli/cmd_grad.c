/* cli/cmd_grad.c: `zen grad`: the LoRA gradients of one step's loss on
 * batch 0 (the first --batch items of the file, unshuffled; dropout only with
 * --dropout), through the objective interface, written under PEFT key names
 * with the loss and the objective's metrics in __metadata__; and
 * `zen grad --plan`: the memory plan of a step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/dataset.h"
#include "../model/decoder.h"
#include "../model/model_load.h"
#include "../objectives/objective.h"
#include "../train/dist.h"
#include "../train/session.h"
#include "../util/error.h"
#include "../util/file.h"
#include "cli.h"
#include "cli_objective.h"
#include "commands.h"

static void print_bytes_row(const char *label, size_t a, size_t b) {
    printf("  %-34s %10.3f GiB %10.3f GiB\n", label, (double)a / (1 << 30), (double)b / (1 << 30));
}

/* what the objective adds to a plan of B items of seq_len T */
typedef struct {
    const zen_objective_ops *ops;
    zen_objective_opts opts;
} plan_objective;

static int print_plan(const zen_config *cfg, const char *what, size_t stored_bytes, zen_dtype stored_dtype,
                      int base_quant, size_t largest_quant, int r, unsigned targets, size_t B, size_t T, const char *device,
                      const char *compute_name, const plan_objective *obj) {
    zen_dtype compute;
    int rc = zk_resolve_compute(device, compute_name, &compute, NULL);
    if (rc) return rc;
    /* an item of the objective lays out seqs sequences of T (and att of attention rows, shared layouts) */
    int att, seqs = zen_objective_seqs_per_item(obj->ops, &obj->opts, T, &att);
    size_t items = B;
    B = (size_t)seqs * items;
    zen_plan keep = zen_plan_make_quant(cfg, device, compute, stored_bytes, stored_dtype, base_quant, largest_quant, r, targets, B,
                                        T, 0, 0);
    zen_plan rec = zen_plan_make_quant(cfg, device, compute, stored_bytes, stored_dtype, base_quant, largest_quant, r, targets, B,
                                       T, 1, 0);
    size_t layout = obj->ops->shared_layout ? zen_shared_scratch_bytes(cfg, B * T, (size_t)att * items * T) : 0;
    keep.scratch += layout, rec.scratch += layout, keep.total += layout, rec.total += layout;
    /* GRPO samples its completions before the step, with the step's buffers held: the generation's KV cache
     * (each prompt once, each sample's own pages) and its logits come on top */
    size_t cache, gen_logits, G = (size_t)obj->opts.grpo_num_generations,
                              C = (size_t)obj->opts.grpo_max_completion_length;
    int grpo = !strcmp(obj->ops->name, "grpo");
    if (C > T - 1) C = T - 1; /* a completion leaves a prompt at least one token (zen grad --completions) */
    zen_objective_generation_bytes(obj->ops, &obj->opts, cfg, compute, items, T, &cache, &gen_logits);
    keep.total += cache + gen_logits, rec.total += cache + gen_logits;
    int ntargets = 0;
    for (int t = 0; t < ZEN_NUM_TARGETS; t++) ntargets += (targets >> t) & 1;
    printf("memory plan (%s, %s compute): %s, %lld parameters, seq %zu, batch %zu, "
           "LoRA r=%d on %d targets (%zu trainable), no LoRA dropout\n",
           device, compute == ZEN_BF16 ? "bf16" : "f32", what, (long long)zen_config_param_count(cfg), T, items, r,
           ntargets, keep.lora_params / sizeof(float));
    if (grpo)
        printf("objective grpo: %zu prompt%s of up to %zu tokens, each with %zu completions of up to %zu; a "
               "micro-batch's rows: %zu (%s), its attention rows %zu\n", items, items == 1 ? "" : "s", T - C, G, C,
               B * T, strcmp(obj->opts.pair_layout, "shared") ? "apart: G sequences of seq_len"
                                                               : "each prompt once, rounded up to sequences of seq_len",
               (size_t)att * items * T);
    else if (seqs > 1)
        printf("objective %s: each of the %zu %s lays out %d sequences of seq_len\n", obj->ops->name, items,
               obj->ops->item, seqs);
    printf("  %-34s %14s %14s\n", "", "keep all", "recompute");
    char label[64];
    if (base_quant >= 0)
        snprintf(label, sizeof label, "base weights (%s, projections %s)",
                 zen_dtype_name(zen_device_weight_dtype(stored_dtype, compute)), zen_dtype_name((zen_dtype)base_quant));
    else if (zen_dtype_is_quant(stored_dtype))
        snprintf(label, sizeof label, "base weights (as stored, %s embedding)", zen_dtype_name(stored_dtype));
    else
        snprintf(label, sizeof label, "base weights (%s, frozen)",
                 zen_dtype_name(zen_device_weight_dtype(stored_dtype, compute)));
    print_bytes_row(label, keep.weights, rec.weights);
    print_bytes_row("LoRA A,B (fp32)", keep.lora_params, rec.lora_params);
    print_bytes_row("LoRA gradients (fp32)", keep.lora_grads, rec.lora_grads);
    print_bytes_row("AdamW moments (fp32, training)", keep.optimizer, rec.optimizer);
    print_bytes_row("saved activations", keep.saved_acts, rec.saved_acts);
    print_bytes_row("scratch (backward, recomputed layer)", keep.scratch, rec.scratch);
    snprintf(label, sizeof label, "LM head chunk [%zu, V] logits", zen_head_rows(B * T));
    print_bytes_row(label, keep.logits, rec.logits);
    print_bytes_row("backend scratch and workspace", keep.backend, rec.backend);
    if (cache || gen_logits) {
        print_bytes_row("generation KV cache (prompts once)", cache, cache);
        print_bytes_row("generation logits [rows, V]", gen_logits, gen_logits);
    }
    print_bytes_row("total", keep.total, rec.total);
    return 0;
}

/* zen grad --plan: needs only a config (from --model or --preset) */
static int run_plan(const char *model_dir, const char *preset, const char *dtype_name, const char *quant_name,
                    int r, unsigned targets, size_t B, size_t T, const char *device, const char *compute,
                    const plan_objective *obj) {
    zen_config cfg;
    int rc, quant = -1;
    if (!device) device = "cpu";
    if (quant_name && (rc = zen_base_quant_parse(quant_name, &quant))) return zen_fail_context(rc, "option --base-quant");
    if (model_dir) {
        zk_backend *be = zk_open("cpu", "f32"); /* only the config and the weights' sizes are read */
        if (!be) return ZEN_ERR_INTERNAL;
        zen_model m;
        rc = zen_model_load(&m, be, model_dir);
        if (!rc) {
            rc = print_plan(&m.cfg, model_dir, m.weight_bytes, m.main_dtype, quant, m.largest_quant, r, targets, B, T,
                            device, compute, obj);
            zen_model_free(&m);
        }
        zk_close(be);
        return rc;
    }
    const char *json = zen_preset_json(preset);
    if (!json)
        return zen_fail(ZEN_ERR_INPUT, "option --preset: '%s' is unknown (expected %s)", preset,
                        zen_preset_names());
    if ((rc = zen_config_parse(&cfg, json, preset))) return rc;
    zen_dtype dt = ZEN_BF16;
    if (dtype_name && zen_dtype_parse_float(dtype_name, &dt))
        return zen_fail(ZEN_ERR_INPUT, "option --weights-dtype: '%s' is not f32, f16 or bf16", dtype_name);
    size_t wbytes = zen_dtype_bytes(dt, (size_t)zen_config_param_count(&cfg));
    char what[128];
    snprintf(what, sizeof what, "preset %s", preset);
    return print_plan(&cfg, what, wbytes, dt, quant, 0, r, targets, B, T, device, compute, obj);
}

/* zen grad through the objective: batch 0, its gradients and metrics into out_path */
static int grad_step(zen_session *s, const zen_objective_ops *ops, const zen_objective_opts *opts, const char *reference,
                     const char *adapter_dir, const char *data_path, const char *out_path, size_t B, size_t T,
                     int doc_mask, int recompute, uint64_t dropout_seed) {
    zen_objective obj;
    int64_t items;
    int rc = zen_objective_init(&obj, ops, opts, zen_dist_ranks(), B, T, 1, doc_mask);
    if (!rc) rc = ops->open(&obj, &s->data, data_path, s->model.cfg.vocab, &items);
    if (!rc && items < (int64_t)B)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: %lld %s of up to %zu tokens, fewer than one batch of %zu", data_path,
                      (long long)items, ops->item, T, B);
    /* a reference: --reference DIR, or base; by default the adapter being continued, else the base */
    if (!reference) reference = adapter_dir ? adapter_dir : "base";
    if (!rc && ops->uses_reference && ops->uses_reference(opts) && strcmp(reference, "base"))
        rc = zen_session_load_reference(s, reference);
    if (!rc) rc = zen_lora_alloc_grads(&s->lora);
    if (!rc) rc = zen_objective_make_acts(&obj, &s->model, &s->lora, recompute, &s->acts);
    if (!rc) rc = zen_session_dora_setup(s, !adapter_dir);
    int64_t *ids = zen_malloc(B * sizeof(int64_t));
    double *pre = zen_calloc((size_t)ops->n_pre, sizeof(double)), *sums = zen_calloc((size_t)ops->n_sums, sizeof(double));
    double *values = zen_calloc((size_t)obj.n_metrics + 1, sizeof(double));
    if (!rc && (!ids || !pre || !sums || !values)) rc = ZEN_ERR_INTERNAL;
    for (size_t i = 0; !rc && i < B; i++) ids[i] = (int64_t)i;
    zen_objective_env env = {&s->model, &s->lora, s->has_ref ? &s->ref : NULL, &s->acts, 0, 0, NULL};
    if (!rc) rc = ops->load(&obj, 0, &s->data, ids, B);
    if (!rc) rc = ops->pre(&obj, 0, &env, pre);
    if (!rc && pre[0] == 0) rc = zen_fail(ZEN_ERR_INPUT, "%s: batch 0 has no target token with loss_mask 1", data_path);
    if (!rc) rc = ops->run(&obj, 0, &env, dropout_seed, 1, pre, sums);
    if (!rc) rc = zk_status(s->be);
    if (!rc) ops->values(&obj, sums, values);
    if (!rc && !isfinite(values[0])) rc = zen_session_nonfinite(s, "the loss", values[0]);
    /* the loss, the trained tokens and every metric of a step in __metadata__, as text */
    enum { META = 5 + 16 };
    char text[META][40];
    const char *meta[2 * META];
    int nm = 0;
    meta[2 * nm] = "format", meta[2 * nm++ + 1] = "pt";
    meta[2 * nm] = "objective", meta[2 * nm++ + 1] = ops->name;
    snprintf(text[nm], sizeof text[nm], "%zu", B);
    meta[2 * nm] = ops->item, meta[2 * nm + 1] = text[nm], nm++;
    snprintf(text[nm], sizeof text[nm], "%.0f", pre[0]);
    meta[2 * nm] = "loss_tokens", meta[2 * nm + 1] = text[nm], nm++;
    for (int i = 0; i < obj.n_train && nm < META; i++) {
        snprintf(text[nm], sizeof text[nm], "%.17g", values[i]);
        meta[2 * nm] = obj.metrics[i], meta[2 * nm + 1] = text[nm], nm++;
    }
    if (!rc) rc = zen_lora_write_tensors(&s->lora, &s->model.cfg, s->lora.grads, out_path, ZEN_F32, meta, nm);
    if (!rc) {
        for (int i = 0; i < obj.n_train; i++) printf("%s %.9g\n", obj.metrics[i], values[i]);
        fprintf(stderr, "zen grad: objective %s on %zu %s, %.0f target tokens; device %s: %s\n", ops->name, B, ops->item,
                pre[0], s->be->name, s->be->info);
    }
    free(ids);
    free(pre);
    free(sums);
    free(values);
    zen_objective_free(&obj);
    return rc;
}

static zen_opt opts[] = {
    {"--model", "DIR|FILE.gguf", "the base model (required)", NULL},
    {"--adapter", "DIR", "a PEFT adapter to take the gradients of (default: a fresh one: A from --seed, B zero)", NULL},
    {"--data", "FILE.h5", "the dataset (a zen-tokens-v1 file; records of the --objective's layout, zen info)", NULL},
    {"--completions", "FILE.jsonl", "grpo: prompts with their completions, rewards and old log-probabilities", NULL},
    {"--seq-len", "T", "tokens per sequence (required)", NULL},
    {"--batch", "B", "sequences (pairs) of batch 0 (default 1)", NULL},
    {"--out", "FILE.safetensors", "where the gradients go, under PEFT names, the loss in __metadata__", NULL},
    {"--rank", "8", "a fresh adapter's r", NULL},
    {"--alpha", "16", "a fresh adapter's lora_alpha", NULL},
    {"--targets", "all|q,k,v,o,gate,up,down", "a fresh adapter's projections", NULL},
    {"--rslora", NULL, "a fresh adapter's scale alpha / sqrt(r)", NULL},
    {"--dora", NULL, "a fresh adapter is DoRA (magnitudes m beside A and B)", NULL},
    {"--dora-clean-base", NULL, "DoRA with dropout: the (m/n - 1) term on x, not dropout(x) as PEFT", NULL},
    {"--dropout", "P", "LoRA dropout as a training step draws it (needs --dropout-seed)", NULL},
    {"--dropout-seed", "S", "the seed of the dropout masks", NULL},
    {"--seed", "0", "a fresh adapter's A", NULL},
    {"--recompute", NULL, "keep only each layer's input and run it again in backward (bit-identical)", NULL},
    {"--device", "cpu|cuda", "the backend (default cpu)", NULL},
    {"--dtype", "auto|f32|bf16", "compute precision (auto: bf16 where the device has native bf16)", NULL},
    {"--base-quant", "none|nf4|q4_0|q8_0", "quantise the projections at load (QLoRA)", NULL},
    {"--no-doc-mask", NULL, "read the file as one causal stream (documents not kept apart)", NULL},
    ZEN_CLI_OBJECTIVE_OPTS,
    {"--reference", "base|DIR", "the reference model: the base (adapter off) or a frozen adapter (default: --adapter, continued)", NULL},
    {"--plan", NULL, "print the memory plan of a step instead (needs --model or --preset, --seq-len)", NULL},
    {"--preset", "NAME", "--plan: a preset's config instead of --model", NULL},
    {"--weights-dtype", "bf16", "--plan --preset: the dtype the weights would be stored in", NULL},
};

const zen_command zen_command_grad = {
    "grad", "the LoRA gradients of one batch (batch 0, no dropout) under PEFT names, or a step's memory plan",
    NULL, opts, ZEN_COUNT(opts), zen_cmd_grad};

int zen_cmd_grad(int argc, char **argv) {
    zen_opt *o = opts;
    int n = ZEN_COUNT(opts), rc;
    if ((rc = zen_cli_parse(argc, argv, 2, o, n, "grad"))) return rc;
    long long T, B, rank, seed, dropout_seed;
    double alpha, dropout;
    unsigned targets;
    const char *targets_s = zen_cli_get(o, n, "--targets");
    if ((rc = zen_cli_int(o, n, "--seq-len", -1, 1, 1 << 20, &T)) ||
        (rc = zen_cli_int(o, n, "--batch", 1, 1, 1 << 16, &B)) ||
        (rc = zen_cli_int(o, n, "--rank", 8, 1, 4096, &rank)) ||
        (rc = zen_cli_float(o, n, "--alpha", 16.0, 1e-6, 1e6, &alpha)) ||
        (rc = zen_cli_int(o, n, "--seed", 0, 0, (1LL << 62), &seed)) ||
        (rc = zen_cli_float(o, n, "--dropout", 0.0, 0.0, 0.95, &dropout)) ||
        (rc = zen_cli_int(o, n, "--dropout-seed", 0, 1, (1LL << 62), &dropout_seed)) ||
        (rc = zen_lora_parse_targets(targets_s ? targets_s : "all", &targets)))
        return rc;
    if (T < 0) return zen_fail(ZEN_ERR_INPUT, "missing required option --seq-len");
    const char *model_dir = zen_cli_get(o, n, "--model"), *preset = zen_cli_get(o, n, "--preset");
    if (zen_cli_get(o, n, "--plan")) {
        if (!model_dir == !preset)
            return zen_fail(ZEN_ERR_INPUT, "--plan: give exactly one of --model or --preset");
        plan_objective obj;
        if ((rc = zen_cli_objective(argc, argv, o, n, &obj.ops, &obj.opts))) return rc;
        return run_plan(model_dir, preset, zen_cli_get(o, n, "--weights-dtype"), zen_cli_get(o, n, "--base-quant"),
                        (int)rank, targets, (size_t)B,
                        (size_t)T, zen_cli_get(o, n, "--device"), zen_cli_get(o, n, "--dtype"), &obj);
    }
    const char *data_path, *out_path, *adapter_dir = zen_cli_get(o, n, "--adapter");
    const char *device = zen_cli_get(o, n, "--device");
    const char *completions = zen_cli_get(o, n, "--completions");
    if (completions && zen_cli_get(o, n, "--data"))
        return zen_fail(ZEN_ERR_INPUT, "--completions is the data of objective grpo: give it or --data, not both");
    if ((rc = zen_cli_require(o, n, "--model", "grad", &model_dir)) ||
        (!completions && (rc = zen_cli_require(o, n, "--data", "grad", &data_path))) ||
        (rc = zen_cli_require(o, n, "--out", "grad", &out_path)))
        return rc;
    if (completions) data_path = completions;
    if (adapter_dir && (zen_cli_get(o, n, "--rank") || zen_cli_get(o, n, "--alpha") || targets_s ||
                        zen_cli_get(o, n, "--rslora") || zen_cli_get(o, n, "--dora")))
        return zen_fail(ZEN_ERR_INPUT, "--rank/--alpha/--targets/--rslora/--dora describe a fresh adapter "
                                       "and cannot be combined with --adapter (whose use_dora says)");

    if ((dropout > 0) != (zen_cli_get(o, n, "--dropout-seed") != NULL))
        return zen_fail(ZEN_ERR_INPUT, "--dropout P and --dropout-seed S come together (the masks a training step with "
                        "that seed draws)");
    const zen_objective_ops *ops;
    zen_objective_opts opts;
    if ((rc = zen_cli_objective(argc, argv, o, n, &ops, &opts))) return rc;
    if (completions && strcmp(ops->name, "grpo"))
        return zen_fail(ZEN_ERR_INPUT, "--completions is for --objective grpo (this one is %s)", ops->name);
    if (zen_cli_get(o, n, "--reference") && !(ops->uses_reference && ops->uses_reference(&opts)))
        return zen_fail(ZEN_ERR_INPUT, "--reference is the reference model of an objective that has one; objective %s "
                        "has none", ops->name);

    zen_session s;
    memset(&s, 0, sizeof s);
    if ((rc = zen_session_open(&s, device, zen_cli_get(o, n, "--dtype"), zen_cli_get(o, n, "--base-quant"), model_dir))) goto done;
    if (adapter_dir) rc = zen_session_load_adapter(&s, adapter_dir);
    else rc = zen_session_fresh_adapter(&s, (int)rank, (float)alpha, zen_cli_get(o, n, "--rslora") != NULL, 0.0f,
                                        targets, (uint64_t)seed, zen_cli_get(o, n, "--dora") != NULL);
    if (rc || (rc = zen_check_output(out_path, &s.model, adapter_dir, data_path))) goto done;
    s.lora.dropout = (float)dropout;
    s.lora.dora_clean_base = zen_cli_get(o, n, "--dora-clean-base") != NULL;
    rc = grad_step(&s, ops, &opts, zen_cli_get(o, n, "--reference"), adapter_dir, data_path, out_path, (size_t)B,
                   (size_t)T, !zen_cli_get(o, n, "--no-doc-mask"), zen_cli_get(o, n, "--recompute") != NULL,
                   (uint64_t)dropout_seed);
done:
    zen_session_close(&s);
    return rc;
}
