/* train/run_config.c: a table of every run config key (type, range, default),
 * JSON parsing, --set overrides, validation and the resolved JSON. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/kernels.h"
#include "../model/model_load.h"
#include "../model/lora.h"
#include "../model/weights.h"
#include "../optim/schedule.h"
#include "../util/error.h"
#include "../util/json.h"
#include "run_config.h"

typedef enum { K_STR, K_INT, K_FLOAT, K_BOOL, K_AUTO_BOOL, K_TARGETS, K_PROMPTS, K_JSON } key_type;

typedef struct {
    const char *name;
    key_type type;
    size_t offset;
    double min, max;   /* numeric range (inclusive) */
    size_t cap;        /* string capacity */
    int trajectory;    /* changing it changes what a run computes */
} key_spec;

#define OFF(f) offsetof(zen_run_config, f)
#define CAP(f) sizeof(((zen_run_config *)0)->f)
static const key_spec KEYS[] = {
    {"model", K_STR, OFF(model), 0, 0, CAP(model), 1},
    {"data", K_STR, OFF(data), 0, 0, CAP(data), 1},
    {"val_data", K_STR, OFF(val_data), 0, 0, CAP(val_data), 0},
    {"val_fraction", K_FLOAT, OFF(val_fraction), 0, 0.5, 0, 1},
    {"out_dir", K_STR, OFF(out_dir), 0, 0, CAP(out_dir), 0},
    {"device", K_STR, OFF(device), 0, 0, CAP(device), 0},
    {"dtype", K_STR, OFF(dtype), 0, 0, CAP(dtype), 1},
    {"base_quant", K_STR, OFF(base_quant), 0, 0, CAP(base_quant), 1},
    {"seed", K_INT, OFF(seed), 0, 4e18, 0, 1},
    {"seq_len", K_INT, OFF(seq_len), 1, 1 << 20, 0, 1},
    {"batch_size", K_INT, OFF(batch_size), 1, 65536, 0, 1},
    {"grad_accum", K_INT, OFF(grad_accum), 1, 65536, 0, 1},
    {"max_steps", K_INT, OFF(max_steps), 0, 1e12, 0, 1},
    {"epochs", K_INT, OFF(epochs), 0, 1e6, 0, 1},
    {"lr", K_FLOAT, OFF(lr), 0, 10, 0, 1},
    {"schedule", K_STR, OFF(schedule), 0, 0, CAP(schedule), 1},
    {"warmup_steps", K_INT, OFF(warmup_steps), 0, 1e12, 0, 1},
    {"min_lr_ratio", K_FLOAT, OFF(min_lr_ratio), 0, 1, 0, 1},
    {"weight_decay", K_FLOAT, OFF(weight_decay), 0, 10, 0, 1},
    {"beta1", K_FLOAT, OFF(beta1), 0, 0.999999, 0, 1},
    {"beta2", K_FLOAT, OFF(beta2), 0, 0.99999999, 0, 1},
    {"eps", K_FLOAT, OFF(eps), 1e-30, 1, 0, 1},
    {"grad_clip", K_FLOAT, OFF(grad_clip), 0, 1e9, 0, 1},
    {"recompute", K_AUTO_BOOL, OFF(recompute), 0, 0, 0, 0},
    {"doc_mask", K_BOOL, OFF(doc_mask), 0, 0, 0, 1},
    {"log_every", K_INT, OFF(log_every), 1, 1e12, 0, 0},
    {"eval_every", K_INT, OFF(eval_every), 0, 1e12, 0, 0},
    {"save_every", K_INT, OFF(save_every), 0, 1e12, 0, 0},
    {"keep_checkpoints", K_INT, OFF(keep_checkpoints), 0, 1e6, 0, 0},
    {"lora.r", K_INT, OFF(lora_r), 1, 4096, 0, 1},
    {"lora.alpha", K_FLOAT, OFF(lora_alpha), 1e-6, 1e6, 0, 1},
    {"lora.dropout", K_FLOAT, OFF(lora_dropout), 0, 0.95, 0, 1},
    {"sample_every", K_INT, OFF(sample_every), 0, 1e12, 0, 0},
    {"sample_prompts", K_PROMPTS, OFF(sample_prompts), 0, 0, CAP(sample_prompts), 0},
    {"lora.targets", K_TARGETS, OFF(lora_targets), 0, 0, CAP(lora_targets), 1},
    {"lora.rslora", K_BOOL, OFF(lora_rslora), 0, 0, 0, 1},
    {"lora.dora", K_BOOL, OFF(lora_dora), 0, 0, 0, 1},
    {"lora.dora_clean_base", K_BOOL, OFF(lora_dora_clean_base), 0, 0, 0, 1},
    {"adapter", K_STR, OFF(adapter), 0, 0, CAP(adapter), 1},
    {"reference", K_STR, OFF(reference), 0, 0, CAP(reference), 1},
    /* the objective and the options objectives read (objectives/objective.h) */
    {"objective", K_STR, OFF(objective), 0, 0, CAP(objective), 1},
    {"beta", K_FLOAT, OFF(obj.beta), 1e-6, 1e6, 0, 1},
    {"label_smoothing", K_FLOAT, OFF(obj.label_smoothing), 0, 0.4999999, 0, 1},
    {"dpo.loss", K_STR, OFF(obj.dpo_loss), 0, 0, CAP(obj.dpo_loss), 1},
    {"dpo.precompute_ref", K_BOOL, OFF(obj.precompute_ref), 0, 0, 0, 1},
    {"orpo.nll_prompt", K_BOOL, OFF(obj.orpo_nll_prompt), 0, 0, 0, 1},
    {"pair_layout", K_STR, OFF(obj.pair_layout), 0, 0, CAP(obj.pair_layout), 1},
    {"kto.desirable_weight", K_FLOAT, OFF(obj.kto_desirable_weight), 1e-6, 1e6, 0, 1},
    {"kto.undesirable_weight", K_FLOAT, OFF(obj.kto_undesirable_weight), 1e-6, 1e6, 0, 1},
    {"kto.loss_type", K_STR, OFF(obj.kto_loss_type), 0, 0, CAP(obj.kto_loss_type), 1},
    {"kto.precompute_ref", K_BOOL, OFF(obj.kto_precompute_ref), 0, 0, 0, 1},
    {"grpo.num_generations", K_INT, OFF(obj.grpo_num_generations), 2, 1024, 0, 1},
    {"grpo.max_completion_length", K_INT, OFF(obj.grpo_max_completion_length), 1, 1 << 20, 0, 1},
    {"grpo.temperature", K_FLOAT, OFF(obj.grpo_temperature), 1e-3, 100, 0, 1},
    {"grpo.top_p", K_FLOAT, OFF(obj.grpo_top_p), 1e-6, 1, 0, 1},
    {"grpo.top_k", K_INT, OFF(obj.grpo_top_k), 0, 1 << 24, 0, 1},
    {"grpo.min_p", K_FLOAT, OFF(obj.grpo_min_p), 0, 1, 0, 1},
    {"grpo.scale_rewards", K_STR, OFF(obj.grpo_scale_rewards), 0, 0, CAP(obj.grpo_scale_rewards), 1},
    {"grpo.epsilon", K_FLOAT, OFF(obj.grpo_epsilon), 0, 10, 0, 1},
    {"grpo.epsilon_high", K_FLOAT, OFF(obj.grpo_epsilon_high), 0, 100, 0, 1},
    {"grpo.delta", K_FLOAT, OFF(obj.grpo_delta), 0, 1e6, 0, 1},
    {"grpo.importance_sampling_level", K_STR, OFF(obj.grpo_importance_sampling_level), 0, 0,
     CAP(obj.grpo_importance_sampling_level), 1},
    {"grpo.num_iterations", K_INT, OFF(obj.grpo_num_iterations), 1, 1024, 0, 1},
    {"grpo.beta", K_FLOAT, OFF(obj.grpo_beta), 0, 1e6, 0, 1},
    {"grpo.loss_type", K_STR, OFF(obj.grpo_loss_type), 0, 0, CAP(obj.grpo_loss_type), 1},
    {"grpo.mask_truncated_completions", K_BOOL, OFF(obj.grpo_mask_truncated_completions), 0, 0, 0, 1},
    {"rewards", K_JSON, OFF(obj.rewards), 0, 0, CAP(obj.rewards), 1},
    {"reward.weights", K_JSON, OFF(obj.reward_weights), 0, 0, CAP(obj.reward_weights), 1},
};
#define NKEYS (sizeof KEYS / sizeof KEYS[0])
_Static_assert(NKEYS <= ZEN_RUN_CONFIG_MAX_KEYS, "zen_run_config.cli_keys holds a flag per key");

