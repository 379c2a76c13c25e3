/* cli/cmd_data.c: `zen data --tokenizer DIR --in FILE --format F --out FILE.h5`
 * and `zen data --decode FILE.h5 --tokenizer DIR [--range a:b]`. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/dataset.h"
#include "../data/prepare.h"
#include "../export/export.h"
#include "../util/error.h"
#include "../objectives/kto.h"
#include "cli.h"
#include "commands.h"
#include "../train/session.h"

/* prints tokens [a, b) of the file, masked-in spans marked (green on a
 * terminal, [[ ... ]] otherwise) */
static int decode_file(const char *path, const char *tok_dir, const char *range, int plain) {
    zen_tokenizer *t;
    int rc = zen_open_tokenizer(tok_dir, &t);
    if (rc) return rc;
    zen_dataset d = {0};
    if ((rc = zen_dataset_open(&d, path, zen_tokenizer_vocab_size(t)))) {
        zen_tokenizer_free(t);
        return rc;
    }
    long long a = 0, b = d.n_tokens < 4096 ? d.n_tokens : 4096;
    char extra;
    if (range && (sscanf(range, "%lld:%lld%c", &a, &b, &extra) != 2 || a < 0 || b <= a || b > d.n_tokens))
        rc = zen_fail(ZEN_ERR_INPUT, "--range '%s': expected a:b with 0 <= a < b <= %lld", range, (long long)d.n_tokens);
    size_t n = rc ? 0 : (size_t)(b - a);
    int32_t *ids = rc ? NULL : malloc((n + 1) * sizeof(int32_t));
    uint8_t *mask = rc ? NULL : malloc(n + 1);
    if (!rc && (!ids || !mask)) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    if (!rc) rc = zen_dataset_read_range(&d, a, n, ids, mask);
    int tty = isatty(STDOUT_FILENO), in_mask = 0;
    if (!rc && plain) memset(mask, 0, n);
    for (size_t i = 0; !rc && i < n; i++) {
        if (mask[i] != in_mask) {
            fputs(mask[i] ? (tty ? "\033[32m" : "[[") : (tty ? "\033[0m" : "]]"), stdout);
            in_mask = mask[i];
        }
        char *text;
        size_t len;
        if ((rc = zen_tokenizer_decode(t, &ids[i], 1, &text, &len))) break;
        fwrite(text, 1, len, stdout);
        free(text);
    }
    if (in_mask) fputs(tty ? "\033[0m" : "]]", stdout);
    if (!rc && !plain) printf("\n");
    free(ids);
    free(mask);
    zen_dataset_close(&d);
    zen_tokenizer_free(t);
    return rc;
}

