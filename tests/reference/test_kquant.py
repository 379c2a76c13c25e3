#!/usr/bin/env python3
"""tests/reference/test_kquant.py: zen's k-quant GGUF exports against
llama.cpp's own quantizer.

For models of 10 and 12 layers (tied and untied head, a non-zero adapter
merged; one with rows that are not a multiple of 256, so the fallbacks run)
zen exports the merged model as f32 GGUF and as each of q4_k_m, q4_k_s,
q5_k_m, q5_k_s and q6_k. libllama.so from node-llama-cpp (the llama.cpp the
tests already install) quantizes zen's f32 file with llama_model_quantize
(ctypes, no importance matrix). Then, per mixture:
- every tensor has the same type in both files, and general.file_type agrees;
- at least 99.9% of quant blocks are byte-identical (the share is printed);
- llama.cpp loads zen's file; its next-token probabilities equal those of
  llama.cpp's own quantized file to 1e-6 (compared only where some block
  differs: identical tensors give identical probabilities), and lie within the format's
  rounding step of the f32 file's (the step 1/15 of a sub-block's
  range for 4-bit, 1/31 for 5-bit, 1/63 for 6-bit: the coarsest type used);
- `zen info` reads zen's file back and names the mixture's types.
And the SafeTensors export's config.json says there is no sliding window
(transformers 4.51 applies a 4096-token one otherwise)."""
import ctypes
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import byte_tokenizer  # noqa: E402
import harness  # noqa: E402
from harness import check, run  # noqa: E402
from zen_files import make_config, write_adapter, write_model, MODULES  # noqa: E402

LLAMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "llama")
LIB_DIR = os.path.join(LLAMA_DIR, "node_modules", "@node-llama-cpp", "linux-x64", "bins", "linux-x64")
MIXES = {"q4_k_m": 15, "q4_k_s": 14, "q5_k_m": 17, "q5_k_s": 16, "q6_k": 18}
STEP = {"q4_k_m": 1 / 15, "q4_k_s": 1 / 15, "q5_k_m": 1 / 31, "q5_k_s": 1 / 31, "q6_k": 1 / 63}
# ggml type id -> (name, elements per block, bytes per block)
TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24),
         8: ("Q8_0", 32, 34), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
         30: ("BF16", 1, 2)}