void zen_run_config_defaults(zen_run_config *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->device, "cpu");
    strcpy(c->dtype, "auto");
    strcpy(c->base_quant, "none");
    c->recompute = -1;
    c->doc_mask = 1;
    c->seed = 42;
    c->seq_len = 512;
    c->batch_size = 4;
    c->grad_accum = 1;
    c->epochs = 1;
    c->lr = 2e-4;
    strcpy(c->schedule, "cosine");
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->grad_clip = 1.0;
    c->log_every = 1;
    c->keep_checkpoints = 2;
    c->lora_r = 8;
    c->lora_alpha = 16;
    strcpy(c->lora_targets, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj");
    strcpy(c->objective, "sft");
    zen_objective_opts_defaults(&c->obj);
}

static const key_spec *find_key(const char *name) {
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(KEYS[i].name, name)) return &KEYS[i];
    return NULL;
}

static const char *type_name(key_type t) {
    switch (t) {
    case K_STR: return "a string";
    case K_INT: return "an integer";
    case K_FLOAT: return "a number";
    case K_BOOL: return "true or false";
    case K_AUTO_BOOL: return "true, false or \"auto\"";
    case K_PROMPTS: return "a list of prompt strings";
    case K_JSON: return "a JSON list (or null)";
    default: return "a list of target names";
    }
}

