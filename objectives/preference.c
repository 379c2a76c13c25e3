/* objectives/preference.c: DPO's four losses and ORPO per pair, their
 * derivatives, and TRL's metrics (see preference.h). */
#include <math.h>
#include <string.h>

#include "../util/error.h"
#include "preference.h"

int zen_dpo_loss_parse(const char *name, zen_dpo_loss *out) {
    if (!strcmp(name, "sigmoid")) *out = ZEN_DPO_SIGMOID;
    else if (!strcmp(name, "ipo")) *out = ZEN_DPO_IPO;
    else if (!strcmp(name, "robust")) *out = ZEN_DPO_ROBUST;
    else if (!strcmp(name, "hinge")) *out = ZEN_DPO_HINGE;
    else return -1;
    return 0;
}

/* log σ(x), without overflow either way */
static double log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }
static double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }
/* log(1 - e^x) for x < 0 */
static double log1mexp(double x) { return x > -0.6931471805599453 ? log(-expm1(x)) : log1p(-exp(x)); }

static double dpo_pair(const zen_pref_opts *o, const zen_pair_logps *lp, double *dc, double *dr) {
    double b = o->beta, eps = o->label_smoothing;
    double ratio_c = lp->chosen - lp->ref_chosen, ratio_r = lp->rejected - lp->ref_rejected;
    double delta = ratio_c - ratio_r, loss, d; /* d = dL/dΔ */
    switch (o->loss) {
    case ZEN_DPO_IPO: {
        double h = ratio_c / lp->n_chosen - ratio_r / lp->n_rejected - 1.0 / (2.0 * b);
        *dc = 2.0 * h / lp->n_chosen;
        *dr = -2.0 * h / lp->n_rejected;
        return h * h;
    }
    case ZEN_DPO_ROBUST:
        loss = (-(1.0 - eps) * log_sigmoid(b * delta) + eps * log_sigmoid(-b * delta)) / (1.0 - 2.0 * eps);
        d = (-(1.0 - eps) * b * sigmoid(-b * delta) - eps * b * sigmoid(b * delta)) / (1.0 - 2.0 * eps);
        break;
    case ZEN_DPO_HINGE:
        loss = 1.0 - b * delta > 0 ? 1.0 - b * delta : 0.0;
        d = 1.0 - b * delta > 0 ? -b : 0.0;
        break;
    default:
        loss = -log_sigmoid(b * delta);
        d = -b * sigmoid(-b * delta);
        break;
    }
    *dc = d;
    *dr = -d;
    return loss;
}

double zen_pref_pair(const zen_pref_opts *o, const zen_pair_logps *lp, double *dc, double *dr, zen_pref_sums *acc) {
    double b = o->beta, loss, rc, rr, ratio = 0.0, log_odds = 0.0;
    if (o->kind == ZEN_PREF_ORPO) {
        /* on the mean token log-probabilities */
        double lc = lp->chosen / lp->n_chosen, lr = lp->rejected / lp->n_rejected;
        log_odds = (lc - lr) - (log1mexp(lc) - log1mexp(lr));
        ratio = log_sigmoid(log_odds);
        loss = -b * ratio;
        double dlo = -b * sigmoid(-log_odds); /* dL/dlog_odds */
        /* d log_odds / dℓc = 1 / (1 - e^ℓc); ℓ = sum / n */
        *dc = dlo / -expm1(lc) / lp->n_chosen;
        *dr = -dlo / -expm1(lr) / lp->n_rejected;
        rc = b * lc, rr = b * lr;
    } else {
        loss = dpo_pair(o, lp, dc, dr);
        rc = b * (lp->chosen - lp->ref_chosen), rr = b * (lp->rejected - lp->ref_rejected);
    }
    if (acc) {
        acc->sum[ZEN_PM_LOSS] += loss;
        acc->sum[ZEN_PM_REWARDS_CHOSEN] += rc;
        acc->sum[ZEN_PM_REWARDS_REJECTED] += rr;
        acc->sum[ZEN_PM_REWARDS_ACCURACIES] += rc > rr ? 1.0 : 0.0;
        acc->sum[ZEN_PM_REWARDS_MARGINS] += rc - rr;
        int orpo = o->kind == ZEN_PREF_ORPO;
        acc->sum[ZEN_PM_LOGPS_CHOSEN] += orpo ? lp->chosen / lp->n_chosen : lp->chosen;
        acc->sum[ZEN_PM_LOGPS_REJECTED] += orpo ? lp->rejected / lp->n_rejected : lp->rejected;
        acc->sum[ZEN_PM_LOG_ODDS_RATIO] += ratio;
        acc->sum[ZEN_PM_LOG_ODDS_CHOSEN] += log_odds;
        acc->pairs += 1.0;
    }
    return loss;
}

int zen_pref_metrics(const zen_pref_opts *o, const zen_pref_sums *s, const char **names, double *values) {
    static const char *const all[ZEN_PM_COUNT] = {
        "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
        "logps/rejected", "nll_loss", "log_odds_ratio", "log_odds_chosen"};
    int orpo = o->kind == ZEN_PREF_ORPO, n = 0;
    double p = s->pairs > 0 ? s->pairs : NAN;
    double nll = orpo ? s->sum[ZEN_PM_NLL_LOSS] / (s->nll_tokens > 0 ? s->nll_tokens : NAN) : 0.0;
    for (int i = 0; i < ZEN_PM_COUNT; i++) {
        if (!orpo && i >= ZEN_PM_NLL_LOSS) break;
        names[n] = all[i];
        values[n++] = i == ZEN_PM_LOSS ? s->sum[i] / p + nll : i == ZEN_PM_NLL_LOSS ? nll : s->sum[i] / p;
    }
    return n;
}
