/* cli/cmd_export.c: `zen export --model DIR [--adapter DIR] --format F
 * [--dtype T] --out PATH [--shard-size BYTES] [--no-tokenizer]`. */
#include <stdio.h>

#include "../export/export.h"
#include "../util/error.h"
#include "cli.h"
#include "commands.h"

static zen_opt opts[] = {
    {"--model", "DIR|FILE.gguf", "the base model (required)", NULL},
    {"--adapter", "DIR", "the PEFT adapter to merge or convert", NULL},
    {"--format", "safetensors|gguf|peft|gguf-lora|mlx", "what to write (required)", NULL},
    {"--out", "PATH", "the directory or file to write (required; not an existing directory)", NULL},
    {"--dtype", "f32|f16|bf16|q8_0|q4_0|q4_k_m|q4_k_s|q5_k_m|q5_k_s|q6_k", "the output's type (default: the base's)",
     NULL},
    {"--shard-size", "BYTES", "safetensors: shard above this many bytes (default 4000000000)", NULL},
    {"--no-tokenizer", NULL, "gguf: write without tokenizer metadata", NULL},
};

const zen_command zen_command_export = {
    "export", "merged SafeTensors or GGUF, or the adapter as PEFT, llama.cpp LoRA or mlx-lm",
    NULL, opts, ZEN_COUNT(opts), zen_cmd_export};

int zen_cmd_export(int argc, char **argv) {
    zen_opt *o = opts;
    int n = ZEN_COUNT(opts), rc;
    if ((rc = zen_cli_parse(argc, argv, 2, o, n, "export"))) return rc;
    zen_export_opts e = {0};
    const char *format;
    long long shard;
    if ((rc = zen_cli_require(o, n, "--model", "export", &e.model_dir)) ||
        (rc = zen_cli_require(o, n, "--format", "export", &format)) ||
        (rc = zen_cli_require(o, n, "--out", "export", &e.out)) ||
        (rc = zen_cli_int(o, n, "--shard-size", 4000000000LL, 1, 1LL << 50, &shard)))
        return rc;
    if (zen_export_parse_format(format, &e.format))
        return zen_fail(ZEN_ERR_INPUT, "--format '%s' is unknown (expected safetensors, gguf, peft, gguf-lora or mlx)",
                        format);
    e.adapter_dir = zen_cli_get(o, n, "--adapter");
    e.dtype = zen_cli_get(o, n, "--dtype");
    e.shard_bytes = (uint64_t)shard;
    e.no_tokenizer = zen_cli_get(o, n, "--no-tokenizer") != NULL;
    rc = zen_export(&e);
    if (!rc) printf("wrote %s\n", e.out);
    return rc;
}