/* targets as given (list or comma string) -> canonical comma list of *_proj names */
static int set_targets(zen_run_config *c, const char *list, const char *origin) {
    unsigned mask;
    if (zen_lora_parse_targets(list, &mask)) return zen_fail_context(ZEN_ERR_INPUT, origin);
    c->lora_targets[0] = '\0';
    for (int t = 0; t < ZEN_NUM_TARGETS; t++)
        if ((mask >> t) & 1u) {
            if (c->lora_targets[0]) strcat(c->lora_targets, ",");
            strcat(c->lora_targets, zen_target_name((zen_target)t));
        }
    return 0;
}

/* appends one prompt to sample_prompts */
static int add_prompt(zen_run_config *c, const key_spec *k, const char *value, const char *origin) {
    size_t used = strlen(c->sample_prompts), n = strlen(value);
    if (!n || strchr(value, ZEN_PROMPT_SEP))
        return zen_fail(ZEN_ERR_INPUT, "%s: key '%s': a prompt must be non-empty text", origin, k->name);
    if (used + n + 2 > k->cap)
        return zen_fail(ZEN_ERR_INPUT, "%s: key '%s': the prompts exceed %zu bytes", origin, k->name, k->cap - 2);
    memcpy(c->sample_prompts + used, value, n);
    c->sample_prompts[used + n] = ZEN_PROMPT_SEP;
    c->sample_prompts[used + n + 1] = '\0';
    return 0;
}

static int set_string(zen_run_config *c, const key_spec *k, const char *value, const char *origin) {
    if (k->type == K_TARGETS) return set_targets(c, value, origin);
    if (k->type == K_PROMPTS) { /* one prompt (--set), replacing the list */
        c->sample_prompts[0] = '\0';
        return add_prompt(c, k, value, origin);
    }
    if (strlen(value) >= k->cap)
        return zen_fail(ZEN_ERR_INPUT, "%s: key '%s': value is longer than %zu characters", origin, k->name,
                        k->cap - 1);
    strcpy((char *)c + k->offset, value);
    return 0;
}

