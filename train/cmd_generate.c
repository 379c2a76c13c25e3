/* train/cmd_generate.c: `zen generate`: a continuation of a prompt by the
 * model (+ adapter, unmerged) with a KV cache: the prompt in one forward
 * pass, then a token per step, streamed to stdout, until the tokenizer's eos
 * or <|im_end|> (unless --ignore-eos) or --max-new-tokens. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../data/tokenizer.h"
#include "../model/export.h"
#include "../model/generate.h"
#include "../model/safetensors.h"
#include "../util/error.h"
#include "../util/file.h"
#include "cli.h"
#include "commands.h"
#include "session.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* the model's tokenizer (its directory's tokenizer.json, or a GGUF's own);
 * NULL without one (then only --prompt-ids and --ids work) */
static zen_tokenizer *model_tokenizer(const char *model) {
    zen_tokenizer *t = NULL;
    struct stat st;
    if (stat(model, &st) == 0 && S_ISREG(st.st_mode)) {
        if (zen_tokenizer_from_gguf(&t, model)) t = NULL;
        return t;
    }
    char *path = zen_path_join(model, "tokenizer.json");
    if (path && zen_file_exists(path) && zen_tokenizer_load(&t, model)) t = NULL;
    free(path);
    return t;
}

static int parse_ids(const char *text, zen_ids *out) {
    const char *p = text;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX || (*end && *end != ','))
            return zen_fail(ZEN_ERR_INPUT, "--prompt-ids '%s': expected comma-separated token ids", text);
        if (zen_ids_push(out, (int32_t)v)) return ZEN_ERR_INTERNAL;
        p = *end ? end + 1 : end;
    }
    return out->len ? 0 : zen_fail(ZEN_ERR_INPUT, "--prompt-ids is empty");
}

