/* train/cli.c: option parsing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "cli.h"

int zen_cli_parse(int argc, char **argv, int first, zen_opt *opts, int nopts, const char *cmd) {
    for (int i = first; i < argc; i++) {
        zen_opt *o = NULL;
        for (int k = 0; k < nopts; k++)
            if (!strcmp(argv[i], opts[k].name)) o = &opts[k];
        if (!o) return zen_fail(ZEN_ERR_INPUT, "unknown option '%s' (see zen %s --help)", argv[i], cmd);
        if (!o->takes_value) {
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