/* a JSON value kept as its compact text ("" for null) */
static int set_json(zen_run_config *c, const key_spec *k, const cJSON *item, const char *origin) {
    if (!cJSON_IsNull(item) && !cJSON_IsArray(item))
        return zen_fail(ZEN_ERR_INPUT, "%s: key '%s' must be a JSON list", origin, k->name);
    char *text = cJSON_IsNull(item) ? NULL : cJSON_PrintUnformatted(item);
    if (text && strlen(text) >= k->cap) {
        free(text);
        return zen_fail(ZEN_ERR_INPUT, "%s: key '%s': its JSON is longer than %zu bytes", origin, k->name, k->cap - 1);
    }
    strcpy((char *)c + k->offset, text ? text : "");
    free(text);
    return 0;
}

static int set_number(zen_run_config *c, const key_spec *k, double v, const char *origin) {
    if (k->type == K_INT) {
        if (v != floor(v) || fabs(v) > 9e18)
            return zen_fail(ZEN_ERR_INPUT, "%s: key '%s' must be an integer, not %g", origin, k->name, v);
        *(long *)((char *)c + k->offset) = (long)v;
    } else {
        *(double *)((char *)c + k->offset) = v;
    }
    return 0;
}

static int apply_item(zen_run_config *c, const cJSON *item, const char *name, const char *origin) {
    const key_spec *k = find_key(name);
    if (!k) return zen_fail(ZEN_ERR_INPUT, "%s: unknown key '%s'", origin, name);
    switch (k->type) {
    case K_STR:
        if (!cJSON_IsString(item)) break;
        return set_string(c, k, item->valuestring, origin);
    case K_INT:
    case K_FLOAT:
        if (!cJSON_IsNumber(item)) break;
        return set_number(c, k, item->valuedouble, origin);
    case K_BOOL:
    case K_AUTO_BOOL:
        if (k->type == K_AUTO_BOOL && cJSON_IsString(item) && !strcmp(item->valuestring, "auto")) {
            *(int *)((char *)c + k->offset) = -1;
            return 0;
        }
        if (!cJSON_IsBool(item)) break;
        *(int *)((char *)c + k->offset) = cJSON_IsTrue(item);
        return 0;
    case K_TARGETS:
        if (cJSON_IsString(item)) return set_string(c, k, item->valuestring, origin);
        if (cJSON_IsArray(item)) {
            char list[256] = "";
            const cJSON *e;
            cJSON_ArrayForEach(e, item) {
                if (!cJSON_IsString(e) || strlen(list) + strlen(e->valuestring) + 2 > sizeof list)
                    return zen_fail(ZEN_ERR_INPUT, "%s: key '%s' must be a list of target names", origin, name);
                if (list[0]) strcat(list, ",");
                strcat(list, e->valuestring);
            }
            return set_string(c, k, list, origin);
        }
        break;
    case K_JSON: return set_json(c, k, item, origin);
    case K_PROMPTS:
        if (cJSON_IsString(item)) return set_string(c, k, item->valuestring, origin);
        if (cJSON_IsArray(item)) {
            c->sample_prompts[0] = '\0';
            const cJSON *e;
            cJSON_ArrayForEach(e, item) {
                if (!cJSON_IsString(e)) break;
                int rc = add_prompt(c, k, e->valuestring, origin);
                if (rc) return rc;
            }
            if (!e) return 0;
        }
        break;
    }
    return zen_fail(ZEN_ERR_INPUT, "%s: key '%s' must be %s", origin, name, type_name(k->type));
}

/* "lora", "dpo", "orpo", "kto", ...: the prefix of keys "name.x", nested as objects in JSON */
static int is_group(const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < NKEYS; i++)
        if (!strncmp(KEYS[i].name, name, n) && KEYS[i].name[n] == '.') return 1;
    return 0;
}