/* zen data --format preference|kto: records of a prompt and its completions */
static int prepare_records(zen_opt *o, int n, zen_data_opts *d, const char *format, zen_records records) {
    long long max_length;
    int rc;
    static const char *const not_here[] = {"--field", "--split-paragraphs", "--train-on-prompt", "--pack", "--seed"};
    for (size_t i = 0; i < sizeof not_here / sizeof not_here[0]; i++)
        if (zen_cli_get(o, n, not_here[i]))
            return zen_fail(ZEN_ERR_INPUT, "%s does not apply to --format %s", not_here[i], format);
    if ((rc = zen_cli_int(o, n, "--max-length", 1024, 2, 1 << 20, &max_length))) return rc;
    d->max_length = max_length;
    d->skip_bad = zen_cli_get(o, n, "--skip-bad") != NULL;
    d->drop_empty_think = zen_cli_get(o, n, "--drop-empty-think") != NULL;
    d->no_think = zen_cli_get(o, n, "--no-think") != NULL;
    if ((d->no_think || zen_cli_get(o, n, "--think")) && records != ZEN_RECORDS_PROMPTS)
        return zen_fail(ZEN_ERR_INPUT, "--think / --no-think shape a prompts file's chat prompts (--format prompts)");
    if (d->no_think && zen_cli_get(o, n, "--think")) return zen_fail(ZEN_ERR_INPUT, "--think and --no-think exclude each other");
    zen_record_stats st;
    if ((rc = zen_open_tokenizer(d->tokenizer_dir, &d->tokenizer))) return rc;
    rc = zen_data_prepare_records(d, records, &st);
    zen_tokenizer_free(d->tokenizer);
    if (rc) return rc;
    const zen_record_layout *l = zen_record_layout_of(records);
    if (st.no_eos)
        fprintf(stderr, "zen data: warning: %s has no end-of-sequence token, so the completions of %lld %s end "
                "without one (TRL appends the tokenizer's eos_token; a model trained on them does not learn to stop)\n",
                d->tokenizer_dir, (long long)st.no_eos, l->noun);
    char advice[512];
    if (records == ZEN_RECORDS_KTO && zen_kto_ratio_advice(st.desirable, st.undesirable, 1.0, 1.0, advice, sizeof advice))
        fprintf(stderr, "zen data: warning: %s\n", advice);
    fprintf(stderr, "zen data: %lld %s, %lld tokens (prompts %.1f%%), %lld bad lines skipped; %lld dropped (the prompt "
            "%s --max-length %lld)", (long long)st.records, l->noun,
            (long long)st.tokens, st.tokens ? 100.0 * (double)st.prompt_tokens / (double)st.tokens : 0.0,
            (long long)st.bad_lines, (long long)st.dropped_long_prompt,
            records == ZEN_RECORDS_PROMPTS ? "reaches" : "alone reaches", max_length);
    if (records != ZEN_RECORDS_PROMPTS) fprintf(stderr, ", %lld with a completion cut to fit", (long long)st.truncated);
    if (records == ZEN_RECORDS_PREFERENCE)
        fprintf(stderr, ", %lld with chosen equal to rejected (kept)", (long long)st.identical);
    if (l->labelled)
        fprintf(stderr, "; %lld desirable, %lld undesirable", (long long)st.desirable, (long long)st.undesirable);
    fprintf(stderr, "; %.1f MB in %.2f s -> %s\n", st.bytes / 1e6, st.seconds, d->out);
    return 0;
}

static zen_opt opts[] = {
    {"--tokenizer", "DIR|FILE.gguf", "a model directory's tokenizer.json, or a GGUF's own (required)", NULL},
    {"--in", "FILE|DIR", "the raw data (a directory: its files in name order)", NULL},
    {"--format", "text|jsonl|alpaca|messages|preference|kto|prompts", "how to read --in (required with --in)", NULL},
    {"--out", "FILE.h5", "the zen-tokens-v1 file to write", NULL},
    {"--field", "text", "jsonl: the field holding the text", NULL},
    {"--split-paragraphs", NULL, "text: a document per paragraph", NULL},
    {"--skip-bad", NULL, "skip and count bad record lines instead of stopping at the first", NULL},
    {"--train-on-prompt", NULL, "chat formats: the loss on every token, not only the assistant's", NULL},
    {"--drop-empty-think", NULL, "chat formats: leave out the empty think block before a final answer", NULL},
    {"--pack", "T", "lay documents whole into windows of T tokens, for --seq-len T", NULL},
    {"--seed", "S", "--pack: the windows' order", NULL},
    {"--max-length", "1024", "preference, kto: the longest prompt + completion (keep_start); prompts: prompt", NULL},
    {"--think", NULL, "prompts: chat prompts end in the generation prompt alone (Qwen3's default)", NULL},
    {"--no-think", NULL, "prompts: with the empty think block, as enable_thinking=False", NULL},
    {"--decode", "FILE.h5", "print a dataset back as text, masked-in spans marked", NULL},
    {"--range", "a:b", "--decode: tokens a to b", NULL},
    {"--plain", NULL, "--decode: no mask markers", NULL},
};

const zen_command zen_command_data = {
    "data", "tokenize raw data (text, jsonl, alpaca, chat messages, preference pairs, KTO's labelled completions, prompts)",
    NULL, opts, ZEN_COUNT(opts), zen_cmd_data};

