/* optim/schedule.h: learning-rate schedules: linear warm-up from lr/W to lr over
 * the first W updates, then cosine, linear or constant decay to a floor of
 * min_lr_ratio * lr at the last update. */
#ifndef ZEN_SCHEDULE_H
#define ZEN_SCHEDULE_H

typedef enum { ZEN_SCHED_COSINE, ZEN_SCHED_LINEAR, ZEN_SCHED_CONSTANT } zen_schedule_kind;

typedef struct {
    zen_schedule_kind kind;
    double lr;           /* peak learning rate */
    long warmup_steps;   /* W */
    long total_steps;    /* S, the number of updates */
    double min_lr_ratio; /* floor, as a fraction of lr */
} zen_schedule;

/* The learning rate of update `step` (0-based, step < total_steps):
 *   step < W:  lr * (step + 1) / W
 *   else:      p = (step - W) / (S - W - 1)  (0 at the first decay step, 1 at the last)
 *              lr * (min + (1 - min) * f(p)),  f = (1 + cos(pi p)) / 2 | 1 - p | 1 */
double zen_schedule_lr(const zen_schedule *s, long step);
/* "cosine" | "linear" | "constant"; -1 if unknown */
int zen_schedule_parse(const char *name, zen_schedule_kind *out);

#endif
