/* data/tokenizer.h: the byte-level BPE tokenizer of a Hugging Face
 * tokenizer.json (Zen-nano's is Qwen3's), exactly as the `tokenizers` library
 * runs it: added/special tokens are matched first and kept whole; the rest is
 * normalised (NFC, by utf8proc, when the file says so), split by the file's
 * pre-tokenizer regex (PCRE2 in UTF + Unicode-property mode, JIT-compiled),
 * mapped byte-to-unicode as GPT-2 does, and merged pair by pair by rank.
 * Decoding maps the unicode characters back to bytes. */
#ifndef ZEN_TOKENIZER_H
#define ZEN_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

typedef struct zen_tokenizer zen_tokenizer;

/* ids are below this (16.7M; real vocabularies stay under 1M) */
#define ZEN_TOKENIZER_MAX_ID (1 << 24)

/* Loads DIR/tokenizer.json (and DIR/tokenizer_config.json for the eos token). */
int zen_tokenizer_load(zen_tokenizer **out, const char *dir);
/* The same from tokenizer.json's text (no eos); origin names it in errors. */
int zen_tokenizer_load_json(zen_tokenizer **out, const char *json, size_t len, const char *origin);
/* Added tokens whose id (as HF assigns it) differs from the id tokenizer.json
 * lists for them; HF warns about each. */
int zen_tokenizer_id_mismatches(const zen_tokenizer *t);
void zen_tokenizer_free(zen_tokenizer *t);

/* A growable list of token ids. */
typedef struct {
    int32_t *ids;
    size_t len, cap;
} zen_ids;
void zen_ids_free(zen_ids *v);
int zen_ids_push(zen_ids *v, int32_t id);

/* Appends the ids of text[0..len) to out. parse_special: added tokens written in
 * the text become their ids (as HF does by default); otherwise they are text. */
int zen_tokenizer_encode(zen_tokenizer *t, const char *text, size_t len, int parse_special, zen_ids *out);
/* The text of ids (malloc'd, NUL-terminated; *len_out gets its length). */
int zen_tokenizer_decode(const zen_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *len_out);
/* The same over the ids the tokenizer has (a model may pick ids past them: an untrained one, or a vocabulary
 * padded beyond the tokenizer), with skip_special the special added tokens left out (Hugging Face's
 * skip_special_tokens: how TRL decodes completions). */
int zen_tokenizer_decode_known(const zen_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out,
                               size_t *len_out);
/* text as valid UTF-8 (JSON's): a byte that starts no valid character becomes U+FFFD, as Python's
 * errors="replace" and Hugging Face's decode give it; malloc'd, NULL when out of memory */
char *zen_utf8_valid(const char *text, size_t len);
/* ids as valid UTF-8 text (zen_tokenizer_decode_known, then zen_utf8_valid): what TRL's batch_decode gives a
 * reward function; malloc'd, NULL on failure (zen_last_error) */
char *zen_tokenizer_utf8(const zen_tokenizer *t, const int32_t *ids, size_t n, int skip_special);
/* The id of a token's exact text (an added token such as "<|im_end|>"), or -1. */
int32_t zen_tokenizer_token_id(const zen_tokenizer *t, const char *token);
/* Bytes of text that token id stands for (its decoded length). */
size_t zen_tokenizer_token_bytes(const zen_tokenizer *t, int32_t id);
/* The tokenizer's normalisation of text (NFC or none) into a malloc'd copy. */
int zen_tokenizer_normalize(const zen_tokenizer *t, const char *text, size_t len, char **out, size_t *out_len);
/* The stored text of an id (byte-level unicode, or an added token's content), or NULL. */
const char *zen_tokenizer_text(const zen_tokenizer *t, int32_t id);
/* 0 no such id, 1 a vocabulary token, 2 an added token, 3 a special added token */
int zen_tokenizer_kind(const zen_tokenizer *t, int32_t id);
/* One more than the largest id. */
int32_t zen_tokenizer_vocab_size(const zen_tokenizer *t);
/* The eos token of tokenizer_config.json, or -1. */
int32_t zen_tokenizer_eos(const zen_tokenizer *t);
/* The pad token of tokenizer_config.json (Qwen3: <|endoftext|>), or -1. */
int32_t zen_tokenizer_pad(const zen_tokenizer *t);

/* GPT-2's byte-level spelling of byte b as UTF-8 (out holds at least 4 bytes). */
void zen_byte_level_char(int b, char *out);
/* A byte-level tokenizer.json + tokenizer_config.json for a toy model of the
 * given vocab (>= 256), see data/byte_tokenizer.c. */
int zen_write_byte_tokenizer(const char *dir, int vocab);
/* Qwen2/3's normalizer (NFC), pre-tokenizer (its split regex, then
 * byte-level) and decoder, added to a tokenizer.json object being built */
struct cJSON;
void zen_qwen_tokenizer_json(struct cJSON *root);
/* sets the ids zen data uses for eos and pad (-1: none), as a
 * tokenizer_config.json would */
void zen_tokenizer_set_special_ids(zen_tokenizer *t, int32_t eos, int32_t pad);

#endif
