/* cli/cli_objective.c: --objective, the flags of the options objectives
 * read (--beta, --dpo-loss, ...) and --set for any of them, shared by zen
 * grad and zen eval (see cli_objective.h). */
#include <stdio.h>
#include <string.h>

#include "../util/error.h"
#include "../train/run_config.h"
#include "cli_objective.h"

/* the flags of the options objectives read (objectives/objective.h): key, flag */
static const char *const option_flags[][2] = {{"beta", "--beta"}, {"dpo.loss", "--dpo-loss"},
                                              {"label_smoothing", "--label-smoothing"},
                                              {"orpo.nll_prompt", "--orpo-nll"}, {"pair_layout", "--pair-layout"}};

/* --set key=value, as often as given, for a key objectives read: through the run config's table (its
 * type and range checks), into p */
static int apply_sets(int argc, char **argv, zen_objective_opts *p) {
    zen_run_config c;
    zen_run_config_defaults(&c);
    c.obj = *p;
    for (int i = 2; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--set")) continue;
        const char *v = argv[++i], *eq = strchr(v, '=');
        char key[64];
        snprintf(key, sizeof key, "%.*s", eq ? (int)(eq - v) : (int)strlen(v), v);
        if (!zen_objective_is_option(key))
            return zen_fail(ZEN_ERR_INPUT, "--set %s: not an option of an objective (those are %s)", key,
                            zen_objective_option_keys());
        int rc = zen_run_config_set(&c, v);
        if (rc) return rc;
    }
    *p = c.obj;
    return 0;
}

int zen_cli_objective(int argc, char **argv, const zen_opt *o, int n, const zen_objective_ops **ops,
                      zen_objective_opts *p) {
    const char *name = zen_cli_get(o, n, "--objective"), *nll = zen_cli_get(o, n, "--orpo-nll");
    int rc;
    zen_objective_opts_defaults(p);
    if (!(*ops = zen_objective_find(name ? name : "sft")))
        return zen_fail(ZEN_ERR_INPUT, "option --objective: '%s' is not %s", name, zen_objective_names());
    if (zen_cli_get(o, n, "--dpo-loss")) snprintf(p->dpo_loss, sizeof p->dpo_loss, "%s", zen_cli_get(o, n, "--dpo-loss"));
    if (zen_cli_get(o, n, "--pair-layout"))
        snprintf(p->pair_layout, sizeof p->pair_layout, "%s", zen_cli_get(o, n, "--pair-layout"));
    if (nll && strcmp(nll, "all") && strcmp(nll, "completion"))
        return zen_fail(ZEN_ERR_INPUT, "option --orpo-nll: '%s' is not all or completion", nll);
    p->orpo_nll_prompt = !nll || !strcmp(nll, "all");
    if ((rc = zen_cli_float(o, n, "--beta", 0.1, 1e-9, 1e9, &p->beta)) ||
        (rc = zen_cli_float(o, n, "--label-smoothing", 0.0, 0.0, 0.4999999, &p->label_smoothing)) ||
        (rc = apply_sets(argc, argv, p)))
        return rc;
    const char *key, *flag = NULL;
    int foreign = 0;
    for (size_t i = 0; i < sizeof option_flags / sizeof option_flags[0]; i++) /* given for another objective */
        if (zen_cli_get(o, n, option_flags[i][1]) && !zen_objective_reads(*ops, option_flags[i][0])) {
            flag = option_flags[i][1];
            key = option_flags[i][0];
            foreign = 1;
            break;
        }
    if (foreign)
        return zen_fail(ZEN_ERR_INPUT, "%s needs --objective %s", flag, zen_objective_readers(key));
    if ((rc = zen_objective_check(*ops, p, &key))) {
        for (size_t i = 0; key && i < sizeof option_flags / sizeof option_flags[0]; i++)
            if (!strcmp(key, option_flags[i][0])) flag = option_flags[i][1];
        return zen_fail_context(rc, flag ? flag : "option --objective");
    }
    return 0;
}