int zen_run_config_apply_json(zen_run_config *c, const char *json_text, const char *origin) {
    cJSON *root = NULL;
    int rc = zen_json_parse(json_text, strlen(json_text), origin, &root);
    if (rc) return rc;
    if (!cJSON_IsObject(root)) rc = zen_fail(ZEN_ERR_INPUT, "%s: expected a JSON object", origin);
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (rc) break;
        if (is_group(item->string)) { /* lora, dpo, orpo: objects of keys */
            if (!cJSON_IsObject(item)) {
                rc = zen_fail(ZEN_ERR_INPUT, "%s: key '%s' must be an object", origin, item->string);
                break;
            }
            const cJSON *sub;
            cJSON_ArrayForEach(sub, item) {
                char name[128];
                snprintf(name, sizeof name, "%s.%s", item->string, sub->string);
                if ((rc = apply_item(c, sub, name, origin))) break;
            }
        } else {
            rc = apply_item(c, item, item->string, origin);
        }
    }
    cJSON_Delete(root);
    return rc;
}

int zen_run_config_set(zen_run_config *c, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return zen_fail(ZEN_ERR_INPUT, "--set '%s': expected key=value", assignment);
    char name[128];
    size_t n = (size_t)(eq - assignment);
    if (n >= sizeof name) return zen_fail(ZEN_ERR_INPUT, "--set '%s': key too long", assignment);
    memcpy(name, assignment, n);
    name[n] = '\0';
    const char *value = eq + 1;
    const key_spec *k = find_key(name);
    if (!k) return zen_fail(ZEN_ERR_INPUT, "--set: unknown key '%s'", name);
    c->cli_keys[k - KEYS] = 1;
    char origin[160];
    snprintf(origin, sizeof origin, "--set %s", name);
    if (k->type == K_STR || k->type == K_TARGETS || k->type == K_PROMPTS) return set_string(c, k, value, origin);
    if (k->type == K_JSON) {
        cJSON *item = NULL;
        int rc = zen_json_parse(value, strlen(value), origin, &item);
        if (!rc) rc = set_json(c, k, item, origin);
        cJSON_Delete(item);
        return rc;
    }
    if (k->type == K_BOOL || k->type == K_AUTO_BOOL) {
        if (!strcmp(value, "true") || !strcmp(value, "1")) *(int *)((char *)c + k->offset) = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "0")) *(int *)((char *)c + k->offset) = 0;
        else if (k->type == K_AUTO_BOOL && !strcmp(value, "auto")) *(int *)((char *)c + k->offset) = -1;
        else return zen_fail(ZEN_ERR_INPUT, "--set %s: '%s' is not %s", name, value, type_name(k->type));
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end)
        return zen_fail(ZEN_ERR_INPUT, "--set %s: '%s' is not %s", name, value, type_name(k->type));
    return set_number(c, k, v, origin);
}

/* keys that exclude each other; given on the command line, one replaces the
 * recipe's other */
static const struct { const char *a, *b; } CONFLICTS[] = {{"val_data", "val_fraction"}};

static int key_is_set(const zen_run_config *c, const key_spec *k) {
    const char *field = (const char *)c + k->offset;
    if (k->type == K_STR || k->type == K_JSON) return field[0] != '\0';
    if (k->type == K_FLOAT) return *(const double *)field != 0;
    return *(const long *)field != 0;
}

static void reset_key(zen_run_config *c, const key_spec *k) {
    zen_run_config d;
    zen_run_config_defaults(&d);
    size_t size = k->type == K_STR || k->type == K_TARGETS || k->type == K_PROMPTS ? k->cap
                  : k->type == K_FLOAT ? sizeof(double) : k->type == K_INT ? sizeof(long) : sizeof(int);
    memcpy((char *)c + k->offset, (const char *)&d + k->offset, size);
}

