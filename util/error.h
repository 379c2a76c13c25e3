/* util/error.h: how library code reports errors.
 *
 * Library functions return 0 on success or a non-zero code, and leave a one-line
 * message (naming the file, key or value at fault) in a thread-local buffer.
 * Only train/ (the zen command) decides to print it and exit with the code.
 */
#ifndef ZEN_ERROR_H
#define ZEN_ERROR_H

enum {
    ZEN_OK = 0,
    ZEN_ERR_INTERNAL = 1, /* our fault or the machine's: out of memory, I/O failure */
    ZEN_ERR_INPUT = 2     /* the user's input: bad file, bad flag, bad value */
};

/* Sets the message (printf-style, one line) and returns code, so a caller can
 * write `return zen_fail(ZEN_ERR_INPUT, "%s: missing key 'x'", path);`. */
int zen_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with "prefix: " (e.g. the file it came from)
 * and returns code. */
int zen_fail_context(int code, const char *prefix);

/* The message of the most recent zen_fail on this thread ("" if none). */
const char *zen_last_error(void);

/* malloc/calloc that set an error message on failure (return NULL). */
void *zen_malloc(size_t bytes);
void *zen_calloc(size_t count, size_t size);

#endif