def read_gguf(path):
    """(metadata {key: value} for scalar keys, {tensor name: (type, dims, raw bytes)})"""
    data = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode()
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(t):
        if t in scalar:
            return take(scalar[t])
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        raise ValueError(f"{path}: GGUF value type {t}")

    assert data[:4] == b"GGUF", path
    pos = 4
    take("I")
    n_tensors, n_kv = take("Q"), take("Q")
    meta = {}
    for _ in range(n_kv):
        k = string()
        meta[k] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        nd = take("I")
        dims = [take("Q") for _ in range(nd)]
        infos.append((name, dims, take("I"), take("Q")))
    align = meta.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    tensors = {}
    for name, dims, t, off in infos:
        _, blk, bb = TYPES[t]
        n = int(np.prod(dims))
        tensors[name] = (t, dims, data[base + off:base + off + n // blk * bb])
    return meta, tensors


def llama_quantize(src, dst, ftype):
    ctypes.CDLL(os.path.join(LIB_DIR, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(os.path.join(LIB_DIR, "libllama.v0.4.0.so"), mode=ctypes.RTLD_GLOBAL)

    class Params(ctypes.Structure):  # llama_model_quantize_params (include/llama.h of that llama.cpp)
        _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int), ("output_tensor_type", ctypes.c_int),
                    ("token_embedding_type", ctypes.c_int), ("allow_requantize", ctypes.c_bool),
                    ("quantize_output_tensor", ctypes.c_bool), ("only_copy", ctypes.c_bool),
                    ("pure", ctypes.c_bool), ("keep_split", ctypes.c_bool), ("dry_run", ctypes.c_bool),
                    ("imatrix", ctypes.c_void_p), ("kv_overrides", ctypes.c_void_p),
                    ("tt_overrides", ctypes.c_void_p), ("prune_layers", ctypes.c_void_p),
                    ("max_buf_size", ctypes.c_size_t)]
    lib.llama_model_quantize_default_params.restype = Params
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(Params)]
    lib.llama_model_quantize.restype = ctypes.c_uint32
    p = lib.llama_model_quantize_default_params()
    p.ftype, p.nthread = ftype, 2
    # llama.cpp logs every tensor on stderr: keep the test output short
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            rc = lib.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({src} -> {dst}, ftype {ftype}) failed")


def llama_probs(gguf, tokens):
    cmd = ["node", os.path.join(LLAMA_DIR, "probs.mjs"), gguf, ",".join(map(str, tokens))]
    return np.array(json.loads(run(cmd, cwd=LLAMA_DIR).stdout)["probs"])


def compare(zen_file, ref_file):
    """(list of type mismatches, identical blocks, all blocks, file types)"""
    zm, zt = read_gguf(zen_file)
    rm, rt = read_gguf(ref_file)
    mismatch = [f"{n}: zen {TYPES[zt[n][0]][0]}, llama.cpp {TYPES[rt[n][0]][0] if n in rt else 'missing'}"
                for n in zt if n not in rt or zt[n][0] != rt[n][0]]
    mismatch += [f"{n}: only in llama.cpp's" for n in rt if n not in zt]
    same = total = 0
    for n, (t, _, raw) in zt.items():
        if n not in rt or rt[n][0] != t or TYPES[t][1] == 1:
            continue
        bb = TYPES[t][2]
        a = np.frombuffer(raw, np.uint8).reshape(-1, bb)
        b = np.frombuffer(rt[n][2], np.uint8).reshape(-1, bb)
        same += int((a == b).all(axis=1).sum())
        total += a.shape[0]
    return mismatch, same, total, (zm.get("general.file_type"), rm.get("general.file_type"))


def main():
    zen, work, w = harness.setup()
    if not os.path.exists(os.path.join(LIB_DIR, "libllama.v0.4.0.so")):
        raise SystemExit(f"node-llama-cpp is not installed in {LLAMA_DIR} (scripts/test runs npm ci there)")
    rng = np.random.default_rng(5)
    models = {  # every mixture on the first; the layer rules of each on the others
        "tied-12": (make_config(256, 512, 12, 4, 2, 64, 512, True), list(MIXES)),
        "untied-10": (make_config(256, 768, 10, 4, 1, 64, 512, False), ["q4_k_m", "q4_k_s", "q5_k_m"]),
        # rows of 288 and 320: not multiples of 256, so the Q5_0 / Q5_1 / Q8_0 fallbacks
        "fallback-10": (make_config(288, 320, 10, 3, 1, 96, 512, True), ["q4_k_m", "q5_k_s", "q6_k"]),
    }
    totals = {}
    for label, (cfg, mixes) in models.items():
        d = w(label)
        # small embeddings and head: next-token probabilities spread out, so quantization shows in them
        write_model(os.path.join(d, "model"), cfg, rng, std=0.05, embed_std=0.05, head_std=0.05)
        byte_tokenizer.write(os.path.join(d, "model"))
        write_adapter(os.path.join(d, "adapter"), cfg, r=8, alpha=16, targets=list(MODULES), rng=rng, b_scale=0.1)
        common = ["--model", os.path.join(d, "model"), "--adapter", os.path.join(d, "adapter"), "--format", "gguf"]
        f32 = os.path.join(d, "f32.gguf")
        run([zen, "export"] + common + ["--dtype", "f32", "--out", f32])
        tokens = rng.integers(0, 256, 24)
        p32 = llama_probs(f32, tokens)
        for mix in mixes:
            ftype = MIXES[mix]
            mine, ref = os.path.join(d, f"zen-{mix}.gguf"), os.path.join(d, f"llama-{mix}.gguf")
            run([zen, "export"] + common + ["--dtype", mix, "--out", mine])
            llama_quantize(f32, ref, ftype)
            mismatch, same, total, ftypes = compare(mine, ref)
            totals[mix] = (totals.get(mix, (0, 0))[0] + same, totals.get(mix, (0, 0))[1] + total)
            check(f"{label} {mix}: every tensor's type as llama.cpp's", not mismatch, "; ".join(mismatch[:4]))
            check(f"{label} {mix}: general.file_type {ftypes[0]}", ftypes[0] == ftypes[1] == ftype, f"{ftypes}")
            check(f"{label} {mix}: >= 99.9% of blocks byte-identical", total and same >= 0.999 * total,
                  f"({same}/{total} = {100 * same / max(total, 1):.3f}%)")
            pz = llama_probs(mine, tokens)
            # identical tensors give identical probabilities; otherwise compare with llama.cpp's own file
            err_ref = 0.0 if same == total and not mismatch else np.abs(pz - llama_probs(ref, tokens)).max()
            err_f32 = np.abs(pz - p32).max()
            check(f"{label} {mix}: llama.cpp loads zen's file; probabilities == its own quantization's",
                  err_ref <= 1e-6, f"({err_ref:.2e})")
            check(f"{label} {mix}: probabilities within 1 step of f32's", err_f32 <= STEP[mix],
                  f"({err_f32:.2e}, bound {STEP[mix]:.2e})")
        info = run([zen, "info", os.path.join(d, "zen-q4_k_m.gguf")]).stdout
        _, tensors = read_gguf(os.path.join(d, "zen-q4_k_m.gguf"))
        listed = [f"{n} {TYPES[t][0]}" for n, (t, _, _) in tensors.items()
                  if not any(l.split()[1:3] == [n, TYPES[t][0]] for l in info.splitlines() if l.strip().startswith("tensor"))]
        check(f"{label}: zen info reads q4_k_m back with every tensor's type", not listed, "; ".join(listed[:3]))
    # a model directory whose config.json lacks the sliding-window keys: the SafeTensors export adds them
    d = w("fallback-10")
    run([zen, "export", "--model", os.path.join(d, "model"), "--format", "safetensors", "--out", os.path.join(d, "st")])
    with open(os.path.join(d, "st", "config.json")) as f:
        hf = json.load(f)
    check("safetensors export: config.json says there is no sliding window", hf.get("use_sliding_window") is False
          and "sliding_window" in hf and hf["sliding_window"] is None and hf.get("max_window_layers") == 10, f"({ {k: hf.get(k) for k in ('use_sliding_window', 'sliding_window', 'max_window_layers')} })")
    for mix, (same, total) in totals.items():
        print(f"  {mix}: {same}/{total} blocks byte-identical ({100 * same / total:.4f}%)")
    harness.finish()


if __name__ == "__main__":
    main()
