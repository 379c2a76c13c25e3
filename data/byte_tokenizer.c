/* data/byte_tokenizer.c: the tokenizer `zen init` gives a toy model whose vocab
 * is smaller than Qwen3's: byte-level BPE with no merges (token b is byte b,
 * spelled with GPT-2's byte-to-unicode map), Qwen3's NFC normaliser and split
 * regex, and, when the vocab has room, <|endoftext|>, <|im_start|> and
 * <|im_end|> as special tokens 256-258. zen data, zen export (GGUF) and
 * llama.cpp then treat the toy model like Zen-nano. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "tokenizer.h"

#define QWEN_SPLIT "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

void zen_qwen_tokenizer_json(struct cJSON *root) {
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "NFC");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *list = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(split, "pattern"), "Regex", QWEN_SPLIT);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddBoolToObject(split, "invert", 0);
    cJSON_AddItemToArray(list, split);
    cJSON *bl = cJSON_CreateObject();
    cJSON_AddStringToObject(bl, "type", "ByteLevel");
    cJSON_AddBoolToObject(bl, "add_prefix_space", 0);
    cJSON_AddBoolToObject(bl, "trim_offsets", 0);
    cJSON_AddBoolToObject(bl, "use_regex", 0);
    cJSON_AddItemToArray(list, bl);
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
}

int zen_write_byte_tokenizer(const char *dir, int vocab) {
    static const char *const specials[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    int n_special = vocab >= 259 ? 3 : 0;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < n_special; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", 256 + i);
        cJSON_AddStringToObject(a, "content", specials[i]);
        cJSON_AddBoolToObject(a, "single_word", 0);
        cJSON_AddBoolToObject(a, "lstrip", 0);
        cJSON_AddBoolToObject(a, "rstrip", 0);
        cJSON_AddBoolToObject(a, "normalized", 0);
        cJSON_AddBoolToObject(a, "special", 1);
        cJSON_AddItemToArray(added, a);
    }
    zen_qwen_tokenizer_json(root);
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *v = cJSON_AddObjectToObject(model, "vocab");
    char ch[4];
    for (int b = 0; b < 256; b++) {
        zen_byte_level_char(b, ch);
        cJSON_AddNumberToObject(v, ch, b);
    }
    cJSON_AddArrayToObject(model, "merges");
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "tokenizer_class", "Qwen2Tokenizer");
    cJSON_AddBoolToObject(cfg, "add_bos_token", 0);
    if (n_special) {
        cJSON_AddStringToObject(cfg, "eos_token", "<|im_end|>");
        cJSON_AddStringToObject(cfg, "pad_token", "<|endoftext|>");
        cJSON_AddStringToObject(cfg, "chat_template",
                                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                                "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                                "{{ '<|im_start|>assistant\\n' }}{% endif %}");
    }
    char *cfg_text = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    char *p1 = zen_path_join(dir, "tokenizer.json"), *p2 = zen_path_join(dir, "tokenizer_config.json");
    int rc = text && cfg_text && p1 && p2 ? zen_write_text_file(p1, text) : ZEN_ERR_INTERNAL;
    if (!rc) rc = zen_write_text_file(p2, cfg_text);
    free(text);
    free(cfg_text);
    free(p1);
    free(p2);
    return rc;
}