int zen_run_config_resolve(zen_run_config *c, char *note, size_t cap) {
    note[0] = '\0';
    for (size_t i = 0; i < sizeof CONFLICTS / sizeof CONFLICTS[0]; i++) {
        const key_spec *a = find_key(CONFLICTS[i].a), *b = find_key(CONFLICTS[i].b);
        if (!key_is_set(c, a) || !key_is_set(c, b)) continue;
        int a_cli = c->cli_keys[a - KEYS], b_cli = c->cli_keys[b - KEYS];
        if (a_cli == b_cli) continue; /* both from one place: validate refuses them */
        const key_spec *wins = a_cli ? a : b, *loses = a_cli ? b : a;
        size_t used = strlen(note);
        snprintf(note + used, cap - used, "%s--set %s overrides the recipe's '%s' (the two exclude each other)",
                 used ? "; " : "", wins->name, loses->name);
        reset_key(c, loses);
    }
    return 0;
}

int zen_run_config_validate(const zen_run_config *c) {
    for (size_t i = 0; i < NKEYS; i++) {
        const key_spec *k = &KEYS[i];
        double v;
        if (k->type == K_INT) v = (double)*(const long *)((const char *)c + k->offset);
        else if (k->type == K_FLOAT) v = *(const double *)((const char *)c + k->offset);
        else continue;
        if (!(v >= k->min && v <= k->max))
            return zen_fail(ZEN_ERR_INPUT, "config key '%s' = %g is out of range [%g, %g]", k->name, v, k->min,
                            k->max);
    }
    if (!c->model[0]) return zen_fail(ZEN_ERR_INPUT, "config key 'model' is not set (or give --model DIR)");
    if (!c->data[0]) return zen_fail(ZEN_ERR_INPUT, "config key 'data' is not set (or give --data FILE.h5)");
    if (!c->out_dir[0]) return zen_fail(ZEN_ERR_INPUT, "config key 'out_dir' is not set (or give --out DIR)");
    int quant;
    if (zen_base_quant_parse(c->base_quant, &quant)) return zen_fail_context(ZEN_ERR_INPUT, "config key");
    zen_schedule_kind kind;
    if (zen_schedule_parse(c->schedule, &kind))
        return zen_fail(ZEN_ERR_INPUT, "config key 'schedule' = '%s' is unknown (expected cosine, linear or constant)",
                        c->schedule);
    if (c->max_steps == 0 && c->epochs == 0)
        return zen_fail(ZEN_ERR_INPUT, "config keys 'max_steps' and 'epochs' are both 0: nothing to train");
    if (c->sample_every > 0 && !c->sample_prompts[0])
        return zen_fail(ZEN_ERR_INPUT, "config key 'sample_every' is %ld but 'sample_prompts' is empty", c->sample_every);
    if (c->val_data[0] && c->val_fraction > 0)
        return zen_fail(ZEN_ERR_INPUT, "config keys 'val_data' and 'val_fraction' are both set: choose one");
    const zen_objective_ops *ops = zen_objective_find(c->objective);
    if (!ops)
        return zen_fail(ZEN_ERR_INPUT, "config key 'objective' = '%s' is unknown (expected %s)", c->objective,
                        zen_objective_names());
    if (c->reference[0] && !(ops->uses_reference && ops->uses_reference(&c->obj)))
        return zen_fail(ZEN_ERR_INPUT, "config key 'reference' = '%s': objective %s has no reference model", c->reference,
                        ops->name);
    const char *key;
    if (zen_objective_check(ops, &c->obj, &key)) { /* the objective's options: the key at fault */
        char prefix[64];
        snprintf(prefix, sizeof prefix, "config key '%s'", key ? key : "objective");
        return zen_fail_context(ZEN_ERR_INPUT, prefix);
    }
    return 0;
}

