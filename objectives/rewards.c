/* objectives/rewards.c: GRPO's reward functions (see rewards.h). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>

#include "../util/error.h"
#include "../util/json.h"
#include "rewards.h"

#define MAX_COLUMNS 16
#define MAX_FUNCS 16

typedef enum { R_ANSWER, R_REGEX, R_THINK, R_OVERLONG, R_COMMAND } kind;

typedef struct {
    kind k;
    int first, columns;        /* its columns in the table */
    char field[128];           /* answer */
    pcre2_code *re;            /* answer (optional), regex, think_format */
    double L, c;               /* overlong */
    char **argv;               /* command */
    int argc;
    char outputs[MAX_COLUMNS][64];
    double timeout_s;
    pid_t pid;
    int to_child, from_child;  /* pipes */
    char *pending;             /* bytes read past the last line */
    size_t pending_len;
    const char *sending;       /* the batch's lines still to write (to_child is non-blocking) */
    size_t sending_len;
    char last[512];            /* what it printed last */
    char shown[512];           /* its command line as shown in errors */
} func;

struct zen_rewards {
    func f[MAX_FUNCS];
    int n;
    char names[MAX_COLUMNS][96];
    double weight[MAX_COLUMNS];
    int columns;
};

/* ---------------- creating ---------------- */

static pcre2_code *compile(const char *pattern, uint32_t flags, const char *origin, int *rc) {
    int err;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | flags, &err, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        *rc = zen_fail(ZEN_ERR_INPUT, "%s: pattern '%s': %s at %zu", origin, pattern, (const char *)msg, (size_t)at);
    }
    return re;
}

