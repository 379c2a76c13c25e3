/* cli/cli_objective.h: --objective NAME and the options objectives read, as
 * zen grad and zen eval take them: flags for some (--beta, --dpo-loss,
 * --label-smoothing, --orpo-nll, --pair-layout) and --set key=value for any,
 * by its run config key; checked as the run config's keys are
 * (objectives/objective.h), each mistake one line naming the flag or key.
 * The command's option table must hold these flags. */
#ifndef ZEN_CLI_OBJECTIVE_H
#define ZEN_CLI_OBJECTIVE_H
#include "../objectives/objective.h"
#include "cli.h"

/* the objective (sft without --objective) and its options: the flags, then
 * every --set key=value of argv (a key of zen_objective_opts, typed and
 * ranged by the run config's table) */
int zen_cli_objective(int argc, char **argv, const zen_opt *o, int n, const zen_objective_ops **ops,
                      zen_objective_opts *p);

/* the option table's rows of these flags, for a command's table */
#define ZEN_CLI_OBJECTIVE_OPTS                                                                                 \
    {"--objective", ZEN_ARG_OBJECTIVES, "what the step optimises (default sft)", NULL},                      \
        {"--beta", "0.1", "DPO's beta (IPO's tau), ORPO's lambda", NULL},                                     \
        {"--dpo-loss", "sigmoid|ipo|robust|hinge", "DPO's loss (default sigmoid)", NULL},                     \
        {"--label-smoothing", "0", "the robust loss's epsilon", NULL},                                        \
        {"--orpo-nll", "all|completion", "ORPO's NLL over prompt + chosen (all) or the chosen completion", NULL}, \
        {"--pair-layout", "shared|apart", "a pair's prompt run once (shared) or per completion (apart)", NULL}, \
        {"--set", "key=value", "any option objectives read, as its run config key (repeatable)", NULL}

#endif
