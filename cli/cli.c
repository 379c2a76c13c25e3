/* cli/cli.c: option parsing and the usage text, both from the option tables (see cli.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../objectives/objective.h"
#include "../util/error.h"
#include "cli.h"

int zen_cli_parse(int argc, char **argv, int first, zen_opt *opts, int nopts, const char *cmd) {
    for (int i = first; i < argc; i++) {
        zen_opt *o = NULL;
        for (int k = 0; k < nopts; k++)
            if (!strcmp(argv[i], opts[k].name)) o = &opts[k];
        if (!o) return zen_fail(ZEN_ERR_INPUT, "unknown option '%s' (see zen %s --help)", argv[i], cmd);
        if (!o->arg) {
            o->value = "1";
            continue;
        }
        if (i + 1 >= argc)
            return zen_fail(ZEN_ERR_INPUT, "option %s needs a value", argv[i]);
        o->value = argv[++i];
    }
    return 0;
}

const char *zen_cli_get(const zen_opt *opts, int nopts, const char *name) {
    for (int k = 0; k < nopts; k++)
        if (!strcmp(opts[k].name, name)) return opts[k].value;
    return NULL;
}

int zen_cli_int(const zen_opt *opts, int nopts, const char *name, long long def, long long min,
                long long max, long long *out) {
    const char *v = zen_cli_get(opts, nopts, name);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max)
        return zen_fail(ZEN_ERR_INPUT, "option %s: '%s' is not an integer in [%lld, %lld]", name, v, min, max);
    *out = x;
    return 0;
}

int zen_cli_float(const zen_opt *opts, int nopts, const char *name, double def, double min,
                  double max, double *out) {
    const char *v = zen_cli_get(opts, nopts, name);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= min && x <= max))
        return zen_fail(ZEN_ERR_INPUT, "option %s: '%s' is not a number in [%g, %g]", name, v, min, max);
    *out = x;
    return 0;
}

int zen_cli_require(const zen_opt *opts, int nopts, const char *name, const char *cmd,
                    const char **out) {
    (void)cmd; /* main prefixes every message with "zen <cmd>:" */
    *out = zen_cli_get(opts, nopts, name);
    if (!*out) return zen_fail(ZEN_ERR_INPUT, "missing required option %s", name);
    return 0;
}

int zen_cli_wants_help(int argc, char **argv, int first, const zen_opt *opts, int nopts) {
    for (int i = first; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
        for (int k = 0; k < nopts; k++)
            if (!strcmp(argv[i], opts[k].name)) {
                if (opts[k].arg) i++; /* its value, whatever it reads */
                break;
            }
    }
    return 0;
}

/* an option's placeholder, NULL for a flag */
static const char *arg_of(const zen_opt *o) {
    return o->arg && !strcmp(o->arg, ZEN_ARG_OBJECTIVES) ? zen_objective_choices() : o->arg;
}

void zen_cli_help(FILE *out, const zen_command *c) {
    fprintf(out, "zen %s: %s\nusage: zen %s%s%s [options]\n", c->name, c->summary, c->name, c->operands ? " " : "",
            c->operands ? c->operands : "");
    int wide = 0;
    for (int k = 0; k < c->n_opts; k++) {
        const char *arg = arg_of(&c->opts[k]);
        int w = (int)strlen(c->opts[k].name) + (arg ? 1 + (int)strlen(arg) : 0);
        if (w > wide && w <= 40) wide = w;
    }
    for (int k = 0; k < c->n_opts; k++) {
        const zen_opt *o = &c->opts[k];
        char left[256];
        const char *arg = arg_of(o);
        snprintf(left, sizeof left, "%s%s%s", o->name, arg ? " " : "", arg ? arg : "");
        if ((int)strlen(left) > wide) fprintf(out, "  %s\n  %-*s  %s\n", left, wide, "", o->help);
        else fprintf(out, "  %-*s  %s\n", wide, left, o->help);
    }
}

void zen_cli_synopsis(FILE *out, const zen_command *c, int width) {
    char head[64];
    snprintf(head, sizeof head, "  zen %-9s", c->name);
    int col = fprintf(out, "%s%s%s", head, c->operands ? c->operands : "", c->operands ? " " : "");
    int indent = (int)strlen(head);
    for (int k = 0; k < c->n_opts; k++) {
        const zen_opt *o = &c->opts[k];
        const char *arg = arg_of(o);
        int w = (int)strlen(o->name) + (arg ? 1 + (int)strlen(arg) : 0) + 3;
        if (col + w > width && col > indent) col = fprintf(out, "\n%*s", indent, "") - 1;
        col += fprintf(out, "[%s%s%s] ", o->name, arg ? " " : "", arg ? arg : "");
    }
    fputc('\n', out);
}
