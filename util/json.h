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

/* A JSON number item that reads back as exactly v: the shortest of 15, 16 or
 * 17 significant digits that does (cJSON's own printer stops at 15 digits
 * whenever they come within an epsilon of v, one ulp off, which a resumed run
 * would see as a changed setting). Non-finite v gives null. NULL if out of memory. */
struct cJSON *zen_json_exact_number(double v);

/* a float as the shortest decimal (6 to 9 digits) that reads back to it, for
 * JSON files that Python and other readers parse as doubles (0.05, not
 * 0.0500000007) */
double zen_float_for_json(float v);

#endif
