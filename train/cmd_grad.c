/* train/cmd_grad.c: `zen grad`: the LoRA gradients of the mean masked loss of
 * batch 0 (unshuffled, no dropout), written under PEFT key names with the loss
 * in __metadata__; and `zen grad --plan`: the memory plan of a step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/dataset.h"
#include "../model/decoder.h"
#include "../util/error.h"
#include "../util/file.h"
#include "cli.h"
#include "commands.h"
#include "../data/pairs.h"
#include "evaluate.h"
#include "pref_step.h"
#include "session.h"

static void print_bytes_row(const char *label, size_t a, size_t b) {
    printf("  %-34s %10.3f GiB %10.3f GiB\n", label, (double)a / (1 << 30), (double)b / (1 << 30));
}

static int print_plan(const zen_config *cfg, const char *what, size_t stored_bytes, zen_dtype stored_dtype,
                      int base_quant, size_t largest_quant, int r, unsigned targets, size_t B, size_t T, const char *device,
                      const char *compute_name) {
    zen_dtype compute;
    int rc = zk_resolve_compute(device, compute_name, &compute, NULL);
    if (rc) return rc;
    zen_plan keep = zen_plan_make_quant(cfg, device, compute, stored_bytes, stored_dtype, base_quant, largest_quant, r, targets, B,
                                        T, 0, 0);
    zen_plan rec = zen_plan_make_quant(cfg, device, compute, stored_bytes, stored_dtype, base_quant, largest_quant, r, targets, B,
                                       T, 1, 0);
    int ntargets = 0;
    for (int t = 0; t < ZEN_NUM_TARGETS; t++) ntargets += (targets >> t) & 1;
    printf("memory plan (%s, %s compute): %s, %lld parameters, seq %zu, batch %zu, "
           "LoRA r=%d on %d targets (%zu trainable), no LoRA dropout\n",
           device, compute == ZEN_BF16 ? "bf16" : "f32", what, (long long)zen_config_param_count(cfg), T, B, r,
           ntargets, keep.lora_params / sizeof(float));
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
    print_bytes_row("total", keep.total, rec.total);
    return 0;
}

/* zen grad --plan: needs only a config (from --model or --preset) */
static int run_plan(const char *model_dir, const char *preset, const char *dtype_name, const char *quant_name,
                    int r, unsigned targets, size_t B, size_t T, const char *device, const char *compute) {
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
            rc = print_plan(&m.cfg, model_dir, m.weight_bytes, m.main_dtype, quant, m.largest_quant, r, targets, B, T, device, compute);
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
    return print_plan(&cfg, what, wbytes, dt, quant, 0, r, targets, B, T, device, compute);
}

/* sequences 0..B-1 of the dataset (batch 0, unshuffled) */
static int read_batch(const zen_dataset *d, zen_batch *b) {
    int64_t have = zen_dataset_num_sequences(d, b->T);
    if (have < (int64_t)b->B)
        return zen_fail(ZEN_ERR_INPUT, "%s: %lld tokens make %lld sequences of %zu, fewer than one batch of %zu",
                        d->path, (long long)d->n_tokens, (long long)have, b->T, b->B);
    for (size_t row = 0; row < b->B; row++) {
        int rc = zen_batch_read_row(b, d, row, (int64_t)row);
        if (rc) return rc;
    }
    return 0;
}