static const char *str_of(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int add_column(zen_rewards *r, const char *name, const char *origin) {
    if (r->columns == MAX_COLUMNS) return zen_fail(ZEN_ERR_INPUT, "%s: more than %d rewards", origin, MAX_COLUMNS);
    snprintf(r->names[r->columns], sizeof r->names[0], "%s", name);
    for (int k = 0; k < r->columns; k++)
        if (!strcmp(r->names[k], name))
            return zen_fail(ZEN_ERR_INPUT, "%s: two rewards are named '%s' (give one a \"label\")", origin, name);
    r->columns++;
    return 0;
}

static int make_func(zen_rewards *r, const cJSON *o, long max_len, const char *origin) {
    if (r->n == MAX_FUNCS) return zen_fail(ZEN_ERR_INPUT, "%s: more than %d reward functions", origin, MAX_FUNCS);
    func *f = &r->f[r->n];
    memset(f, 0, sizeof *f);
    f->pid = -1, f->to_child = f->from_child = -1;
    const char *name = cJSON_IsObject(o) ? str_of(o, "name") : NULL;
    if (!name) return zen_fail(ZEN_ERR_INPUT, "%s: each reward is an object with a \"name\"", origin);
    const char *label = str_of(o, "label");
    int rc = 0;
    f->first = r->columns;
    if (!strcmp(name, "answer")) {
        f->k = R_ANSWER;
        const char *field = str_of(o, "field"), *regex = str_of(o, "regex");
        snprintf(f->field, sizeof f->field, "%s", field ? field : "answer");
        if (regex) f->re = compile(regex, 0, origin, &rc);
    } else if (!strcmp(name, "regex")) {
        f->k = R_REGEX;
        const char *pattern = str_of(o, "pattern");
        if (!pattern) return zen_fail(ZEN_ERR_INPUT, "%s: reward regex needs a \"pattern\"", origin);
        f->re = compile(pattern, 0, origin, &rc);
    } else if (!strcmp(name, "think_format")) {
        f->k = R_THINK;
        f->re = compile("^<think>(?!.*<think>)(.*?)</think>.*$", PCRE2_DOTALL | PCRE2_MULTILINE, origin, &rc);
    } else if (!strcmp(name, "overlong")) {
        f->k = R_OVERLONG;
        const cJSON *L = cJSON_GetObjectItemCaseSensitive(o, "max_length"), *c = cJSON_GetObjectItemCaseSensitive(o, "buffer");
        f->L = cJSON_IsNumber(L) ? L->valuedouble : (double)max_len;
        if (!cJSON_IsNumber(c) || !(c->valuedouble > 0) || !(c->valuedouble < f->L))
            return zen_fail(ZEN_ERR_INPUT, "%s: reward overlong needs a \"buffer\" between 0 and its max_length %g",
                            origin, f->L);
        f->c = c->valuedouble;
    } else if (!strcmp(name, "command")) {
        f->k = R_COMMAND;
        const cJSON *argv = cJSON_GetObjectItemCaseSensitive(o, "argv"), *t = cJSON_GetObjectItemCaseSensitive(o, "timeout_s");
        if (!cJSON_IsArray(argv) || cJSON_GetArraySize(argv) < 1)
            return zen_fail(ZEN_ERR_INPUT, "%s: reward command needs \"argv\": the program and its arguments, a "
                            "list of strings (no shell)", origin);
        f->argc = cJSON_GetArraySize(argv);
        if (!(f->argv = zen_calloc((size_t)f->argc + 1, sizeof(char *)))) return ZEN_ERR_INTERNAL;
        int i = 0;
        for (const cJSON *a = argv->child; a; a = a->next, i++) {
            if (!cJSON_IsString(a)) return zen_fail(ZEN_ERR_INPUT, "%s: reward command's argv holds a non-string", origin);
            if (!(f->argv[i] = strdup(a->valuestring))) return ZEN_ERR_INTERNAL;
            size_t used = strlen(f->shown);
            snprintf(f->shown + used, sizeof f->shown - used, "%s%s", i ? " " : "", a->valuestring);
        }
        f->timeout_s = cJSON_IsNumber(t) && t->valuedouble > 0 ? t->valuedouble : 60.0;
        const cJSON *outs = cJSON_GetObjectItemCaseSensitive(o, "outputs");
        if (outs) {
            if (!cJSON_IsArray(outs) || cJSON_GetArraySize(outs) < 1 || cJSON_GetArraySize(outs) > MAX_COLUMNS)
                return zen_fail(ZEN_ERR_INPUT, "%s: reward command's \"outputs\" is a list of names", origin);
            int k = 0;
            for (const cJSON *a = outs->child; a && !rc; a = a->next, k++) {
                if (!cJSON_IsString(a)) return zen_fail(ZEN_ERR_INPUT, "%s: an output name is not a string", origin);
                snprintf(f->outputs[k], sizeof f->outputs[k], "%s", a->valuestring);
                char col[96];
                snprintf(col, sizeof col, "%s.%s", label ? label : "command", a->valuestring);
                rc = add_column(r, col, origin);
            }
            f->columns = k;
            r->n++;
            return rc;
        }
    } else {
        return zen_fail(ZEN_ERR_INPUT, "%s: reward '%s' is unknown (answer, regex, think_format, overlong or command)",
                        origin, name);
    }
    if (rc) return rc;
    f->columns = 1;
    r->n++;
    return add_column(r, label ? label : name, origin);
}

int zen_rewards_create(zen_rewards **out, const char *spec, const char *weights, long max_len, const char *origin) {
    *out = NULL;
    zen_rewards *r = zen_calloc(1, sizeof *r);
    if (!r) return ZEN_ERR_INTERNAL;
    cJSON *list = NULL, *w = NULL;
    int rc = zen_json_parse(spec, strlen(spec), origin, &list);
    if (!rc && (!cJSON_IsArray(list) || cJSON_GetArraySize(list) < 1))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: 'rewards' must be a non-empty list of reward functions", origin);
    for (const cJSON *o = list ? list->child : NULL; o && !rc; o = o->next) rc = make_func(r, o, max_len, origin);
    for (int k = 0; k < r->columns; k++) r->weight[k] = 1.0;
    if (!rc && weights && weights[0]) {
        rc = zen_json_parse(weights, strlen(weights), origin, &w);
        if (!rc && (!cJSON_IsArray(w) || cJSON_GetArraySize(w) != r->columns))
            rc = zen_fail(ZEN_ERR_INPUT, "%s: 'reward.weights' must list %d numbers, one per reward", origin, r->columns);
        int k = 0;
        for (const cJSON *v = w ? w->child : NULL; v && !rc; v = v->next, k++) {
            if (!cJSON_IsNumber(v)) rc = zen_fail(ZEN_ERR_INPUT, "%s: reward.weights[%d] is not a number", origin, k);
            else r->weight[k] = v->valuedouble;
        }
    }
    cJSON_Delete(list);
    cJSON_Delete(w);
    if (rc) zen_rewards_free(r);
    else *out = r;
    return rc;
}

static void stop_child(func *f) {
    if (f->to_child >= 0) close(f->to_child);
    if (f->from_child >= 0) close(f->from_child);
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
    }
    f->pid = -1, f->to_child = f->from_child = -1;
    free(f->pending);
    f->pending = NULL, f->pending_len = 0;
}

