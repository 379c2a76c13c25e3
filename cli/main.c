/* cli/main.c: the zen command: dispatches subcommands from their table,
 * prints the usage text from their option tables (`zen --help`, `zen CMD
 * --help`) and the build (`zen --version`), and is the only place that turns
 * an error into a message on stderr and an exit code. */
#include <stdio.h>
#include <string.h>

#include "../kernels/kernels.h"
#include "../util/error.h"
#include "commands.h"
#include "../train/dist.h"

/* every subcommand, in the order zen --help lists them */
static const zen_command *const commands[] = {&zen_command_init,     &zen_command_data,   &zen_command_train,
                                              &zen_command_grad,     &zen_command_eval,   &zen_command_generate,
                                              &zen_command_export,   &zen_command_info};

/* the build's configuration (generated/build_info.c) and commit (generated/commit.c) */
extern const char zen_build_version[], zen_build_type[], zen_build_flags[], zen_build_cuda[], zen_build_mpi[],
    zen_build_compiler[], zen_build_commit[];

static void usage(FILE *out) {
    fprintf(out, "zen %s: LoRA fine-tuning for Zen (Qwen3-architecture) models\n\nusage: zen COMMAND [options]   "
            "(zen COMMAND --help: what each option does)\n\n", zen_build_version);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        fprintf(out, "  %s: %s\n", commands[i]->name, commands[i]->summary);
        zen_cli_synopsis(out, commands[i], 110);
    }
    fprintf(out, "\n  zen --version: the version, commit, build and the CPU's kernel levels\n"
            "\nexit codes: 0 success, 1 internal failure, 2 bad input or usage,\n"
            "            130 / 143 zen train stopped by SIGINT / SIGTERM after saving a checkpoint\n");
}

static void version(FILE *out) {
    fprintf(out, "zen %s (commit %s)\nbuild: %s, %s, %s\nCUDA backend: %s\nMPI: %s\n", zen_build_version,
            zen_build_commit, zen_build_type, zen_build_flags, zen_build_compiler, zen_build_cuda, zen_build_mpi);
    zk_cpu_versions(out);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "zen: missing command (see zen --help)\n");
        return 2;
    }
    const char *cmd = argv[1];
    /* the CPU kernel variant and ZEN_CPU_ISA's cap, before any library runs
     * (it may start zen again, with OpenBLAS capped too) */
    if (zk_cpu_isa_setup(argv)) {
        fprintf(stderr, "zen %s: error: %s\n", cmd, zen_last_error());
        return ZEN_ERR_INPUT;
    }
    const zen_command *c = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i]->name)) c = commands[i];
    /* help and the version need no ranks */
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        version(stdout);
        return 0;
    }
    if (c && zen_cli_wants_help(argc, argv, 2, c->opts, c->n_opts)) {
        zen_cli_help(stdout, c);
        return 0;
    }
    int rc = zen_dist_init(&argc, &argv);
    if (rc) {
        fprintf(stderr, "zen %s: error: %s\n", cmd, zen_last_error());
        return rc;
    }
    int ranks = zen_dist_get()->size;
    if (!c) {
        fprintf(stderr, "zen: unknown command '%s' (see zen --help)\n", cmd);
        return zen_dist_finish(zen_dist_settle(ZEN_ERR_INPUT)); /* every rank says the same */
    }
    if (ranks > 1 && strcmp(cmd, "train") && strcmp(cmd, "eval")) /* every rank would write the same output */
        rc = zen_dist_settle(zen_fail(ZEN_ERR_INPUT, "started as %d ranks, but only zen train and zen eval run over "
                                     "several ranks; run zen %s as one process", ranks, cmd));
    else
        rc = c->run(argc, argv);
    /* With several ranks: each rank's outcome (a command that failed on some
     * ranks only, before a collective, ends them all here); an error they
     * all agreed on is printed once, by rank 0. */
    if (ranks > 1 && rc < 128) rc = zen_dist_settle(rc);
    int quiet = zen_dist_get()->rank > 0 && (zen_dist_error_is_shared() || rc >= 128);
    if (rc >= 128 && !quiet) /* stopped by a signal after saving (zen train): not an error */
        fprintf(stderr, "zen %s: %s\n", cmd, zen_last_error());
    else if (rc && !quiet)
        fprintf(stderr, "zen %s: error: %s\n", cmd, zen_last_error());
    return zen_dist_finish(rc);
}