/* --objective and its options */
static int zen_cli_pref_opts(const zen_opt *o, int n, zen_pref_opts *p) {
    memset(p, 0, sizeof *p);
    const char *obj = zen_cli_get(o, n, "--objective"), *loss = zen_cli_get(o, n, "--dpo-loss");
    const char *nll = zen_cli_get(o, n, "--orpo-nll");
    int rc;
    if (obj && zen_objective_parse(obj, &p->objective))
        return zen_fail(ZEN_ERR_INPUT, "option --objective: '%s' is not sft, dpo or orpo", obj);
    if (loss && zen_dpo_loss_parse(loss, &p->loss))
        return zen_fail(ZEN_ERR_INPUT, "option --dpo-loss: '%s' is not sigmoid, ipo, robust or hinge", loss);
    if (nll && strcmp(nll, "all") && strcmp(nll, "completion"))
        return zen_fail(ZEN_ERR_INPUT, "option --orpo-nll: '%s' is not all or completion", nll);
    p->nll_prompt = !nll || !strcmp(nll, "all");
    if ((rc = zen_cli_float(o, n, "--beta", 0.1, 1e-9, 1e9, &p->beta)) ||
        (rc = zen_cli_float(o, n, "--label-smoothing", 0.0, 0.0, 0.4999999, &p->label_smoothing)))
        return rc;
    static const char *const dpo_only[] = {"--dpo-loss", "--label-smoothing"};
    for (int i = 0; i < 2; i++)
        if (p->objective != ZEN_OBJECTIVE_DPO && zen_cli_get(o, n, dpo_only[i]))
            return zen_fail(ZEN_ERR_INPUT, "%s needs --objective dpo", dpo_only[i]);
    if (p->objective != ZEN_OBJECTIVE_ORPO && nll) return zen_fail(ZEN_ERR_INPUT, "--orpo-nll needs --objective orpo");
    if (p->objective == ZEN_OBJECTIVE_SFT && (zen_cli_get(o, n, "--beta") || zen_cli_get(o, n, "--pair-layout")))
        return zen_fail(ZEN_ERR_INPUT, "--beta and --pair-layout need --objective dpo or orpo");
    if (p->label_smoothing > 0 && p->loss != ZEN_DPO_ROBUST)
        return zen_fail(ZEN_ERR_INPUT, "--label-smoothing is the robust loss's epsilon; it needs --dpo-loss robust");
    return 0;
}

/* zen grad --objective dpo|orpo: pairs 0 .. B-1 of a preference file */
static int grad_pairs(zen_session *s, const zen_pref_opts *pref, const char *reference, const char *adapter_dir,
                      int shared, const char *data_path, const char *out_path, size_t B, size_t T, int recompute) {
    int rc = zen_session_open_pairs(s, data_path, T);
    if (rc) return rc;
    if (zen_pairs_count(&s->data) < (int64_t)B)
        return zen_fail(ZEN_ERR_INPUT, "%s: %lld pairs, fewer than one batch of %zu", data_path,
                        (long long)zen_pairs_count(&s->data), B);
    /* DPO's reference: --reference DIR, or base; by default the adapter being continued, else the base */
    if (!reference) reference = adapter_dir ? adapter_dir : "base";
    if (pref->objective == ZEN_OBJECTIVE_DPO && strcmp(reference, "base") &&
        (rc = zen_session_load_reference(s, reference)))
        return rc;
    if ((rc = zen_lora_alloc_grads(&s->lora)) || (rc = zen_session_make_pair_acts(s, B, T, recompute)) ||
        (rc = zen_session_dora_setup(s, !adapter_dir)))
        return rc;
    zen_pair_batch pb;
    if ((rc = zen_pair_batch_alloc(&pb, 2 * B * T, shared))) return rc;
    for (size_t i = 0; i < B && !rc; i++)
        rc = zen_pair_batch_add_pair(&pb, &s->data, (int64_t)i, pref->objective == ZEN_OBJECTIVE_ORPO && pref->nll_prompt);
    zen_pref_ctx ctx = {*pref, s->has_ref ? &s->ref : NULL, NULL};
    zen_pref_sums sums;
    memset(&sums, 0, sizeof sums);
    if (!rc) rc = zen_pref_run(&ctx, &pb, &s->model, &s->lora, &s->acts, 0, (double)B, zen_pref_nll_tokens(pref, &pb),
                               1, &sums);
    const char *names[ZEN_PM_COUNT];
    double values[ZEN_PM_COUNT];
    int nm = zen_pref_metrics(pref, &sums, names, values);
    if (!rc && !isfinite(values[0])) rc = zen_session_nonfinite(s, "the loss", values[0]);
    /* the loss and every metric in __metadata__, as text */
    char text[ZEN_PM_COUNT][40], pairs_text[32];
    const char *meta[2 * (ZEN_PM_COUNT + 3)];
    int nmeta = 0;
    meta[2 * nmeta] = "format", meta[2 * nmeta++ + 1] = "pt";
    meta[2 * nmeta] = "objective", meta[2 * nmeta++ + 1] = zen_objective_name(pref->objective);
    snprintf(pairs_text, sizeof pairs_text, "%zu", B);
    meta[2 * nmeta] = "pairs", meta[2 * nmeta++ + 1] = pairs_text;
    for (int i = 0; i < nm; i++) {
        snprintf(text[i], sizeof text[i], "%.17g", values[i]);
        meta[2 * nmeta] = names[i], meta[2 * nmeta++ + 1] = text[i];
    }
    if (!rc) rc = zen_lora_write_tensors(&s->lora, &s->model.cfg, s->lora.grads, out_path, ZEN_F32, meta, nmeta);
    if (!rc) {
        printf("loss %.9g\n", values[0]);
        for (int i = 1; i < nm; i++) printf("%s %.9g\n", names[i], values[i]);
        fprintf(stderr, "zen grad: %s on %zu pairs (%s prompt); device %s: %s\n", zen_objective_name(pref->objective),
                B, shared ? "shared" : "apart", s->be->name, s->be->info);
    }
    zen_pair_batch_free(&pb);
    return rc;
}

