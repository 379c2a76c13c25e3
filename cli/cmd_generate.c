/* cli/cmd_generate.c: `zen generate`: a continuation of a prompt by the
 * model (+ adapter, unmerged) with a KV cache: the prompt in forward passes
 * of up to a chunk of tokens, then a token per step, streamed to stdout,
 * until the tokenizer's eos or <|im_end|> (unless --ignore-eos) or
 * --max-new-tokens. --messages renders a conversation in Qwen3's ChatML as
 * zen data does, with the generation prompt; --chat is a loop over stdin
 * lines (user turns) that keeps the cache across turns. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "../data/prepare.h"
#include "../data/tokenizer.h"
#include "../export/export.h"
#include "../model/generate.h"
#include "../formats/safetensors.h"
#include "../util/error.h"
#include "../util/file.h"
#include "cli.h"
#include "commands.h"
#include "generate_samples.h"
#include "../train/session.h"

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
    char *path = zen_path_join(model, "tokenizer.json");
    int have = (stat(model, &st) == 0 && S_ISREG(st.st_mode)) || (path && zen_file_exists(path));
    free(path);
    if (have && zen_open_tokenizer(model, &t)) t = NULL;
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

/* what one generation needs: the cache, the sampler, where the text goes */
typedef struct {
    zen_kv kv;
    zen_tokenizer *tok;
    int32_t vocab, eos, im_end;
    float *logits;      /* [vocab] after the last fed token */
    int save_logits;    /* --save-logits: keep the logits of every new token */
    float *saved;       /* [cap_saved, vocab], the first n_saved used */
    size_t n_saved, cap_saved;
    zen_sampling samp;
    zen_rng rng;
    int show_ids, stop_at_eos;
    double t_prefill, t_decode;
    size_t n_prefill, n_decode;
} gen;

/* feeds ids[n] in chunks of the cache's largest */
static int feed(gen *g, const int32_t *ids, size_t n) {
    double t0 = now_s();
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i += g->kv.max_chunk)
        rc = zen_kv_feed(&g->kv, ids + i, n - i < g->kv.max_chunk ? n - i : g->kv.max_chunk, g->logits);
    g->t_prefill += now_s() - t0;
    g->n_prefill += n;
    return rc;
}

/* one new token: its logits kept (--save-logits), its text or id printed */
typedef struct {
    gen *g;
    size_t made, printed;
    zen_ids shown; /* the new tokens with text */
} stream;

static int on_token(void *ctx, int32_t next) {
    stream *st = ctx;
    gen *g = st->g;
    if (g->save_logits) { /* every turn's, in --chat */
        if (g->n_saved == g->cap_saved) {
            size_t cap = g->cap_saved ? 2 * g->cap_saved : 64;
            float *more = realloc(g->saved, cap * (size_t)g->vocab * sizeof(float));
            if (!more) return zen_fail(ZEN_ERR_INTERNAL, "out of memory keeping logits (--save-logits)");
            g->saved = more, g->cap_saved = cap;
        }
        memcpy(g->saved + g->n_saved++ * (size_t)g->vocab, g->logits, (size_t)g->vocab * sizeof(float));
    }
    int stop = g->stop_at_eos && (next == g->eos || next == g->im_end);
    st->made++;
    if (g->show_ids) {
        printf("%s%d", st->made == 1 ? "" : ",", next);
    } else if (!stop) { /* the text so far, decoded at once, printed from where it stopped (an id the
                         * tokenizer has no text for, which an untrained model may pick, adds none) */
        char *text = NULL;
        size_t len = 0;
        if (zen_tokenizer_kind(g->tok, next) && zen_ids_push(&st->shown, next)) return ZEN_ERR_INTERNAL;
        int rc = zen_tokenizer_decode(g->tok, st->shown.ids, st->shown.len, &text, &len);
        if (!rc && len > st->printed) {
            fwrite(text + st->printed, 1, len - st->printed, stdout);
            st->printed = len;
        }
        free(text);
        if (rc) return rc;
    }
    fflush(stdout);
    return 0;
}

/* up to max_new tokens from the current logits, streamed; *stopped: the
 * eos / <|im_end|> that ended it (not fed), or -1; *unfed: the last token
 * when the limit ended it (in the output, not yet in the cache), or -1 */
