/* util/json.c: strict JSON parsing (see json.h). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"

static int key_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* the first key that appears twice in an object anywhere in the tree, or NULL;
 * *oom is set when the check itself ran out of memory */
static const char *duplicate_key(const cJSON *node, int *oom) {
    for (const cJSON *c = node ? node->child : NULL; c; c = c->next) {
        const char *d = duplicate_key(c, oom);
        if (d || *oom) return d;
    }
    if (!cJSON_IsObject(node)) return NULL;
    size_t n = 0;
    for (const cJSON *c = node->child; c; c = c->next) n++;
    if (n < 2) return NULL;
    if (n <= 16) { /* small objects: compare pairs */
        for (const cJSON *a = node->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (!strcmp(a->string, b->string)) return a->string;
        return NULL;
    }
    const char **keys = malloc(n * sizeof *keys);
    if (!keys) {
        *oom = 1;
        return NULL;
    }
    size_t i = 0;
    for (const cJSON *c = node->child; c; c = c->next) keys[i++] = c->string;
    qsort(keys, n, sizeof *keys, key_cmp);
    const char *dup = NULL;
    for (i = 1; i < n && !dup; i++)
        if (!strcmp(keys[i - 1], keys[i])) dup = keys[i];
    free(keys);
    return dup;
}

int zen_json_parse(const char *text, size_t len, const char *origin, cJSON **out) {
    *out = NULL;
    const char *nul = memchr(text, 0, len);
    if (nul) return zen_fail(ZEN_ERR_INPUT, "%s: not valid JSON (a NUL byte at offset %zu)", origin, (size_t)(nul - text));
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : 0;
        return zen_fail(ZEN_ERR_INPUT, "%s: not valid JSON (near byte %zu)", origin, off);
    }
    size_t rest = end && end >= text && end <= text + len ? (size_t)(text + len - end) : 0;
    for (size_t i = 0; i < rest; i++)
        if (!strchr(" \t\r\n", end[i])) {
            cJSON_Delete(root);
            return zen_fail(ZEN_ERR_INPUT, "%s: not valid JSON (more after the value, at byte %zu)", origin,
                            (size_t)(end - text) + i);
        }
    int oom = 0;
    const char *dup = duplicate_key(root, &oom);
    if (dup || oom) {
        int rc = oom ? zen_fail(ZEN_ERR_INTERNAL, "%s: out of memory checking JSON keys", origin)
                     : zen_fail(ZEN_ERR_INPUT, "%s: key '%.200s' appears twice in one object", origin, dup);
        cJSON_Delete(root);
        return rc;
    }
    *out = root;
    return 0;
}

cJSON *zen_json_exact_number(double v) {
    if (!isfinite(v)) return cJSON_CreateNull();
    char text[40];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, v);
        if (strtod(text, NULL) == v) break;
    }
    return cJSON_CreateRaw(text);
}

double zen_float_for_json(float v) {
    char buf[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    return strtod(buf, NULL);
}
