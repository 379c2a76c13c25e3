/* objectives/rewards.h: GRPO's reward functions (objectives/rewards.c).
 *
 * The run config's `rewards` is a JSON list of functions, each an object
 * with "name" and its settings; `reward.weights` (TRL's reward_weights) a
 * list of one weight per reward (default 1 each). Built in:
 *   {"name": "answer", "field": "answer", "regex": PATTERN?}: 1 when the
 *       answer taken from the completion equals the record's field (as
 *       numbers when both are, else as trimmed strings), else 0; null when
 *       the record has no such field. The answer is the last match's first
 *       group (or whole match) of regex, by default the contents of the
 *       last \boxed{...}, else the last number;
 *   {"name": "regex", "pattern": PATTERN}: 1 when the completion matches;
 *   {"name": "think_format"}: TRL's ^<think>(?!.*<think>)(.*?)</think>.*$
 *       (DOTALL, MULTILINE, matched at the start);
 *   {"name": "overlong", "max_length": L, "buffer": c}: DAPO's soft
 *       penalty on the completion's tokens n: 0 when n <= L - c, (L - c - n)
 *       / c up to L, -1 beyond (L defaults to grpo.max_completion_length);
 *   {"name": "command", "argv": [PROGRAM, ARG...], "timeout_s": 60,
 *    "outputs": [NAME...]?}: the user's program, started once (per rank),
 *       without a shell. zen writes a JSON line per completion to its stdin,
 *       {"prompt", "completion", "completion_ids", "record", "group",
 *       "sample"}, and reads a line back per completion: a number, null, or
 *       (with outputs) an object with those names, each a reward of its own.
 * Any function may give null (NaN): it is left out of the completion's
 * weighted sum, as TRL's nansum does; a completion with every function null
 * has a NaN reward (advantage 0). A "label" gives a function its metrics'
 * name (default its name; command outputs are command.NAME). */
#ifndef ZEN_REWARDS_H
#define ZEN_REWARDS_H
#include <stddef.h>
#include <stdint.h>

typedef struct zen_rewards zen_rewards;

/* one completion to score */
typedef struct {
    const char *prompt;     /* the prompt's text */
    const char *completion; /* the completion's text (special tokens left out) */
    const int32_t *ids;     /* its token ids */
    size_t n_ids;
    const char *record;     /* the record's fields, a JSON object (len bytes), or NULL */
    size_t record_len;
    long group, sample;     /* its prompt's index in the file, and its index in the group */
} zen_reward_item;

/* spec: the `rewards` JSON list; weights: `reward.weights` ("" for all 1); origin names them in errors */
int zen_rewards_create(zen_rewards **out, const char *spec, const char *weights, long max_completion_length,
                       const char *origin);
void zen_rewards_free(zen_rewards *r);
int zen_rewards_count(const zen_rewards *r);        /* reward columns (a command's outputs count one each) */
const char *zen_rewards_name(const zen_rewards *r, int k);
/* scores n completions: per [n][count] each column (NaN: null) and total [n] (the weighted nansum; NaN when
 * every column is null). A command that fails (exits, hangs past its deadline, answers short or not a
 * number) is one line naming it, the record and what it printed last; *external (may be NULL) is then 1:
 * the run's data are fine, the command is not. */
int zen_rewards_score(zen_rewards *r, const zen_reward_item *items, size_t n, double *per, double *total,
                      int *external);

#endif