static int generate(gen *g, size_t max_new, int32_t *stopped, int32_t *unfed) {
    int32_t stop[2] = {g->eos, g->im_end}, last;
    stream st = {g, 0, 0, {0}};
    size_t made;
    int ended;
    double t0 = now_s();
    int rc = zen_kv_generate(&g->kv, g->logits, &g->samp, &g->rng, max_new, stop, g->stop_at_eos ? 2 : 0, on_token,
                             &st, &made, &last, &ended);
    g->t_decode += now_s() - t0;
    g->n_decode += made > 1 ? made - 1 : 0;
    *stopped = ended ? last : -1;
    *unfed = !ended && made ? last : -1;
    zen_ids_free(&st.shown);
    return rc;
}

/* Qwen3's generation prompt; --no-think adds the empty think block, as its
 * template does with enable_thinking=False */
static const char *assistant_prompt(int no_think) {
    return no_think ? "<|im_start|>assistant\n<think>\n\n</think>\n\n" : "<|im_start|>assistant\n";
}

/* a conversation file ({"messages": [...]}, or the list alone) as ChatML
 * text ending in the generation prompt */
static int render_messages(zen_tokenizer *tok, const char *path, int no_think, zen_ids *ids) {
    char *text = NULL;
    cJSON *root = NULL;
    int rc = zen_read_text_file(path, &text);
    if (!rc && !(root = cJSON_Parse(text))) rc = zen_fail(ZEN_ERR_INPUT, "%s: not valid JSON", path);
    if (!rc && cJSON_IsArray(root)) { /* the list alone */
        cJSON *obj = cJSON_CreateObject();
        cJSON_AddItemToObject(obj, "messages", root);
        root = obj;
    }
    zen_data_opts o = {0};
    o.format = ZEN_DATA_MESSAGES;
    zen_render r = {0};
    if (!rc) rc = zen_render_chat(&o, tok, root, &r, path);
    const char *gp = assistant_prompt(no_think);
    if (!rc) rc = zen_tokenizer_encode(tok, r.text ? r.text : "", r.len, 1, ids);
    if (!rc) rc = zen_tokenizer_encode(tok, gp, strlen(gp), 1, ids);
    zen_render_free(&r);
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* --chat: each stdin line is a user turn; the cache keeps the whole
 * conversation, the answers' <|im_end|> and newline included */
static int chat(gen *g, size_t max_new, int no_think) {
    char line[65536];
    int rc = 0;
    fprintf(stderr, "zen generate: chat; one line per turn, end with Ctrl-D\n");
    while (!rc && fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        if (!line[0]) continue;
        zen_ids ids = {0};
        const char *gp = assistant_prompt(no_think);
        rc = zen_tokenizer_encode(g->tok, "<|im_start|>user\n", 17, 1, &ids);
        if (!rc) rc = zen_tokenizer_encode(g->tok, line, strlen(line), 0, &ids);
        if (!rc) rc = zen_tokenizer_encode(g->tok, "<|im_end|>\n", 11, 1, &ids);
        if (!rc) rc = zen_tokenizer_encode(g->tok, gp, strlen(gp), 1, &ids);
        if (!rc && g->kv.len + ids.len + max_new + 2 > g->kv.max_tokens)
            rc = zen_fail(ZEN_ERR_INPUT, "the conversation reached the context of %zu tokens (--context)",
                          g->kv.max_tokens);
        if (!rc) rc = feed(g, ids.ids, ids.len);
        int32_t stopped = -1, unfed = -1;
        if (!rc) rc = generate(g, max_new, &stopped, &unfed);
        putchar('\n');
        fflush(stdout);
        zen_ids_free(&ids);
        /* the end of the answer into the cache, as the template closes it (an
         * answer cut by --max-new-tokens: its last token first) */
        zen_ids end = {0};
        if (!rc && unfed >= 0) rc = zen_ids_push(&end, unfed);
        if (!rc) rc = zen_tokenizer_encode(g->tok, "<|im_end|>\n", 11, 1, &end);
        if (!rc) rc = feed(g, end.ids, end.len);
        zen_ids_free(&end);
    }
    return rc;
}

static zen_opt opts[] = {
    {"--model", "DIR|FILE.gguf", "the base model (required)", NULL},
    {"--adapter", "DIR", "a PEFT adapter, applied unmerged", NULL},
    {"--prompt", "TEXT", "the prompt as text", NULL},
    {"--prompt-ids", "a,b,c", "or as token ids", NULL},
    {"--messages", "FILE.json", "or a conversation rendered in Qwen3's ChatML with the generation prompt", NULL},
    {"--chat", NULL, "or one user turn per stdin line, the cache kept across turns", NULL},
    {"--context", "N", "--chat: the context in tokens (default 4096, at most the model's)", NULL},
    {"--max-new-tokens", "64", "tokens to generate (--chat: 512 per turn)", NULL},
    {"--temperature", "0.6", "0 is greedy", NULL},
    {"--top-k", "20", "sample among the k most likely (0: all)", NULL},
    {"--top-p", "0.95", "nucleus sampling", NULL},
    {"--min-p", "0", "drop tokens below min-p x the most likely's probability", NULL},
    {"--seed", "S", "the sampler's seed (default 0)", NULL},
    {"--ignore-eos", NULL, "do not stop at eos or <|im_end|>", NULL},
    {"--ids", NULL, "print token ids, comma-separated, not text", NULL},
    {"--think", NULL, "--messages/--chat: let the model think (Qwen3's default)", NULL},
    {"--no-think", NULL, "--messages/--chat: the empty think block, as enable_thinking=False", NULL},
    {"--device", "cpu|cuda", "the backend (default cpu)", NULL},
    {"--dtype", "auto|f32|bf16", "compute precision (the cache too)", NULL},
    {"--base-quant", "none|nf4|q4_0|q8_0", "quantise the projections at load", NULL},
    {"--save-logits", "FILE.safetensors", "the logits each new token was chosen from [n, V], F32", NULL},
    {"--n", "G", "G samples of the prompt (of each prompt with --prompts), decoded together", NULL},
    {"--prompts", "FILE.jsonl", "or a prompt per line: {\"prompt\": text or a list of chat messages}", NULL},
    {"--out", "FILE.jsonl", "--n/--prompts: a JSON line per prompt with its samples (default: print them)", NULL},
    {"--resume", NULL, "--out: continue a stopped run where it stopped, with the same samples", NULL},
    {"--stop", "STRING", "--n/--prompts: end a sample where its text reaches STRING (repeatable)", NULL},
    {"--max-rows", "16", "--n/--prompts: samples decoded at once (at most 16)", NULL},
    {"--max-cache-mib", "M", "--n/--prompts: the KV cache's memory (default: enough for --max-rows samples)", NULL},
};

const zen_command zen_command_generate = {
    "generate", "a continuation of a prompt, or a chat, with a KV cache and the adapter unmerged",
    NULL, opts, ZEN_COUNT(opts), zen_cmd_generate};

int zen_cmd_generate(int argc, char **argv) {
    zen_opt *o = opts;
    int n = ZEN_COUNT(opts), rc;
    if ((rc = zen_cli_parse(argc, argv, 2, o, n, "generate"))) return rc;
    const char *model_dir, *prompt = zen_cli_get(o, n, "--prompt"), *prompt_ids = zen_cli_get(o, n, "--prompt-ids");
    const char *messages = zen_cli_get(o, n, "--messages"), *logits_path = zen_cli_get(o, n, "--save-logits");
    int chatting = zen_cli_get(o, n, "--chat") != NULL, no_think = zen_cli_get(o, n, "--no-think") != NULL;
    long long max_new, top_k, seed, context;
    double temperature, top_p, min_p;
    if ((rc = zen_cli_require(o, n, "--model", "generate", &model_dir)) ||
        (rc = zen_cli_int(o, n, "--max-new-tokens", chatting ? 512 : 64, 0, 1 << 20, &max_new)) ||
        (rc = zen_cli_int(o, n, "--top-k", 20, 0, 1 << 24, &top_k)) ||
        (rc = zen_cli_int(o, n, "--seed", 0, 0, (1LL << 62), &seed)) ||
        (rc = zen_cli_int(o, n, "--context", 4096, 16, 1 << 24, &context)) ||
        (rc = zen_cli_float(o, n, "--temperature", 0.6, 0, 100, &temperature)) ||
        (rc = zen_cli_float(o, n, "--top-p", 0.95, 0, 1, &top_p)) ||
        (rc = zen_cli_float(o, n, "--min-p", 0, 0, 1, &min_p)))
        return rc;
    const char *prompts_path = zen_cli_get(o, n, "--prompts"), *out_path = zen_cli_get(o, n, "--out");
    long long samples, max_rows, cache_mib;
    if ((rc = zen_cli_int(o, n, "--n", 1, 1, 1 << 16, &samples)) ||
        (rc = zen_cli_int(o, n, "--max-rows", ZK_DECODE_ROWS, 1, ZK_DECODE_ROWS, &max_rows)) ||
        (rc = zen_cli_int(o, n, "--max-cache-mib", 0, 1, 1 << 30, &cache_mib)))
        return rc;
    int many = zen_cli_get(o, n, "--n") || prompts_path;
    if ((prompt != NULL) + (prompt_ids != NULL) + (messages != NULL) + chatting + (prompts_path != NULL) != 1)
        return zen_fail(ZEN_ERR_INPUT, "give exactly one of --prompt, --prompt-ids, --messages, --prompts or --chat");
    if (chatting && many) return zen_fail(ZEN_ERR_INPUT, "--n is for one prompt or --prompts, not --chat");
    static const char *const many_only[] = {"--out", "--resume", "--max-rows", "--max-cache-mib", "--stop"};
    for (size_t i = 0; i < sizeof many_only / sizeof many_only[0]; i++)
        if (!many && zen_cli_get(o, n, many_only[i]))
            return zen_fail(ZEN_ERR_INPUT, "%s is for --n G or --prompts FILE", many_only[i]);
    if (zen_cli_get(o, n, "--resume") && !out_path) return zen_fail(ZEN_ERR_INPUT, "--resume continues an --out file");
    const char *stops[64];
    int n_stops = 0;
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--stop")) {
            if (n_stops == 64) return zen_fail(ZEN_ERR_INPUT, "--stop: at most 64 strings");
            if (!argv[i + 1][0]) return zen_fail(ZEN_ERR_INPUT, "--stop: an empty string");
            stops[n_stops++] = argv[++i];
        }
    if (out_path && (rc = zen_output_ready(out_path))) return rc;
    if (no_think && zen_cli_get(o, n, "--think")) return zen_fail(ZEN_ERR_INPUT, "--think and --no-think exclude each other");
    if ((no_think || zen_cli_get(o, n, "--think")) && !messages && !chatting)
        return zen_fail(ZEN_ERR_INPUT, "--think / --no-think shape the chat prompt of --messages or --chat");
    zen_session s;
    memset(&s, 0, sizeof s);
    gen g;
    memset(&g, 0, sizeof g);
    zen_ids ids = {0};
    if ((rc = zen_session_open(&s, zen_cli_get(o, n, "--device"), zen_cli_get(o, n, "--dtype"),
                               zen_cli_get(o, n, "--base-quant"), model_dir)))
        goto done;
    if (zen_cli_get(o, n, "--adapter") && (rc = zen_session_load_adapter(&s, zen_cli_get(o, n, "--adapter"))))
        goto done;
    if (logits_path && (rc = zen_check_output(logits_path, &s.model, zen_cli_get(o, n, "--adapter"), NULL))) goto done;
    g.tok = model_tokenizer(model_dir);
    g.show_ids = zen_cli_get(o, n, "--ids") != NULL;
    if (!g.tok && (!prompt_ids || !g.show_ids)) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s has no tokenizer (tokenizer.json or a GGUF's own): use --prompt-ids with --ids",
                      model_dir);
        goto done;
    }
    if (prompt_ids) rc = parse_ids(prompt_ids, &ids);
    else if (prompt) rc = zen_tokenizer_encode(g.tok, prompt, strlen(prompt), 1, &ids);
    else if (messages) rc = render_messages(g.tok, messages, no_think, &ids);
    if (!rc && !chatting && !prompts_path && ids.len == 0) rc = zen_fail(ZEN_ERR_INPUT, "the prompt is empty");
    if (!rc && n_stops && !g.tok) rc = zen_fail(ZEN_ERR_INPUT, "--stop needs the model's tokenizer");
    if (rc) goto done;
    g.vocab = s.model.cfg.vocab;
    g.eos = g.tok ? zen_tokenizer_eos(g.tok) : -1;
    g.im_end = g.tok ? zen_tokenizer_token_id(g.tok, "<|im_end|>") : -1;
    g.stop_at_eos = !zen_cli_get(o, n, "--ignore-eos");
    g.samp = (zen_sampling){(float)temperature, (float)top_p, (float)min_p, (int)top_k};
    zen_sample_stream(&g.rng, (uint64_t)seed, 0, 0); /* sample 0 of prompt 0, as --n draws it */
    int32_t stop_ids[2] = {g.eos, g.im_end};
    if (many) {
        if ((rc = zen_session_dora_setup(&s, 0))) goto done; /* a DoRA adapter's scales, applied unmerged */
        zen_samples_args a = {&s, g.tok, model_dir, zen_cli_get(o, n, "--adapter"), prompts_path ? NULL : &ids,
                              prompt ? prompt : prompt_ids ? prompt_ids : messages, prompts_path, out_path,
                              logits_path, zen_cli_get(o, n, "--resume") != NULL, g.show_ids, no_think, (int)samples,
                              g.samp, (uint64_t)seed, (size_t)max_new, (size_t)max_rows,
                              (size_t)cache_mib << 20, 1024, stop_ids, g.stop_at_eos ? 2 : 0, stops, n_stops};
        if (max_new < 1) rc = zen_fail(ZEN_ERR_INPUT, "--max-new-tokens must be at least 1 with --n or --prompts");
        else rc = zen_generate_samples(&a);
        goto done;
    }
    /* --chat: the context asked for, or the model's whole */
    if (!zen_cli_get(o, n, "--context") && context > s.model.cfg.max_positions) context = s.model.cfg.max_positions;
    size_t capacity = chatting ? (size_t)context : ids.len + (size_t)max_new;
    size_t chunk = ids.len > 1024 ? 1024 : ids.len > 0 ? ids.len : 1024;
    if ((rc = zen_kv_create(&g.kv, &s.model, s.has_lora ? &s.lora : NULL, capacity, chunk))) goto done;
    if ((rc = zen_session_dora_setup(&s, 0))) goto done; /* a DoRA adapter's scales, applied unmerged */
    g.save_logits = logits_path != NULL;
    if (!(g.logits = zen_malloc((size_t)g.vocab * sizeof(float)))) {
        rc = ZEN_ERR_INTERNAL;
        goto done;
    }
    int32_t stopped, unfed;
    if (chatting) rc = chat(&g, (size_t)max_new, no_think);
    else if (!(rc = feed(&g, ids.ids, ids.len))) rc = generate(&g, (size_t)max_new, &stopped, &unfed);
    if (!rc) {
        if (!chatting) putchar('\n');
        fflush(stdout); /* the text's last line ends before the speed line on stderr starts */
        fprintf(stderr, "zen generate: prompt %zu tokens in %.3f s (%.1f tokens/s), %zu decode steps in %.3f s "
                "(%.1f tokens/s); device %s: %s\n", g.n_prefill, g.t_prefill, (double)g.n_prefill / (g.t_prefill + 1e-12),
                g.n_decode, g.t_decode, (double)g.n_decode / (g.t_decode + 1e-12), s.be->name, s.be->info);
    }
    if (!rc && g.n_saved) { /* the logits each new token was chosen from [n, V], all turns in --chat */
        st_entry e = {"logits", ZEN_F32, 2, {(int64_t)g.n_saved, g.vocab}};
        st_writer w;
        if (!(rc = st_writer_open(&w, logits_path, &e, 1, NULL, 0))) {
            rc = st_writer_put(&w, g.saved, g.n_saved * (size_t)g.vocab * sizeof(float));
            rc = rc ? (st_writer_abort(&w), rc) : st_writer_close(&w);
        }
    }
done:
    free(g.logits);
    free(g.saved);
    zen_kv_free(&g.kv);
    zen_ids_free(&ids);
    zen_tokenizer_free(g.tok);
    zen_session_close(&s);
    return rc;
}
