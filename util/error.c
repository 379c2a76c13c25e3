/* util/error.c: the thread-local last-error message and checked allocation. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static _Thread_local char last_error[4096];

int zen_fail(int code, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    /* keep the message to one line of printable text whatever the caller
     * passed in (names from hostile files may hold control characters) */
    for (char *c = last_error; *c; c++) {
        if (*c == '\n' || *c == '\r' || *c == '\t') *c = ' ';
        else if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    }
    return code;
}

int zen_fail_context(int code, const char *prefix) {
    char copy[sizeof last_error];
    memcpy(copy, last_error, sizeof copy);
    return zen_fail(code, "%s: %s", prefix, copy);
}

const char *zen_last_error(void) { return last_error; }

void *zen_malloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) zen_fail(ZEN_ERR_INTERNAL, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *zen_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) zen_fail(ZEN_ERR_INTERNAL, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