void zen_rewards_free(zen_rewards *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) {
        func *f = &r->f[i];
        if (f->re) pcre2_code_free(f->re);
        stop_child(f);
        for (int a = 0; f->argv && a < f->argc; a++) free(f->argv[a]);
        free(f->argv);
    }
    free(r);
}

int zen_rewards_count(const zen_rewards *r) { return r->columns; }
const char *zen_rewards_name(const zen_rewards *r, int k) { return r->names[k]; }

/* ---------------- the built-ins ---------------- */

/* the last match of re in s: its first group, or the whole match; 0 when there is none */
static int last_match(pcre2_code *re, const char *s, size_t len, char *out, size_t cap) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int found = 0;
    for (PCRE2_SIZE at = 0; md && at <= len;) {
        int n = pcre2_match(re, (PCRE2_SPTR)s, len, at, 0, md, NULL);
        if (n < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        int g = n > 1 && ov[2] != PCRE2_UNSET ? 1 : 0;
        size_t a = ov[2 * g], b = ov[2 * g + 1];
        snprintf(out, cap, "%.*s", (int)(b - a), s + a);
        found = 1;
        at = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
    }
    if (md) pcre2_match_data_free(md);
    return found;
}

/* the contents of the last \boxed{...} (braces balanced), or the last number */
static int default_answer(const char *s, char *out, size_t cap) {
    const char *b = NULL;
    for (const char *p = strstr(s, "\\boxed{"); p; p = strstr(p + 1, "\\boxed{")) b = p;
    if (b) {
        const char *p = b + 7;
        int depth = 1;
        const char *q = p;
        while (*q && depth) depth += *q == '{' ? 1 : *q == '}' ? -1 : 0, q++;
        if (!depth) {
            snprintf(out, cap, "%.*s", (int)(q - 1 - p), p);
            return 1;
        }
    }
    const char *last = NULL, *end = NULL;
    for (const char *p = s; *p; p++) {
        if ((*p >= '0' && *p <= '9') && (p == s || !((p[-1] >= '0' && p[-1] <= '9') || p[-1] == '.' || p[-1] == ','))) {
            const char *q = p;
            while ((*q >= '0' && *q <= '9') || ((*q == '.' || *q == ',') && q[1] >= '0' && q[1] <= '9')) q++;
            last = p > s && p[-1] == '-' ? p - 1 : p, end = q;
            p = q - 1;
        }
    }
    if (!last) return 0;
    size_t k = 0;
    for (const char *p = last; p < end && k + 1 < cap; p++)
        if (*p != ',') out[k++] = *p; /* 1,234 is 1234 */
    out[k] = '\0';
    return 1;
}

static void trim(char *s) {
    size_t n = strlen(s), a = 0;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = '\0';
    while (s[a] == ' ' || s[a] == '\t' || s[a] == '\n' || s[a] == '\r') a++;
    memmove(s, s + a, n - a + 1);
}

static int as_number(const char *s, double *v) {
    char *end;
    *v = strtod(s, &end);
    return end != s && *end == '\0' && isfinite(*v);
}

static double answer_reward(const func *f, const zen_reward_item *it) {
    cJSON *rec = it->record ? cJSON_ParseWithLength(it->record, it->record_len) : NULL;
    const cJSON *gold = rec ? cJSON_GetObjectItemCaseSensitive(rec, f->field) : NULL;
    char want[512], got[512];
    double result = NAN;
    if (cJSON_IsNumber(gold)) snprintf(want, sizeof want, "%.17g", gold->valuedouble);
    else if (cJSON_IsString(gold)) snprintf(want, sizeof want, "%s", gold->valuestring);
    else goto done; /* no gold answer: null, as TRL's accuracy_reward gives None */
    int found = f->re ? last_match(f->re, it->completion, strlen(it->completion), got, sizeof got)
                      : default_answer(it->completion, got, sizeof got);
    result = 0.0;
    if (!found) goto done;
    trim(got), trim(want);
    double a, b;
    if (as_number(got, &a) && as_number(want, &b)) result = fabs(a - b) <= 1e-9 * fmax(1.0, fabs(b)) ? 1.0 : 0.0;
    else result = !strcmp(got, want) ? 1.0 : 0.0;
done:
    cJSON_Delete(rec);
    return result;
}

