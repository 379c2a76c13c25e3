/* train/main.c: the zen command: dispatches subcommands and is the only place
 * that turns an error into a message on stderr and an exit code. */
#include <stdio.h>
#include <string.h>

#include "../kernels/kernels.h"
#include "../util/error.h"
#include "commands.h"
#include "dist.h"

static void usage(FILE *out) {
    fprintf(out,
            "zen: LoRA fine-tuning for Zen (Qwen3-architecture) models\n"
            "\n"
            "usage:\n"
            "  zen init  --preset tiny|small|zen-nano-4b | --config FILE --out DIR [--seed S]\n"
            "            [--dtype f32|f16|bf16] [--shard-size BYTES]\n"
            "  zen grad  --model DIR [--adapter DIR] --data FILE.h5 --seq-len T --batch B\n"
            "            --out FILE.safetensors [--rank 8] [--alpha 16] [--targets all] [--rslora]\n"
            "            [--seed S] [--recompute] [--device cpu]\n"
            "  zen grad  --plan (--model DIR | --preset NAME [--dtype bf16]) --seq-len T [--batch B]\n"
            "  zen train CONFIG.json [--model DIR] [--data FILE.h5] [--out DIR] [--set key=value]...\n"
            "            [--resume]\n"
            "  zen eval  --model DIR [--adapter DIR] --data FILE.h5 --seq-len T [--batch B]\n"
            "  zen generate --model DIR|FILE.gguf [--adapter DIR] (--prompt TEXT | --prompt-ids a,b,c)\n"
            "            [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--seed S]\n"
            "            [--ignore-eos] [--ids] [--dtype auto|f32|bf16]   (CPU, KV cache, adapter unmerged)\n"
            "  zen export --model DIR [--adapter DIR] --format safetensors|gguf|peft|gguf-lora|mlx\n"
            "            --out PATH [--dtype f32|f16|bf16|q8_0|q4_0|q4_k_m|q4_k_s|q5_k_m|q5_k_s|q6_k] [--shard-size BYTES] [--no-tokenizer]\n"
            "  zen info  FILE|DIR  (SafeTensors, GGUF, HDF5)   |   zen info --cpu  (kernel levels)\n"
            "  zen data  --tokenizer DIR --in FILE --format text|jsonl|alpaca|messages --out FILE.h5\n"
            "  zen data  --decode FILE.h5 --tokenizer DIR [--range a:b]\n"
            "\n"
            "exit codes: 0 success, 1 internal failure, 2 bad input or usage,\n"
            "            130 / 143 zen train stopped by SIGINT / SIGTERM after saving a checkpoint\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "zen: missing command (see zen --help)\n");
        return 2;
    }
    const char *cmd = argv[1];
    /* the CPU kernel variant and ZEN_CPU_ISA's cap, before any library runs
     * (it may start zen again, with OpenBLAS capped too) */
    if (zk_cpu_isa_setup(argv)) {
        fprintf(stderr, "zen %s: error: %s\n", cmd, zen_last_error());
        return ZEN_ERR_INPUT;
    }
    int rc = zen_dist_init(&argc, &argv);
    if (rc) {
        fprintf(stderr, "zen %s: error: %s\n", cmd, zen_last_error());
        return rc;
    }
    int ranks = zen_dist_get()->size;
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return zen_dist_finish(0);
    } else if (ranks > 1 && strcmp(cmd, "train") && strcmp(cmd, "eval")) {
        /* every rank would write the same output */
        rc = zen_dist_settle(zen_fail(ZEN_ERR_INPUT, "started as %d ranks, but only zen train and zen eval run over "
                                     "several ranks; run zen %s as one process", ranks, cmd));
    } else if (!strcmp(cmd, "init")) {
        rc = zen_cmd_init(argc, argv);
    } else if (!strcmp(cmd, "grad")) {
        rc = zen_cmd_grad(argc, argv);
    } else if (!strcmp(cmd, "train")) {
        rc = zen_cmd_train(argc, argv);
    } else if (!strcmp(cmd, "eval")) {
        rc = zen_cmd_eval(argc, argv);
    } else if (!strcmp(cmd, "generate")) {
        rc = zen_cmd_generate(argc, argv);
    } else if (!strcmp(cmd, "export")) {
        rc = zen_cmd_export(argc, argv);
    } else if (!strcmp(cmd, "info")) {
        rc = zen_cmd_info(argc, argv);
    } else if (!strcmp(cmd, "data")) {
        rc = zen_cmd_data(argc, argv);
    } else {
        fprintf(stderr, "zen: unknown command '%s' (see zen --help)\n", cmd);
        return zen_dist_finish(zen_dist_settle(ZEN_ERR_INPUT)); /* every rank says the same */
    }
    /* With several ranks: each rank's outcome (a command that failed on some
     * ranks only, before a collective, ends them all here); an error they
     * all agreed on is printed once, by rank 0. */
    if (ranks > 1 && rc < 128) rc = zen_dist_settle(rc);
    int quiet = zen_dist_get()->rank > 0 && (zen_dist_error_is_shared() || rc >= 128);
    if (rc >= 128 && !quiet) /* stopped by a signal after saving (zen train): not an error */
        fprintf(stderr, "zen %s: %s\n", cmd, zen_last_error());
    else if (rc && !quiet)
        fprintf(stderr, "zen %s: error: %s\n", cmd, zen_last_error());
    return zen_dist_finish(rc);
}
