/* objectives/kto.h: what KTO (objectives/kto.c) shares outside the
 * objective table: TRL's advice on the balance of desirable and undesirable
 * records, for zen data's summary and zen train's. */
#ifndef ZEN_KTO_H
#define ZEN_KTO_H
#include <stddef.h>
#include <stdint.h>

/* TRL's KTOTrainer warns unless (w_d n_d) : (w_u n_u) lies in 1:1 .. 4:3
 * (its check: w_d in [n_u w_u / n_d, 1.33 n_u w_u / n_d] or w_u in
 * [n_d w_d / (1.33 n_u), n_d w_d / n_u], each rounded to 2 decimals). 1 and a
 * line of advice naming both ranges when it would; 0 when the balance is
 * within them (or one kind is absent). */
int zen_kto_ratio_advice(int64_t n_desirable, int64_t n_undesirable, double w_desirable, double w_undesirable,
                         char *buf, size_t cap);

#endif