static double regex_reward(const func *f, const zen_reward_item *it, uint32_t options) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(f->re, NULL);
    int n = md ? pcre2_match(f->re, (PCRE2_SPTR)it->completion, strlen(it->completion), 0, options, md, NULL) : -1;
    if (md) pcre2_match_data_free(md);
    return n >= 0 ? 1.0 : 0.0;
}

static double overlong_reward(const func *f, const zen_reward_item *it) {
    double n = (double)it->n_ids;
    if (n <= f->L - f->c) return 0.0;
    if (n <= f->L) return (f->L - f->c - n) / f->c;
    return -1.0;
}

/* ---------------- the command ---------------- */

static int start_child(func *f) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
        return zen_fail(ZEN_ERR_INTERNAL, "reward command '%s': pipe: %s", f->shown, strerror(errno));
    pid_t pid = fork();
    if (pid < 0) return zen_fail(ZEN_ERR_INTERNAL, "reward command '%s': fork: %s", f->shown, strerror(errno));
    if (pid == 0) { /* the child: stdin and stdout are the pipes; no shell */
        dup2(in[0], 0);
        dup2(out[1], 1);
        execvp(f->argv[0], f->argv);
        dprintf(2, "zen: reward command '%s': cannot run: %s\n", f->argv[0], strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    fcntl(in[1], F_SETFL, fcntl(in[1], F_GETFL) | O_NONBLOCK); /* written as it drains, while answers are read */
    f->pid = pid, f->to_child = in[1], f->from_child = out[0];
    signal(SIGPIPE, SIG_IGN); /* a child that exits early: write gives EPIPE, reported below */
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* one more line from the child before the deadline, writing what is left of the batch's lines as the child
 * drains them (it may answer as it reads: neither pipe may fill while zen waits on the other); *line
 * malloc'd, or an error. A child that stops reading is waited for: its end or the deadline says what. */
static int read_line(func *f, double deadline, char **line, const char *what) {
    for (;;) {
        char *nl = f->pending ? memchr(f->pending, '\n', f->pending_len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - f->pending);
            *line = zen_malloc(n + 1);
            if (!*line) return ZEN_ERR_INTERNAL;
            memcpy(*line, f->pending, n);
            (*line)[n] = '\0';
            memmove(f->pending, nl + 1, f->pending_len - n - 1);
            f->pending_len -= n + 1;
            snprintf(f->last, sizeof f->last, "%s", *line);
            return 0;
        }
        double left = deadline - now_s();
        struct pollfd p[2] = {{f->from_child, POLLIN, 0}, {f->sending_len ? f->to_child : -1, POLLOUT, 0}};
        int ready = left > 0 ? poll(p, 2, (int)(left * 1000) + 1) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0)
            return zen_fail(ZEN_ERR_INPUT, "reward command '%s': no answer for %s within %g s (timeout_s); it printed "
                            "last: '%s'", f->shown, what, f->timeout_s, f->last);
        if (p[1].revents) {
            ssize_t w = write(f->to_child, f->sending, f->sending_len);
            if (w > 0) f->sending += w, f->sending_len -= (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR) f->sending_len = 0; /* it stopped reading (EPIPE) */
        }
        if (!p[0].revents) continue;
        char buf[4096];
        ssize_t got = read(f->from_child, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            int status = 0;
            waitpid(f->pid, &status, 0);
            f->pid = -1;
            return zen_fail(ZEN_ERR_INPUT, "reward command '%s' ended (%s %d) before answering %s; it printed last: "
                            "'%s'", f->shown, WIFSIGNALED(status) ? "signal" : "exit status",
                            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), what, f->last);
        }
        char *more = realloc(f->pending, f->pending_len + (size_t)got);
        if (!more) return ZEN_ERR_INTERNAL;
        memcpy(more + f->pending_len, buf, (size_t)got);
        f->pending = more, f->pending_len += (size_t)got;
    }
}