int zen_cmd_data(int argc, char **argv) {
    zen_opt *o = opts;
    int n = ZEN_COUNT(opts), rc;
    if ((rc = zen_cli_parse(argc, argv, 2, o, n, "data"))) return rc;
    zen_data_opts d = {0};
    if ((rc = zen_cli_require(o, n, "--tokenizer", "data", &d.tokenizer_dir))) return rc;
    const char *decode = zen_cli_get(o, n, "--decode");
    if (decode) return decode_file(decode, d.tokenizer_dir, zen_cli_get(o, n, "--range"), zen_cli_get(o, n, "--plain") != NULL);
    const char *format;
    if ((rc = zen_cli_require(o, n, "--in", "data", &d.in)) || (rc = zen_cli_require(o, n, "--out", "data", &d.out)) ||
        (rc = zen_cli_require(o, n, "--format", "data", &format)))
        return rc;
    for (int k = 1; k < ZEN_RECORDS_COUNT; k++) /* the formats of records: preference, kto, prompts */
        if (!strcmp(format, zen_record_layout_of((zen_records)k)->format))
            return prepare_records(o, n, &d, format, (zen_records)k);
    if (zen_cli_get(o, n, "--max-length"))
        return zen_fail(ZEN_ERR_INPUT, "--max-length is for --format preference, kto or prompts (other formats use --pack T)");
    if (zen_data_parse_format(format, &d.format))
        return zen_fail(ZEN_ERR_INPUT, "--format '%s' is unknown (expected text, jsonl, alpaca, messages, preference, kto or "
                        "prompts)",
                        format);
    d.field = zen_cli_get(o, n, "--field") ? zen_cli_get(o, n, "--field") : "text";
    d.split_paragraphs = zen_cli_get(o, n, "--split-paragraphs") != NULL;
    d.skip_bad = zen_cli_get(o, n, "--skip-bad") != NULL;
    d.train_on_prompt = zen_cli_get(o, n, "--train-on-prompt") != NULL;
    d.drop_empty_think = zen_cli_get(o, n, "--drop-empty-think") != NULL;
    long long pack, seed;
    if ((rc = zen_cli_int(o, n, "--pack", 0, 1, 1 << 20, &pack)) || (rc = zen_cli_int(o, n, "--seed", 0, 0, LLONG_MAX, &seed)))
        return rc;
    if (zen_cli_get(o, n, "--seed") && !pack) return zen_fail(ZEN_ERR_INPUT, "--seed orders packed windows; it needs --pack T");
    d.pack_seq_len = pack;
    d.pack_seed = (uint64_t)seed;
    zen_data_stats st;
    if ((rc = zen_open_tokenizer(d.tokenizer_dir, &d.tokenizer))) return rc;
    rc = zen_data_prepare(&d, &st);
    zen_tokenizer_free(d.tokenizer);
    if (rc) return rc;
    if (st.id_mismatches)
        fprintf(stderr, "zen data: note: %lld added tokens of tokenizer.json got other ids than it lists, as Hugging Face "
                "tokenizers assigns them (it warns about each)\n", (long long)st.id_mismatches);
    if (st.forced_cuts)
        fprintf(stderr, "zen data: note: %lld stretches of 64 MB without any exact place to cut were cut anyway; "
                "their tokens at the cut may differ from tokenizing the whole line\n", (long long)st.forced_cuts);
    fprintf(stderr, "zen data: %lld documents, %lld tokens, %.1f%% masked in, %lld bad lines skipped; %.1f MB in %.2f s "
            "(%.2f MB/s, %.0f tokens/s) -> %s\n", (long long)st.docs, (long long)st.tokens,
            st.tokens ? 100.0 * (double)st.masked / (double)st.tokens : 0.0, (long long)st.bad_lines, st.bytes / 1e6,
            st.seconds, st.bytes / 1e6 / st.seconds, (double)st.tokens / st.seconds, d.out);
    if (pack)
        fprintf(stderr, "zen data: packed into %lld windows of %lld tokens: padding %.2f%% (%lld pad tokens, id %d), "
                "%lld documents longer than %lld split across windows\n", (long long)st.windows, pack,
                100.0 * (double)st.pad_tokens / ((double)st.windows * (double)pack), (long long)st.pad_tokens, st.pad_id,
                (long long)st.split_docs, pack);
    return 0;
}
