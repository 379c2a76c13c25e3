/* optim/schedule.c: learning-rate schedules with warm-up. */
#include <math.h>
#include <string.h>

#include "schedule.h"

double zen_schedule_lr(const zen_schedule *s, long step) {
    if (step < s->warmup_steps) return s->lr * (double)(step + 1) / (double)s->warmup_steps;
    long decay_steps = s->total_steps - s->warmup_steps - 1;
    double p = decay_steps > 0 ? (double)(step - s->warmup_steps) / (double)decay_steps : 1.0;
    if (p > 1.0) p = 1.0;
    double f;
    switch (s->kind) {
    case ZEN_SCHED_COSINE: f = 0.5 * (1.0 + cos(M_PI * p)); break;
    case ZEN_SCHED_LINEAR: f = 1.0 - p; break;
    default: f = 1.0; break;
    }
    return s->lr * (s->min_lr_ratio + (1.0 - s->min_lr_ratio) * f);
}

int zen_schedule_parse(const char *name, zen_schedule_kind *out) {
    if (!strcmp(name, "cosine")) *out = ZEN_SCHED_COSINE;
    else if (!strcmp(name, "linear")) *out = ZEN_SCHED_LINEAR;
    else if (!strcmp(name, "constant")) *out = ZEN_SCHED_CONSTANT;
    else return -1;
    return 0;
}