char *zen_run_config_to_json(const zen_run_config *c) {
    cJSON *root = cJSON_CreateObject();
    for (size_t i = 0; i < NKEYS; i++) {
        const key_spec *k = &KEYS[i];
        const char *name = k->name, *dot = strchr(name, '.');
        cJSON *parent = root;
        if (dot) { /* nested: "lora.r" is {"lora": {"r": ...}} */
            char group[32];
            snprintf(group, sizeof group, "%.*s", (int)(dot - name), name);
            parent = cJSON_GetObjectItemCaseSensitive(root, group);
            if (!parent) parent = cJSON_AddObjectToObject(root, group);
            name = dot + 1;
        }
        const char *field = (const char *)c + k->offset;
        switch (k->type) {
        case K_STR: cJSON_AddStringToObject(parent, name, field); break;
        case K_INT: /* exactly: a seed above 2^53 prints with more than cJSON's 15 digits */
            cJSON_AddItemToObject(parent, name, zen_json_exact_number((double)*(const long *)field));
            break;
        case K_FLOAT: cJSON_AddItemToObject(parent, name, zen_json_exact_number(*(const double *)field)); break;
        case K_BOOL: cJSON_AddBoolToObject(parent, name, *(const int *)field); break;
        case K_AUTO_BOOL:
            if (*(const int *)field < 0) cJSON_AddStringToObject(parent, name, "auto");
            else cJSON_AddBoolToObject(parent, name, *(const int *)field);
            break;
        case K_TARGETS: {
            cJSON *arr = cJSON_AddArrayToObject(parent, name);
            char buf[128];
            snprintf(buf, sizeof buf, "%s", field);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
                cJSON_AddItemToArray(arr, cJSON_CreateString(t));
            break;
        }
        case K_JSON: {
            cJSON *v = field[0] ? cJSON_Parse(field) : NULL;
            cJSON_AddItemToObject(parent, name, v ? v : cJSON_CreateNull());
            break;
        }
        case K_PROMPTS: {
            cJSON *arr = cJSON_AddArrayToObject(parent, name);
            for (const char *p = field, *e; (e = strchr(p, ZEN_PROMPT_SEP)); p = e + 1) {
                char *one = strndup(p, (size_t)(e - p));
                if (one) cJSON_AddItemToArray(arr, cJSON_CreateString(one));
                free(one);
            }
            break;
        }
        }
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

/* a key's value as text, for messages */
static void format_value(const zen_run_config *c, const key_spec *k, char *buf, size_t cap) {
    const char *f = (const char *)c + k->offset;
    switch (k->type) {
    case K_STR:
    case K_JSON:
    case K_PROMPTS:
    case K_TARGETS: snprintf(buf, cap, "%s", f); break;
    case K_INT: snprintf(buf, cap, "%ld", *(const long *)f); break;
    case K_FLOAT: snprintf(buf, cap, "%.9g", *(const double *)f); break;
    default: {
        int v = *(const int *)f;
        snprintf(buf, cap, "%s", v < 0 ? "auto" : v ? "true" : "false");
    }
    }
}

int zen_run_config_trajectory_diffs(const zen_run_config *a, const zen_run_config *b, const char *const *allowed,
                                    char *out, size_t cap) {
    int n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        const key_spec *k = &KEYS[i];
        if (!k->trajectory) continue;
        int skip = 0;
        for (const char *const *x = allowed; x && *x && !skip; x++) skip = !strcmp(*x, k->name);
        if (skip) continue;
        const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
        int same;
        switch (k->type) {
        case K_STR:
        case K_JSON:
        case K_PROMPTS:
        case K_TARGETS: same = !strcmp(fa, fb); break;
        case K_INT: same = *(const long *)fa == *(const long *)fb; break;
        case K_FLOAT: same = *(const double *)fa == *(const double *)fb; break;
        default: same = *(const int *)fa == *(const int *)fb; break;
        }
        if (same) continue;
        char va[160], vb[160];
        format_value(a, k, va, sizeof va);
        format_value(b, k, vb, sizeof vb);
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%s'%s' (%s, now %s)", n ? ", " : "", k->name, va, vb);
        n++;
    }
    return n;
}

int zen_run_config_recompute(const zen_run_config *c) {
    if (c->recompute >= 0) return c->recompute;
    const zk_backend_desc *d = zk_backend_find(c->device); /* "auto": the device's own default */
    return d ? d->default_recompute : 0;
}
