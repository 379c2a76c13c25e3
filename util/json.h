/* util/json.h: strict JSON parsing for every file zen reads (cJSON underneath).
 * Beyond cJSON's own checks it refuses what would make one file mean two
 * things to two readers: bytes after the value, NUL bytes, and an object key
 * given twice (cJSON would keep the first, Python's json the last). */
#ifndef ZEN_JSON_H
#define ZEN_JSON_H
#include <stddef.h>

struct cJSON;
/* Parses text[0..len) as one JSON value into *out (free with cJSON_Delete);
 * errors name origin (a file, "--set x") and what is wrong. */
int zen_json_parse(const char *text, size_t len, const char *origin, struct cJSON **out);

#endif