static int command_rewards(func *f, const zen_reward_item *items, size_t n, double *per, int columns) {
    int rc = f->pid > 0 ? 0 : start_child(f);
    /* the batch's lines, a JSON object per completion, written while the answers are read */
    char *batch = NULL;
    size_t batch_len = 0, batch_cap = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const zen_reward_item *it = &items[i];
        cJSON *o = cJSON_CreateObject(), *ids = cJSON_CreateArray();
        cJSON_AddStringToObject(o, "prompt", it->prompt ? it->prompt : "");
        cJSON_AddStringToObject(o, "completion", it->completion);
        for (size_t k = 0; k < it->n_ids; k++) cJSON_AddItemToArray(ids, zen_json_exact_number(it->ids[k]));
        cJSON_AddItemToObject(o, "completion_ids", ids);
        cJSON *rec = it->record ? cJSON_ParseWithLength(it->record, it->record_len) : NULL;
        cJSON_AddItemToObject(o, "record", rec ? rec : cJSON_CreateObject());
        cJSON_AddItemToObject(o, "group", zen_json_exact_number((double)it->group));
        cJSON_AddItemToObject(o, "sample", zen_json_exact_number((double)it->sample));
        char *text = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        size_t len = text ? strlen(text) : 0;
        if (text && batch_len + len + 1 > batch_cap) {
            size_t cap = 2 * (batch_len + len + 1);
            char *more = realloc(batch, cap);
            if (more) batch = more, batch_cap = cap;
        }
        if (!text || batch_len + len + 1 > batch_cap) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory (reward lines)");
        else memcpy(batch + batch_len, text, len), batch[batch_len + len] = '\n', batch_len += len + 1;
        free(text);
    }
    f->sending = batch, f->sending_len = rc ? 0 : batch_len;
    double deadline = now_s() + f->timeout_s;
    for (size_t i = 0; i < n && !rc; i++) {
        char *line = NULL, what[96];
        snprintf(what, sizeof what, "record %ld (sample %ld)", items[i].group, items[i].sample);
        if ((rc = read_line(f, deadline, &line, what))) break;
        cJSON *v = cJSON_ParseWithLength(line, strlen(line));
        int bad = v == NULL;
        double *out = per + i * (size_t)columns + f->first;
        if (v && f->columns == 1 && !f->outputs[0][0] && (cJSON_IsNumber(v) || cJSON_IsNull(v))) {
            out[0] = cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : NAN;
            if (cJSON_IsNumber(v) && !isfinite(v->valuedouble)) bad = 1;
        } else if (v && f->outputs[0][0] && cJSON_IsObject(v)) {
            for (int k = 0; k < f->columns && !bad; k++) {
                const cJSON *x = cJSON_GetObjectItemCaseSensitive(v, f->outputs[k]);
                if (cJSON_IsNumber(x)) out[k] = x->valuedouble;
                else if (!x || cJSON_IsNull(x)) out[k] = NAN;
                else bad = 1;
            }
        } else {
            bad = 1;
        }
        cJSON_Delete(v);
        if (bad)
            rc = zen_fail(ZEN_ERR_INPUT, "reward command '%s' answered %s with '%.200s': expected %s", f->shown, what,
                          line, f->outputs[0][0] ? "a JSON object of its outputs" : "a number or null");
        free(line);
    }
    f->sending = NULL, f->sending_len = 0;
    free(batch);
    if (rc) stop_child(f);
    return rc;
}

int zen_rewards_score(zen_rewards *r, const zen_reward_item *items, size_t n, double *per, double *total,
                      int *external) {
    int C = r->columns, rc = 0;
    if (external) *external = 0;
    for (int i = 0; i < r->n && !rc; i++) {
        func *f = &r->f[i];
        if (f->k == R_COMMAND) {
            rc = command_rewards(f, items, n, per, C);
            if (rc && external) *external = 1;
            continue;
        }
        for (size_t j = 0; j < n; j++) {
            double v = f->k == R_ANSWER     ? answer_reward(f, &items[j])
                       : f->k == R_REGEX    ? regex_reward(f, &items[j], 0)
                       : f->k == R_THINK    ? regex_reward(f, &items[j], PCRE2_ANCHORED)
                                            : overlong_reward(f, &items[j]);
            per[j * (size_t)C + f->first] = v;
        }
    }
    for (size_t j = 0; j < n && !rc; j++) { /* the weighted nansum; NaN when every column is null */
        double s = 0.0;
        int any = 0;
        for (int k = 0; k < C; k++)
            if (!isnan(per[j * (size_t)C + k])) s += r->weight[k] * per[j * (size_t)C + k], any = 1;
        total[j] = any ? s : NAN;
    }
    return rc;
}