int zen_cmd_generate(int argc, char **argv) {
    zen_opt o[] = {{"--model", 1, NULL},       {"--adapter", 1, NULL},     {"--prompt", 1, NULL},
                   {"--prompt-ids", 1, NULL},  {"--max-new-tokens", 1, NULL}, {"--temperature", 1, NULL},
                   {"--top-k", 1, NULL},       {"--top-p", 1, NULL},       {"--min-p", 1, NULL},
                   {"--seed", 1, NULL},        {"--ignore-eos", 0, NULL},  {"--ids", 0, NULL},
                   {"--device", 1, NULL},      {"--dtype", 1, NULL},       {"--base-quant", 1, NULL},
                   {"--save-logits", 1, NULL}, {"--help", 0, NULL}};
    int n = (int)(sizeof o / sizeof o[0]), rc;
    if ((rc = zen_cli_parse(argc, argv, 2, o, n, "generate"))) return rc;
    if (zen_cli_get(o, n, "--help")) {
        printf("zen generate --model DIR|FILE.gguf [--adapter DIR] (--prompt TEXT | --prompt-ids a,b,c)\n"
               "             [--max-new-tokens 64] [--temperature 0.6] [--top-k 20] [--top-p 0.95] [--min-p 0]\n"
               "             [--seed 0] [--ignore-eos] [--ids] [--device cpu] [--dtype auto|f32|bf16]\n"
               "             [--base-quant none|nf4|q4_0|q8_0] [--save-logits FILE.safetensors]\n"
               "  temperature 0 is greedy; the defaults are Qwen3's recommended sampling\n");
        return 0;
    }
    const char *model_dir, *prompt = zen_cli_get(o, n, "--prompt"), *prompt_ids = zen_cli_get(o, n, "--prompt-ids");
    const char *logits_path = zen_cli_get(o, n, "--save-logits");
    long long max_new, top_k, seed;
    double temperature, top_p, min_p;
    if ((rc = zen_cli_require(o, n, "--model", "generate", &model_dir)) ||
        (rc = zen_cli_int(o, n, "--max-new-tokens", 64, 0, 1 << 20, &max_new)) ||
        (rc = zen_cli_int(o, n, "--top-k", 20, 0, 1 << 24, &top_k)) ||
        (rc = zen_cli_int(o, n, "--seed", 0, 0, (1LL << 62), &seed)) ||
        (rc = zen_cli_float(o, n, "--temperature", 0.6, 0, 100, &temperature)) ||
        (rc = zen_cli_float(o, n, "--top-p", 0.95, 0, 1, &top_p)) ||
        (rc = zen_cli_float(o, n, "--min-p", 0, 0, 1, &min_p)))
        return rc;
    if (!prompt == !prompt_ids) return zen_fail(ZEN_ERR_INPUT, "give exactly one of --prompt or --prompt-ids");
    zen_session s;
    memset(&s, 0, sizeof s);
    zen_tokenizer *tok = NULL;
    zen_ids ids = {0}, shown = {0}; /* prompt + new tokens; the new ones with text */
    zen_kv kv = {0};
    float *logits = NULL, *saved = NULL;
    if ((rc = zen_session_open(&s, zen_cli_get(o, n, "--device"), zen_cli_get(o, n, "--dtype"),
                               zen_cli_get(o, n, "--base-quant"), model_dir)))
        goto done;
    if (zen_cli_get(o, n, "--adapter") && (rc = zen_session_load_adapter(&s, zen_cli_get(o, n, "--adapter"))))
        goto done;
    tok = model_tokenizer(model_dir);
    if (prompt_ids) {
        rc = parse_ids(prompt_ids, &ids);
    } else if (!tok) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s has no tokenizer for --prompt (give --prompt-ids)", model_dir);
    } else {
        rc = zen_tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids);
    }
    if (rc) goto done;
    if (!tok && !zen_cli_get(o, n, "--ids")) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s has no tokenizer to print text with: give --ids", model_dir);
        goto done;
    }
    int32_t V = s.model.cfg.vocab, eos = tok ? zen_tokenizer_eos(tok) : -1;
    int32_t im_end = tok ? zen_tokenizer_token_id(tok, "<|im_end|>") : -1;
    size_t prompt_n = ids.len, total = prompt_n + (size_t)max_new;
    if ((rc = zen_kv_create(&kv, &s.model, s.has_lora ? &s.lora : NULL, total, prompt_n))) goto done;
    if (!(logits = zen_malloc((size_t)V * sizeof(float))) ||
        (logits_path && !(saved = zen_malloc(((size_t)max_new + 1) * (size_t)V * sizeof(float))))) {
        rc = ZEN_ERR_INTERNAL;
        goto done;
    }
    zen_sampling samp = {(float)temperature, (float)top_p, (float)min_p, (int)top_k};
    zen_rng rng;
    zen_rng_seed(&rng, (uint64_t)seed);
    int show_ids = zen_cli_get(o, n, "--ids") != NULL, stop_at_eos = !zen_cli_get(o, n, "--ignore-eos");
    double t0 = now_s();
    rc = zen_kv_feed(&kv, ids.ids, prompt_n, logits);
    double t_prefill = now_s() - t0, t_decode = 0;
    size_t made = 0, printed = 0;
    while (!rc && made < (size_t)max_new) {
        if (saved) memcpy(saved + made * (size_t)V, logits, (size_t)V * sizeof(float));
        int32_t next = zen_sample(logits, V, &samp, &rng);
        if ((rc = zen_ids_push(&ids, next))) break;
        made++;
        int stop = stop_at_eos && (next == eos || next == im_end);
        if (show_ids) {
            printf("%s%d", made == 1 ? "" : ",", next);
        } else if (!stop) { /* the text so far, decoded at once, printed from where it stopped (an id the
                             * tokenizer has no text for, which an untrained model may pick, adds none) */
            char *text = NULL;
            size_t len = 0;
            if (zen_tokenizer_kind(tok, next) && (rc = zen_ids_push(&shown, next))) break;
            if (!(rc = zen_tokenizer_decode(tok, shown.ids, shown.len, &text, &len)) && len > printed) {
                fwrite(text + printed, 1, len - printed, stdout);
                printed = len;
            }
            free(text);
        }
        fflush(stdout);
        if (stop || made == (size_t)max_new || rc) break;
        double t1 = now_s();
        rc = zen_kv_feed(&kv, &next, 1, logits);
        t_decode += now_s() - t1;
    }
    if (!rc) {
        putchar('\n');
        fprintf(stderr, "zen generate: prompt %zu tokens in %.3f s (%.1f tokens/s), %zu new in %.3f s (%.1f tokens/s)\n",
                prompt_n, t_prefill, (double)prompt_n / t_prefill, made, t_decode,
                made > 1 ? (double)(made - 1) / t_decode : 0.0);
    }
    if (!rc && saved && made) { /* the logits each new token was chosen from [made, V] */
        st_entry e = {"logits", ZEN_F32, 2, {(int64_t)made, V}};
        st_writer w;
        if (!(rc = st_writer_open(&w, logits_path, &e, 1, NULL, 0))) {
            rc = st_writer_put(&w, saved, made * (size_t)V * sizeof(float));
            rc = rc ? (st_writer_abort(&w), rc) : st_writer_close(&w);
        }
    }
done:
    free(logits);
    free(saved);
    zen_kv_free(&kv);
    zen_ids_free(&ids);
    zen_ids_free(&shown);
    zen_tokenizer_free(tok);
    zen_session_close(&s);
    return rc;
}
