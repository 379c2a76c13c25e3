/* train/cli.h: command-line option parsing for the zen subcommands. Every
 * mistake is one line naming the option at fault (exit code 2). */
#ifndef ZEN_CLI_H
#define ZEN_CLI_H
#include <stdint.h>

typedef struct {
    const char *name;  /* "--seq-len" */
    int takes_value;   /* 0 for a flag */
    const char *value; /* set by zen_cli_parse; "1" for a flag that is present */
} zen_opt;

/* Parses argv[first..] into opts; unknown options and missing values are errors. */
int zen_cli_parse(int argc, char **argv, int first, zen_opt *opts, int nopts, const char *cmd);
const char *zen_cli_get(const zen_opt *opts, int nopts, const char *name);
/* Integer/float values with range checks; def when the option is absent. */
int zen_cli_int(const zen_opt *opts, int nopts, const char *name, long long def, long long min,
                long long max, long long *out);
int zen_cli_float(const zen_opt *opts, int nopts, const char *name, double def, double min,
                  double max, double *out);
/* the option must be present */
int zen_cli_require(const zen_opt *opts, int nopts, const char *name, const char *cmd,
                    const char **out);

#endif
