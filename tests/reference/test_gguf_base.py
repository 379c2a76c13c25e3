#!/usr/bin/env python3
"""tests/reference/test_gguf_base.py: a llama.cpp GGUF as the base model
(`zen grad|train|eval|export --model FILE.gguf`).

The bases are made by llama.cpp itself: zen exports a tiny model as an f32
GGUF, and llama_model_quantize (node-llama-cpp's libllama, by ctypes) makes
q8_0, q4_0, q4_k_m, q5_k_m and q6_k files of it. Then:
- zen grad (f32) on each file against the float64 reference on the file's
  tensors dequantised by llama.cpp's own dequantize_row_* (libggml-base by
  ctypes): loss and every LoRA gradient within harness.fp32_bound; the f32 file
  gives exactly the loss of the model directory it came from;
- zen train runs a few steps on the q4_k_m file; zen eval of the adapter on
  it equals the reference's loss on the dequantised base + adapter;
- the adapter exports as gguf-lora for that very file: llama.cpp loads the
  base plus zen's LoRA, and its next-token probabilities follow the
  reference (dequantised base + LoRA) within what llama.cpp's own 8-bit
  quantisation of the activations (its Q8_K / Q8_0 dot products) allows:
  much closer than the LoRA's own effect;
- the merged export from the quantised base warns that it merges onto the
  quantised weights;
- bad files (another architecture, a missing file) are one line and exit 2;
- with --zen-emu, every quantised file on the emulated CUDA backend against
  the reference within that bound (its dequantisers of every block type).
Skipped (exit 77) without node-llama-cpp (scripts/test installs it)."""
import ctypes
import json
import os
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import byte_tokenizer  # noqa: E402
import harness  # noqa: E402
from harness import check, run  # noqa: E402
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402
from test_kquant import LIB_DIR, LLAMA_DIR, llama_quantize, read_gguf  # noqa: E402
from zen_files import (MODULES, make_config, read_adapter, read_batch, read_model_dir, read_safetensors,  # noqa: E402
                       write_adapter, write_dora_adapter, write_model, write_tokens)

FTYPES = {"q8_0": 7, "q4_0": 2, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
# ggml type id -> (dequantize_row_ name, elements per block, bytes per block)
DEQUANT = {2: ("q4_0", 32, 18), 6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34),
           12: ("q4_K", 256, 144), 13: ("q5_K", 256, 176), 14: ("q6_K", 256, 210)}
HF_NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
            "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
HF_PROJ = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj"}


def hf_name(name):
    """llama.cpp's tensor name -> Hugging Face's"""
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output.weight":
        return "lm_head.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    _, layer, kind, _ = name.split(".")
    return f"model.layers.{layer}.{HF_PROJ.get(kind) or HF_NORMS[kind]}.weight"


def dequantized_weights(ggml, path):
    """every tensor of a GGUF as float64 [rows, cols] by HF name, dequantised by llama.cpp's own code"""
    _, tensors = read_gguf(path)
    out, types = {}, {}
    fp = ctypes.POINTER(ctypes.c_float)
    for name, (t, dims, raw) in tensors.items():
        n = int(np.prod(dims))
        if t == 0:
            v = np.frombuffer(raw, dtype=np.float32).copy()
        elif t == 1:
            v = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        else:
            fn = getattr(ggml, f"dequantize_row_{DEQUANT[t][0]}")
            v = np.empty(n, dtype=np.float32)
            fn(ctypes.c_char_p(bytes(raw)), v.ctypes.data_as(fp), ctypes.c_int64(n))
        shape = tuple(reversed(dims)) if len(dims) == 2 else (dims[0],)
        out[hf_name(name)] = v.reshape(shape).astype(np.float64)
        types[name] = t
    return out, types


def probs(gguf, tokens, lora=None):
    cmd = ["node", os.path.join(LLAMA_DIR, "probs.mjs"), gguf, ",".join(map(str, tokens))]
    if lora:
        cmd += ["--lora", lora]
    return np.array(json.loads(run(cmd, cwd=LLAMA_DIR).stdout)["probs"])


