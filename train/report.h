/* train/report.h: what the user of a run sees and keeps: metrics.jsonl (one
 * JSON object per logged step) and the progress line on stderr (a live bar on
 * a terminal, plain lines otherwise). */
#ifndef ZEN_REPORT_H
#define ZEN_REPORT_H
#include <stdio.h>

#include "../objectives/objective.h"

typedef struct {
    FILE *metrics;   /* OUT/metrics.jsonl, appended */
    char *metrics_path;
    int tty;         /* stderr is a terminal */
    int bar_shown;   /* a live bar is on the current line */
    int silent;      /* a rank other than 0: reports nothing, writes nothing */
} zen_report;

/* Opens OUT/metrics.jsonl; keeps only the lines with step <= keep_upto_step
 * (the resumed step; -1 starts the file afresh). */
/* rewrites a JSONL file of {"step": ...} lines (metrics.jsonl, samples.jsonl) keeping those of steps up to
 * keep_upto_step: what a resumed run continues from; a missing file is fine */
int zen_truncate_jsonl_steps(const char *path, long keep_upto_step);
int zen_report_open(zen_report *r, const char *out_dir, long keep_upto_step);
void zen_report_close(zen_report *r);
/* The report of a rank other than 0: every call below does nothing. */
void zen_report_silent(zen_report *r);

typedef struct {
    long step, total_steps, epoch;
    double loss, lr, grad_norm, elapsed_s, eta_s;
    double tokens_per_s;      /* every input position of the batches, padding included */
    double real_tokens_per_s; /* the targets that count: loss_mask 1 and not across a document boundary */
    double mem_peak;  /* peak device bytes so far (GPU backends), NAN where the OS measures it */
    /* the objective's metrics (objectives/objective.h: "loss" first, TRL's names):
     * values[0 .. n_train) of the step, and all n_metrics on the validation
     * data when evaluated at this step (eval_values, else NULL; logged as eval_<name>) */
    int n_metrics, n_train;
    const char *const *names;
    const double *values, *eval_values;
    const zen_shown_metric *shown; /* what the progress and eval lines show beside the loss */
    int n_shown;
} zen_step_record;

/* Appends the step's line (non-finite numbers as null, so every line is JSON)
 * and flushes it; a failed write (disk full) is an error naming the file. */
int zen_report_metrics(zen_report *r, const zen_step_record *s);
void zen_report_progress(zen_report *r, const zen_step_record *s, int force_line);
/* The evaluation's line: "  eval loss 1.2345, ppl 3.437 on 40 validation sequences". */
void zen_report_eval(zen_report *r, const zen_step_record *s, long long items, const char *item);
/* Prints a message on its own line (ending a live bar first). */
void zen_report_line(zen_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
