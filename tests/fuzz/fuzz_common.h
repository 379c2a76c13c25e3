/* tests/fuzz/fuzz_common.h: what the libFuzzer targets share. Each target
 * feeds its input to one parser of zen exactly as the zen command does, and
 * checks what a parse that succeeds promises (every tensor's bytes inside
 * the input, a round trip that changes nothing, ...). A crash, a sanitizer
 * report or a failed promise (abort) is a finding; an error return is the
 * expected answer to a bad input. */
#ifndef ZEN_FUZZ_COMMON_H
#define ZEN_FUZZ_COMMON_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

/* the input as a NUL-terminated copy (the text parsers take C strings) */
static inline char *fuzz_text(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* a promise of the parser broken: report and stop */
#define FUZZ_ASSERT(cond)                                                                         \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "fuzz: %s:%d: promise broken: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, zen_last_error());                                                     \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

/* every message is one line of printable text */
static inline void fuzz_check_message(void) {
    for (const char *c = zen_last_error(); *c; c++) FUZZ_ASSERT((unsigned char)*c >= 0x20 && *c != 0x7f);
}

#ifdef ZEN_FUZZ_TOKENIZER_DIR
#include "data/tokenizer.h"
/* the fuzz tokenizer (tests/fuzz/tokenizer), loaded once */
static inline zen_tokenizer *fuzz_tokenizer(void) {
    static zen_tokenizer *tok;
    if (!tok && zen_tokenizer_load(&tok, ZEN_FUZZ_TOKENIZER_DIR)) {
        fprintf(stderr, "fuzz: %s\n", zen_last_error());
        abort();
    }
    return tok;
}
#endif

#endif
