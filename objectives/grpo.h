/* objectives/grpo.h: what GRPO (objectives/grpo.c) shares with the rest of
 * objectives/: TRL's per-token loss of one completion and its gradient, on
 * the host (the decoder gives the log-probabilities; this turns them into
 * the loss and the rows' weights). */
#ifndef ZEN_GRPO_H
#define ZEN_GRPO_H
#include <stddef.h>

#include "objective.h"

/* The clipped policy-gradient term of one token, TRL's
 *   L = -min(rho~ A, clip(rho, 1 - eps_low, 1 + eps_high) A),  rho~ = min(rho, delta) when delta > 0,
 * and dL/drho (torch.minimum's gradient: the chosen branch's, half of each
 * on a tie). *low, *high: the token is clipped below (rho < 1 - eps_low,
 * A < 0) or above (rho > 1 + eps_high, A > 0), as TRL counts them. */
double zen_grpo_clip_term(double rho, double adv, double eps_low, double eps_high, double delta, double *dl_drho,
                          int *low, int *high);

#endif