def main():
    zen, work, w = harness.setup()
    emu = harness.zen_emu
    if not os.path.exists(os.path.join(LIB_DIR, "libllama.v0.4.0.so")):
        print(f"skipped: node-llama-cpp is not installed in {LLAMA_DIR} (scripts/test runs npm ci there)")
        sys.exit(77)
    ggml = ctypes.CDLL(os.path.join(LIB_DIR, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    rng = np.random.default_rng(9)
    cfg = make_config(hidden=256, inter=512, layers=2, heads=4, kv_heads=2, head_dim=64, vocab=512, tied=True)
    write_model(w("model"), cfg, rng, std=0.05, embed_std=0.05, head_std=0.05)
    byte_tokenizer.write(w("model"))
    write_adapter(w("adapter"), cfg, r=4, alpha=8, targets=list(MODULES), rng=rng, b_scale=0.1)
    write_dora_adapter(w("dora"), cfg, read_model_dir(w("model"))[1], r=4, alpha=8, targets=list(MODULES), rng=rng)
    dcfg, dadapter = read_adapter(w("dora"))
    T, B = 16, 2
    toks = rng.integers(0, 256, 40 * T + 1)
    write_tokens(w("data.h5"), toks, 512, loss_mask=rng.integers(0, 2, len(toks)))
    f32 = w("f32.gguf")
    run([zen, "export", "--model", w("model"), "--format", "gguf", "--dtype", "f32", "--out", f32])
    files = {"f32": f32}
    for kind, ftype in FTYPES.items():
        files[kind] = w(f"{kind}.gguf")
        llama_quantize(f32, files[kind], ftype)
    mcfg, _ = read_model_dir(w("model"))
    acfg, adapter = read_adapter(w("adapter"))
    inputs, targets, mask, docs = read_batch(w("data.h5"), T, B)
    plain = run([zen, "grad", "--model", w("model"), "--adapter", w("adapter"), "--data", w("data.h5"), "--seq-len",
                 str(T), "--batch", str(B), "--dtype", "f32", "--out", w("dir.safetensors")]).stdout

    for kind, path in files.items():
        weights, types = dequantized_weights(ggml, path)
        ref = Qwen3LoraReference(mcfg, weights, acfg, adapter)
        ref_loss, ref_grads = ref.loss_and_grads(inputs, targets, mask, docs)
        out = w(f"grad-{kind}.safetensors")
        p = run([zen, "grad", "--model", path, "--adapter", w("adapter"), "--data", w("data.h5"), "--seq-len", str(T),
                 "--batch", str(B), "--dtype", "f32", "--out", out], expect=None)
        if p.returncode:
            check(f"{kind}.gguf: zen grad runs", False, p.stderr.strip())
            continue
        used = sorted({DEQUANT.get(t, ("f32" if t == 0 else "f16",))[0] for t in types.values()})
        harness.check_grad_file(f"{kind}.gguf ({', '.join(used)}): zen grad vs the reference on llama.cpp's "
                                "dequantisation", out, ref_loss, ref_grads, mcfg, T, B * T)
        if kind == "f32":
            check("f32.gguf: the same loss as the model directory it came from", p.stdout == plain, p.stdout.strip())
        # DoRA on the file: n from its dequantised rows
        dref_loss, dref_grads = Qwen3LoraReference(mcfg, weights, dcfg, dadapter).loss_and_grads(inputs, targets, mask,
                                                                                                 docs)
        for prog, dev in ((zen, "cpu"),) + (((emu, "cuda"),) if emu and kind != "f32" else ()):
            pd = run([prog, "grad", "--model", path, "--adapter", w("dora"), "--data", w("data.h5"), "--seq-len", str(T),
                      "--batch", str(B), "--dtype", "f32", "--device", dev, "--out", out + ".dora"], expect=None)
            harness.check_grad_file(f"{kind}.gguf DoRA on {dev}{' (emulated)' if dev == 'cuda' else ''}: vs the "
                                    "reference", out + ".dora", dref_loss, dref_grads, mcfg, T, B * T, proc=pd)
        if emu and kind != "f32":  # the CUDA backend's dequantisers on the emulator
            pe = run([emu, "grad", "--model", path, "--adapter", w("adapter"), "--data", w("data.h5"), "--seq-len",
                      str(T), "--batch", str(B), "--dtype", "f32", "--device", "cuda", "--out", out + ".cuda"],
                     expect=None)
            harness.check_grad_file(f"{kind}.gguf on CUDA (emulated, f32): vs the reference", out + ".cuda", ref_loss,
                                    ref_grads, mcfg, T, B * T, proc=pe)

    # train on the q4_k_m file, evaluate, export the adapter for that very file
    base = files["q4_k_m"]
    with open(w("run.json"), "w") as f:
        json.dump({"seq_len": T, "batch_size": 2, "max_steps": 8, "lr": 2e-2, "warmup_steps": 1, "log_every": 1,
                   "save_every": 0, "val_fraction": 0, "dtype": "f32", "lora": {"r": 4, "alpha": 8}}, f)
    run([zen, "train", w("run.json"), "--model", base, "--data", w("data.h5"), "--out", w("run")])
    weights, _ = dequantized_weights(ggml, base)
    acfg2, adapter2 = read_adapter(w("run"))
    ref = Qwen3LoraReference(mcfg, weights, acfg2, adapter2)
    n = (len(toks) - 1) // T
    ref_eval = ref.loss(*read_batch(w("data.h5"), T, n)).item()
    got = float(run([zen, "eval", "--model", base, "--adapter", w("run"), "--data", w("data.h5"), "--seq-len",
                     str(T), "--dtype", "f32"]).stdout.split()[1])
    harness.check_fp32("q4_k_m.gguf: zen train, then zen eval of its adapter = the reference on the dequantised base",
                       abs(got - ref_eval), abs(ref_eval), harness.model_length(mcfg, T),
                       what=f"({got:.7f} vs {ref_eval:.7f})")
    lora = w("run-lora.gguf")
    run([zen, "export", "--model", base, "--adapter", w("run"), "--format", "gguf-lora", "--out", lora])
    run([zen, "export", "--model", base, "--adapter", w("run"), "--format", "peft", "--out", w("run-peft")])
    with open(w("run-peft", "adapter_config.json")) as f:
        check("PEFT export from the GGUF base names it", json.load(f)["base_model_name_or_path"] == os.path.realpath(base))
    # given as a relative path, the GGUF base is recorded absolute, as a directory base is (PEFT reads
    # anything else as a hub id)
    run([zen, "export", "--model", os.path.relpath(base, w()), "--adapter", "run", "--format", "peft", "--out",
         "run-peft-rel"], cwd=w())
    with open(w("run-peft-rel", "adapter_config.json")) as f:
        recorded = json.load(f)["base_model_name_or_path"]
    check("a relative GGUF base is recorded by its absolute path", recorded == os.path.realpath(base), recorded)
    seq = rng.integers(0, 256, 12)
    p_lora, p_base = probs(base, seq, lora), probs(base, seq)
    import torch
    def ref_probs(adapter_weights):
        r = Qwen3LoraReference(mcfg, weights, acfg2, adapter_weights)
        return torch.softmax(r.logits(torch.as_tensor(np.array([seq])))[0], dim=-1).detach().numpy()
    p_ref = ref_probs(adapter2)
    p_ref_base = ref_probs({k: (v * 0 if "lora_B" in k else v) for k, v in adapter2.items()})
    # llama.cpp rounds the activations to 8 bits for its quantised dot products: the base alone
    # shows that error; the LoRA must add none of its own, and its effect must stand out of it
    err, err_base = np.abs(p_lora - p_ref).max(), np.abs(p_base - p_ref_base).max()
    effect = np.abs(p_ref - p_ref_base).max()
    check("llama.cpp: q4_k_m base + zen's gguf-lora follows the reference (dequantised base + LoRA)",
          err <= 1.5 * err_base + 1e-6 and effect >= 3 * err,
          f"(max |dp| {err:.1e}; base alone {err_base:.1e}; the LoRA moves them {effect:.1e})")
    p = run([zen, "export", "--model", base, "--adapter", w("run"), "--format", "gguf", "--dtype", "f16", "--out",
             w("merged.gguf")])
    check("merged export from a quantised base warns it merges onto the quantised weights",
          "block-quantised weights" in p.stderr, p.stderr.strip()[:120])
    # merged as SafeTensors (f32): a Hugging Face directory whose loss is the base + adapter's
    run([zen, "export", "--model", base, "--adapter", w("run"), "--format", "safetensors", "--dtype", "f32", "--out",
         w("merged-st")])
    merged = float(run([zen, "eval", "--model", w("merged-st"), "--data", w("data.h5"), "--seq-len", str(T),
                        "--dtype", "f32"]).stdout.split()[1])
    harness.check_fp32("q4_k_m.gguf merged into SafeTensors (f32, config.json from the GGUF keys): its loss is base "
                       "+ adapter's", abs(merged - got), abs(got), harness.model_length(mcfg, T), results=2,
                       what=f"({merged:.7f} vs {got:.7f})")

    # bad files: one line, exit 2
    raw = bytearray(open(f32, "rb").read())
    i = raw.find(b"qwen3")
    bad = bytearray(raw)
    bad[i:i + 5] = b"llama"
    open(w("llama-arch.gguf"), "wb").write(bad)
    for label, path, want in [("another architecture", w("llama-arch.gguf"), "general.architecture"),
                              ("a missing file", w("none.gguf"), "none.gguf")]:
        p = run([zen, "grad", "--model", path, "--data", w("data.h5"), "--seq-len", str(T), "--out", w("x.st")],
                expect=None)
        lines = p.stderr.strip().splitlines()
        check(f"GGUF base, {label}: one line, exit 2", p.returncode == 2 and len(lines) == 1 and want in lines[0],
              lines[:1])
    harness.finish()


if __name__ == "__main__":
    main()
