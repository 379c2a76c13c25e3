/* train/report.c: metrics.jsonl and the progress line. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "report.h"

int zen_truncate_jsonl_steps(const char *path, long keep_upto_step) {
    FILE *in = fopen(path, "r");
    if (!in) return 0;
    size_t cap = 1 << 16, len = 0, line_cap = 0;
    char *kept = zen_malloc(cap), *line = NULL;
    ssize_t n;
    int rc = kept ? 0 : ZEN_ERR_INTERNAL;
    if (kept) kept[0] = '\0';
    while (!rc && (n = getline(&line, &line_cap, in)) >= 0) {
        cJSON *obj = cJSON_ParseWithLength(line, (size_t)n);
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(obj, "step");
        int keep = cJSON_IsNumber(step) && step->valuedouble <= (double)keep_upto_step;
        cJSON_Delete(obj);
        if (!keep) continue;
        if (len + (size_t)n + 1 > cap) {
            cap = 2 * (len + (size_t)n + 1);
            char *grown = realloc(kept, cap);
            if (!grown) {
                rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
                break;
            }
            kept = grown;
        }
        memcpy(kept + len, line, (size_t)n + 1);
        len += (size_t)n;
    }
    free(line);
    fclose(in);
    if (!rc) rc = zen_write_text_file(path, kept);
    free(kept);
    return rc;
}

int zen_report_open(zen_report *r, const char *out_dir, long keep_upto_step) {
    memset(r, 0, sizeof *r);
    char *path = zen_path_join(out_dir, "metrics.jsonl");
    if (!path) return ZEN_ERR_INTERNAL;
    int rc = keep_upto_step >= 0 ? zen_truncate_jsonl_steps(path, keep_upto_step) : 0;
    if (!rc) {
        r->metrics = fopen(path, keep_upto_step >= 0 ? "a" : "w");
        if (!r->metrics) rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot write: %s", path, strerror(errno));
    }
    r->metrics_path = path;
    r->tty = isatty(STDERR_FILENO);
    return rc;
}

void zen_report_silent(zen_report *r) {
    memset(r, 0, sizeof *r);
    r->silent = 1;
}

void zen_report_close(zen_report *r) {
    if (r->bar_shown) fputc('\n', stderr);
    if (r->metrics) fclose(r->metrics);
    free(r->metrics_path);
    memset(r, 0, sizeof *r);
}

/* a number as JSON: non-finite values (a step without targets) are null */
static void put_number(FILE *f, const char *key, double v, const char *fmt) {
    fprintf(f, ", \"%s\": ", key);
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("null", f);
}

int zen_report_metrics(zen_report *r, const zen_step_record *s) {
    if (r->silent) return 0;
    FILE *f = r->metrics;
    fprintf(f, "{\"step\": %ld, \"epoch\": %ld", s->step, s->epoch);
    put_number(f, "loss", s->loss, "%.9g");
    put_number(f, "lr", s->lr, "%.9g");
    put_number(f, "grad_norm", s->grad_norm, "%.9g");
    put_number(f, "tokens_per_s", s->tokens_per_s, "%.2f");
    put_number(f, "real_tokens_per_s", s->real_tokens_per_s, "%.2f");
    put_number(f, "elapsed_s", s->elapsed_s, "%.3f");
    for (int i = 1; i < s->n_train; i++) put_number(f, s->names[i], s->values[i], "%.9g");
    for (int i = 0; s->eval_values && i < s->n_metrics; i++) {
        char name[64];
        snprintf(name, sizeof name, "eval_%s", s->names[i]);
        put_number(f, name, s->eval_values[i], "%.9g");
    }
    if (!isnan(s->mem_peak)) put_number(f, "device_mem_peak", s->mem_peak, "%.0f");
    fprintf(f, "}\n");
    if (fflush(f) != 0 || ferror(f))
        return zen_fail(ZEN_ERR_INTERNAL, "%s: write failed: %s", r->metrics_path, strerror(errno));
    return 0;
}

static void format_time(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, cap, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%02ld:%02ld", t / 60, t % 60);
}

void zen_report_progress(zen_report *r, const zen_step_record *s, int force_line) {
    if (r->silent) return;
    char elapsed[32], eta[32], stats[400], pref[160] = "";
    format_time(elapsed, sizeof elapsed, s->elapsed_s);
    format_time(eta, sizeof eta, s->eta_s);
    for (int k = 0; k < s->n_shown; k++) /* the objective's own, where the step has them */
        for (int i = 1; i < s->n_train; i++)
            if (!strcmp(s->names[i], s->shown[k].metric)) {
                size_t len = strlen(pref);
                snprintf(pref + len, sizeof pref - len, "%s ", s->shown[k].label);
                len = strlen(pref);
                snprintf(pref + len, sizeof pref - len, s->shown[k].format, s->values[i]);
                len = strlen(pref);
                snprintf(pref + len, sizeof pref - len, " | ");
            }
    snprintf(stats, sizeof stats, "step %ld/%ld | loss %.4f | %slr %.3g | grad norm %.3f | %.0f tok/s (%.0f trained) | "
             "%s elapsed | ETA %s", s->step, s->total_steps, s->loss, pref, s->lr, s->grad_norm, s->tokens_per_s,
             s->real_tokens_per_s, elapsed, eta);
    if (r->tty) {
        const int width = 24;
        int filled = (int)((double)width * (double)s->step / (double)(s->total_steps ? s->total_steps : 1));
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r\033[K[%s] %s", bar, stats);
        r->bar_shown = 1;
        if (force_line) {
            fputc('\n', stderr);
            r->bar_shown = 0;
        }
    } else if (force_line) {
        fprintf(stderr, "%s\n", stats);
    }
    fflush(stderr);
}

void zen_report_line(zen_report *r, const char *fmt, ...) {
    if (r->silent) return;
    if (r->bar_shown) {
        fputc('\n', stderr);
        r->bar_shown = 0;
    }
    va_list args;
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    fflush(stderr);
}

void zen_report_eval(zen_report *r, const zen_step_record *s, long long items, const char *item) {
    char line[400], *p = line, *end = line + sizeof line;
    p += snprintf(p, (size_t)(end - p), "  eval loss %.4f", s->eval_values[0]);
    for (int k = 0; k < s->n_shown; k++)
        for (int i = 1; i < s->n_metrics && p < end; i++)
            if (!strcmp(s->names[i], s->shown[k].metric)) {
                p += snprintf(p, (size_t)(end - p), ", %s ", s->names[i]);
                if (p < end) p += snprintf(p, (size_t)(end - p), s->shown[k].format, s->eval_values[i]);
            }
    if (p < end) snprintf(p, (size_t)(end - p), " on %lld validation %s", items, item);
    zen_report_line(r, "%s", line);
}