static zen_opt opts[] = {
    {"--model", "DIR|FILE.gguf", "the base model (required)", NULL},
    {"--adapter", "DIR", "a PEFT adapter to take the gradients of (default: a fresh one: A from --seed, B zero)", NULL},
    {"--data", "FILE.h5", "the dataset (a zen-tokens-v1 file; a preference file with --objective dpo|orpo)", NULL},
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
    {"--objective", "sft|dpo|orpo", "what the step optimises (default sft)", NULL},
    {"--beta", "0.1", "DPO's beta (IPO's tau), ORPO's lambda", NULL},
    {"--dpo-loss", "sigmoid|ipo|robust|hinge", "DPO's loss (default sigmoid)", NULL},
    {"--label-smoothing", "0", "the robust loss's epsilon", NULL},
    {"--orpo-nll", "all|completion", "ORPO's NLL over prompt + chosen (all) or the chosen completion", NULL},
    {"--reference", "base|DIR", "DPO's reference: the base (adapter off) or a frozen adapter (default: --adapter)", NULL},
    {"--pair-layout", "shared|apart", "a pair's prompt run once (shared) or per completion (apart)", NULL},
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
        return run_plan(model_dir, preset, zen_cli_get(o, n, "--weights-dtype"), zen_cli_get(o, n, "--base-quant"),
                        (int)rank, targets, (size_t)B,
                        (size_t)T, zen_cli_get(o, n, "--device"), zen_cli_get(o, n, "--dtype"));
    }
    const char *data_path, *out_path, *adapter_dir = zen_cli_get(o, n, "--adapter");
    const char *device = zen_cli_get(o, n, "--device");
    if ((rc = zen_cli_require(o, n, "--model", "grad", &model_dir)) ||
        (rc = zen_cli_require(o, n, "--data", "grad", &data_path)) ||
        (rc = zen_cli_require(o, n, "--out", "grad", &out_path)))
        return rc;
    if (adapter_dir && (zen_cli_get(o, n, "--rank") || zen_cli_get(o, n, "--alpha") || targets_s ||
                        zen_cli_get(o, n, "--rslora") || zen_cli_get(o, n, "--dora")))
        return zen_fail(ZEN_ERR_INPUT, "--rank/--alpha/--targets/--rslora/--dora describe a fresh adapter "
                                       "and cannot be combined with --adapter (whose use_dora says)");

    if ((dropout > 0) != (zen_cli_get(o, n, "--dropout-seed") != NULL))
        return zen_fail(ZEN_ERR_INPUT, "--dropout P and --dropout-seed S come together (the masks a training step with "
                        "that seed draws)");
    zen_pref_opts pref;
    if ((rc = zen_cli_pref_opts(o, n, &pref))) return rc;
    const char *layout = zen_cli_get(o, n, "--pair-layout");
    if (layout && strcmp(layout, "shared") && strcmp(layout, "apart"))
        return zen_fail(ZEN_ERR_INPUT, "option --pair-layout: '%s' is not shared or apart", layout);
    if (pref.objective != ZEN_OBJECTIVE_DPO && zen_cli_get(o, n, "--reference"))
        return zen_fail(ZEN_ERR_INPUT, "--reference is DPO's reference model; it needs --objective dpo");

    zen_session s;
    memset(&s, 0, sizeof s);
    zen_batch batch;
    memset(&batch, 0, sizeof batch);
    if ((rc = zen_batch_alloc(&batch, (size_t)B, (size_t)T))) goto done;
    if ((rc = zen_session_open(&s, device, zen_cli_get(o, n, "--dtype"), zen_cli_get(o, n, "--base-quant"), model_dir))) goto done;
    if (adapter_dir) rc = zen_session_load_adapter(&s, adapter_dir);
    else rc = zen_session_fresh_adapter(&s, (int)rank, (float)alpha, zen_cli_get(o, n, "--rslora") != NULL, 0.0f,
                                        targets, (uint64_t)seed, zen_cli_get(o, n, "--dora") != NULL);
    if (rc || (rc = zen_check_output(out_path, &s.model, adapter_dir, data_path))) goto done;
    s.lora.dropout = (float)dropout;
    s.lora.dora_clean_base = zen_cli_get(o, n, "--dora-clean-base") != NULL;
    if (pref.objective != ZEN_OBJECTIVE_SFT) {
        rc = grad_pairs(&s, &pref, zen_cli_get(o, n, "--reference"), adapter_dir, !layout || !strcmp(layout, "shared"),
                        data_path, out_path, (size_t)B, (size_t)T, zen_cli_get(o, n, "--recompute") != NULL);
        goto done;
    }
    if ((rc = zen_session_open_data(&s, data_path, !zen_cli_get(o, n, "--no-doc-mask"), (size_t)T))) goto done;
    if ((rc = read_batch(&s.data, &batch))) goto done;
    size_t count = zen_batch_mask_count(&batch);
    if (count == 0) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: batch 0 has no target token with loss_mask 1", data_path);
        goto done;
    }
    if ((rc = zen_lora_alloc_grads(&s.lora))) goto done;
    if ((rc = zen_session_make_acts(&s, (size_t)B, (size_t)T, zen_cli_get(o, n, "--recompute") != NULL))) goto done;
    if ((rc = zen_session_dora_setup(&s, !adapter_dir))) goto done;
    double loss_sum;
    if ((rc = zen_batch_run(&batch, &s.model, &s.lora, &s.acts, 1.0f / (float)count, (uint64_t)dropout_seed,
                            &loss_sum)))
        goto done;
    double loss = loss_sum / (double)count;
    if (!isfinite(loss)) {
        rc = zen_session_nonfinite(&s, "the loss", loss);
        goto done;
    }
    char loss_text[64], tokens_text[32];
    snprintf(loss_text, sizeof loss_text, "%.17g", loss);
    snprintf(tokens_text, sizeof tokens_text, "%zu", count);
    const char *meta[] = {"format", "pt", "loss", loss_text, "loss_tokens", tokens_text};
    if ((rc = zen_lora_write_tensors(&s.lora, &s.model.cfg, s.lora.grads, out_path, ZEN_F32, meta, 3))) goto done;
    printf("loss %.9g\n", loss);
    fprintf(stderr, "zen grad: %zu target tokens; device %s: %s\n", count, s.be->name, s.be->info);
done:
    zen_session_close(&s);
    zen_batch_free(&batch);
    return rc;
}
