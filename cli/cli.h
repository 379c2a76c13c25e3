/* cli/cli.h: the zen subcommands' option tables, their parsing and the
 * usage text printed from them (so the help cannot drift from what is
 * parsed). Every mistake is one line naming the option at fault (exit 2). */
#ifndef ZEN_CLI_H
#define ZEN_CLI_H
#include <stdint.h>
#include <stdio.h>

typedef struct {
    const char *name;  /* "--seq-len" */
    const char *arg;   /* the value's placeholder ("T", "DIR", "sigmoid|ipo"), or NULL for a flag */
    const char *help;  /* one line: what it sets, its default */
    const char *value; /* set by zen_cli_parse: the value given ("1" for a flag that is present), NULL if absent */
} zen_opt;

/* an option's placeholder that is a list made at run time: the objectives' names ("sft|dpo|orpo") */
#define ZEN_ARG_OBJECTIVES "@objectives"

/* A subcommand: its name, a one-line summary, the operands before its
 * options (NULL for none), its option table and what runs it. */
typedef struct {
    const char *name;     /* "grad" */
    const char *summary;  /* one line */
    const char *operands; /* "CONFIG.json", "FILE|DIR", or NULL */
    zen_opt *opts;
    int n_opts;
    int (*run)(int argc, char **argv);
} zen_command;

#define ZEN_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

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
/* 1 when argv[first..] asks for help (--help or -h where an option name goes) */
int zen_cli_wants_help(int argc, char **argv, int first, const zen_opt *opts, int nopts);
/* zen CMD --help: the summary and every option with its help line */
void zen_cli_help(FILE *out, const zen_command *c);
/* zen --help: the command and its options on lines of at most width columns */
void zen_cli_synopsis(FILE *out, const zen_command *c, int width);

#endif
