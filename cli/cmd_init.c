/* cli/cmd_init.c: `zen init`: a random model in Hugging Face layout from a
 * preset or a config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/tokenizer.h"
#include "../model/config.h"
#include "../model/model_init.h"
#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "cli.h"
#include "commands.h"

static zen_opt opts[] = {
    {"--preset", zen_preset_choices, "a model preset's config", NULL},
    {"--config", "FILE", "or a Hugging Face config.json", NULL},
    {"--out", "DIR", "the model directory to create (required; not an existing one)", NULL},
    {"--seed", "S", "the random weights' seed (default 0)", NULL},
    {"--dtype", "f32|f16|bf16", "the weights' type (default f32)", NULL},
    {"--shard-size", "BYTES", "shard the weights above this many bytes (default 4000000000)", NULL},
};

const zen_command zen_command_init = {
    "init", "a random model in Hugging Face layout (toy presets with a byte-level tokenizer)",
    NULL, opts, ZEN_COUNT(opts), zen_cmd_init};

int zen_cmd_init(int argc, char **argv) {
    zen_opt *o = opts;
    int n = ZEN_COUNT(opts), rc;
    if ((rc = zen_cli_parse(argc, argv, 2, o, n, "init"))) return rc;
    const char *preset = zen_cli_get(o, n, "--preset"), *config_path = zen_cli_get(o, n, "--config");
    const char *out, *dtype_name = zen_cli_get(o, n, "--dtype");
    long long seed, shard;
    if ((rc = zen_cli_require(o, n, "--out", "init", &out)) ||
        (rc = zen_cli_int(o, n, "--seed", 0, 0, (1LL << 62), &seed)) ||
        (rc = zen_cli_int(o, n, "--shard-size", 4000000000LL, 1, (1LL << 50), &shard)))
        return rc;
    if (!preset == !config_path)
        return zen_fail(ZEN_ERR_INPUT, "give exactly one of --preset or --config");
    zen_dtype dtype = ZEN_F32;
    if (dtype_name && zen_dtype_parse_float(dtype_name, &dtype) != 0)
        return zen_fail(ZEN_ERR_INPUT, "option --dtype: '%s' is not f32, f16 or bf16", dtype_name);
    char *text = NULL;
    const char *origin;
    if (preset) {
        const char *json = zen_preset_json(preset);
        if (!json)
            return zen_fail(ZEN_ERR_INPUT, "option --preset: '%s' is unknown (expected %s)", preset,
                            zen_preset_names());
        text = strdup(json);
        origin = preset;
    } else {
        if ((rc = zen_read_text_file(config_path, &text))) return rc;
        origin = config_path;
    }
    zen_config cfg;
    char *partial = NULL;
    rc = zen_config_parse(&cfg, text, origin);
    /* built under OUT.partial and renamed when complete: a failure leaves nothing */
    if (!rc) rc = zen_atomic_dir_begin(out, &partial);
    if (!rc) rc = zen_model_write_random(partial, text, &cfg, dtype, (uint64_t)seed, (uint64_t)shard);
    /* toy vocabularies get a byte-level tokenizer; Zen-nano's own is Qwen3's (copy its files beside the weights) */
    int byte_tokenizer = !rc && cfg.vocab >= 256 && cfg.vocab < 151936;
    if (byte_tokenizer) rc = zen_write_byte_tokenizer(partial, cfg.vocab);
    rc = zen_atomic_dir_end(rc, &partial, out);
    if (!rc)
        printf("wrote %s: %lld parameters, %s%s\n", out, (long long)zen_config_param_count(&cfg),
               zen_dtype_name(dtype), byte_tokenizer ? ", byte-level tokenizer" : "");
    free(text);
    return rc;
}
