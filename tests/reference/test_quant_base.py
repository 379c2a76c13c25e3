#!/usr/bin/env python3
"""tests/reference/test_quant_base.py: `zen grad --base-quant nf4|q4_0|q8_0`
(QLoRA: the seven projections of every layer quantised at load) against the
float64 PyTorch reference run on the same dequantised weights.

The dequantised weights come from code independent of zen's:
- q8_0 and q4_0: llama.cpp's own quantize_row_*_ref and dequantize_row_* (the
  libggml-base.so of the node-llama-cpp package the tests install, by ctypes);
- nf4: this file's NF4 (bitsandbytes' code table, blocks of 64 along a row,
  an fp32 absmax, the code whose interval between midpoints holds x/absmax).
Checked, on GQA and MHA models with a non-zero adapter on all seven targets:
- f32 compute: loss and every LoRA gradient within harness.fp32_bound;
- the quantisation matters: the loss differs from the unquantised model's by
  more than that bound;
- bf16 compute (where the CPU has native bf16): loss within 1e-2, gradients
  at cosine >= 0.999;
- with --zen-emu, the CUDA backend's dequantisers on the emulator (tests/emu):
  f32 within the same bound, bf16 as above;
- a projection whose rows are not whole blocks stays as stored, and zen says so;
- the memory plan of zen-nano-4b at seq 2048 on CUDA with nf4 and q4_0 is at
  most 5.5 GiB, and counts the quantised projections.
Skipped (exit 77) without node-llama-cpp's libraries (scripts/test installs them)."""
import ctypes
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402
from zen_files import (MODULES, make_config, read_adapter, read_batch, read_model_dir, read_safetensors,  # noqa: E402
                       write_adapter, write_dora_adapter, write_model, write_tokens)

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "llama", "node_modules",
                   "@node-llama-cpp", "linux-x64", "bins", "linux-x64", "libggml-base.so")
ALL = list(MODULES)
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=np.float32)
BLOCK = {"q8_0": 32, "q4_0": 32, "nf4": 64}


def nf4_roundtrip(w):
    """bitsandbytes' NF4 of w (rows of whole 64-element blocks), dequantised"""
    x = w.astype(np.float32).reshape(-1, 64)
    amax = np.abs(x).max(axis=1).astype(np.float32)
    inv = np.where(amax > 0, np.float32(1) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    v = (x * inv[:, None]).astype(np.float32)
    mids = ((NF4[:-1] + NF4[1:]) * np.float32(0.5)).astype(np.float32)
    q = np.searchsorted(mids, v, side="left")  # the number of midpoints below v
    return (NF4[q] * amax[:, None]).astype(np.float32).reshape(w.shape)


def ggml_roundtrip(lib, w, kind):
    """llama.cpp's quantize_row_<kind>_ref then dequantize_row_<kind> of w"""
    x = np.ascontiguousarray(w.astype(np.float32).reshape(-1))
    n = x.size
    blocks = ctypes.create_string_buffer(n // 32 * {"q8_0": 34, "q4_0": 18}[kind])
    out = np.empty(n, dtype=np.float32)
    fp = ctypes.POINTER(ctypes.c_float)
    getattr(lib, f"quantize_row_{kind}_ref")(x.ctypes.data_as(fp), blocks, ctypes.c_int64(n))
    getattr(lib, f"dequantize_row_{kind}")(blocks, out.ctypes.data_as(fp), ctypes.c_int64(n))
    return out.reshape(w.shape)


def zen_grad(zen, model, adapter, data, T, B, out, quant, dtype="f32", device="cpu"):
    p = subprocess.run([zen, "grad", "--model", model, "--adapter", adapter, "--data", data, "--seq-len", str(T),
                        "--batch", str(B), "--out", out, "--base-quant", quant, "--dtype", dtype, "--device", device],
                       capture_output=True, text=True)
    return p


def grad_errors(path, ref_loss, ref_grads):
    """bf16: loss relative error, worst gradient relative error and smallest cosine of a zen grad file"""
    grads, meta = read_safetensors(path)
    loss_err = abs(float(meta["loss"]) - ref_loss) / abs(ref_loss)
    worst = max(np.linalg.norm(grads[k] - g) / np.linalg.norm(g) for k, g in ref_grads.items())
    cos = min(float(np.dot(grads[k].ravel(), g.ravel()) / (np.linalg.norm(grads[k]) * np.linalg.norm(g)))
              for k, g in ref_grads.items())
    return loss_err, worst, cos


def main():
    zen, work, w = harness.setup()
    emu = harness.zen_emu
    if not os.path.exists(LIB):
        print(f"skipped: {LIB} not found (scripts/test installs node-llama-cpp)")
        sys.exit(77)
    lib = ctypes.CDLL(LIB)
    rng = np.random.default_rng(77)
    cases = [  # name, config, weight dtype
        ("gqa2:1-tied-bf16", make_config(hidden=64, inter=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=64,
                                         tied=True), "BF16"),
        ("mha-untied-f32-ffn96", make_config(hidden=64, inter=96, layers=2, heads=2, kv_heads=2, head_dim=32,
                                             vocab=50, tied=False), "F32"),
    ]
    T, B = 12, 2
    bf16_native = None
    for name, cfg, wdtype in cases:
        mdir, adir, data = w(name), w(name + "-adapter"), w(name + ".h5")
        write_model(mdir, cfg, rng, wdtype)
        write_adapter(adir, cfg, r=4, alpha=8, targets=ALL, rng=rng)
        ddir = w(name + "-dora")
        write_dora_adapter(ddir, cfg, read_model_dir(mdir)[1], r=4, alpha=8, targets=ALL, rng=rng)
        toks = rng.integers(0, cfg["vocab_size"], B * T + 1)
        write_tokens(data, toks, cfg["vocab_size"], loss_mask=rng.integers(0, 2, len(toks)))
        mcfg, weights = read_model_dir(mdir)
        acfg, adapter = read_adapter(adir)
        inputs, targets, mask, docs = read_batch(data, T, B)
        plain_loss = Qwen3LoraReference(mcfg, weights, acfg, adapter).loss(inputs, targets, mask).item()
        for quant in ("q8_0", "q4_0", "nf4"):
            # the reference's weights: each projection quantised and dequantised by the independent code
            qweights, kept = dict(weights), []
            for k, v in weights.items():
                if not re.search(r"\.(self_attn|mlp)\.\w+_proj\.weight$", k):
                    continue
                if v.shape[1] % BLOCK[quant]:
                    kept.append(k)
                    continue
                qweights[k] = (nf4_roundtrip(v) if quant == "nf4" else ggml_roundtrip(lib, v, quant)).astype(np.float64)
            ref = Qwen3LoraReference(mcfg, qweights, acfg, adapter)
            ref_loss, ref_grads = ref.loss_and_grads(inputs, targets, mask, docs)
            # DoRA on the quantised base: n from the dequantised rows
            dcfg, dad = read_adapter(ddir)
            dref_loss, dref_grads = Qwen3LoraReference(mcfg, qweights, dcfg, dad).loss_and_grads(inputs, targets, mask,
                                                                                                  docs)
            for prog, dev in ((zen, "cpu"),) + (((emu, "cuda"),) if emu else ()):
                outd = w(f"{name}-{quant}-dora-{dev}.safetensors")
                pd = zen_grad(prog, mdir, ddir, data, T, B, outd, quant, "f32", dev)
                harness.check_grad_file(f"{name} {quant} DoRA {dev}{' (emulated)' if dev == 'cuda' else ''} f32: vs the "
                                        "reference", outd, dref_loss, dref_grads, mcfg, T, B * T, proc=pd)
            out = w(f"{name}-{quant}.safetensors")
            p = zen_grad(zen, mdir, adir, data, T, B, out, quant)
            if p.returncode:
                check(f"{name} {quant}: zen grad runs", False, p.stderr.strip())
                continue
            harness.check_grad_file(f"{name} {quant} f32: loss and LoRA grads vs the reference on the dequantised "
                                    "weights", out, ref_loss, ref_grads, mcfg, T, B * T)
            # the quantisation must move the loss by more than the bound, or the check above says nothing about it
            check(f"{name} {quant}: the quantisation changes the loss by more than the fp32 bound",
                  abs(ref_loss - plain_loss) > harness.fp32_bound(abs(ref_loss), harness.model_length(mcfg, T)),
                  f"({plain_loss:.6f} unquantised, {ref_loss:.6f} {quant}; bound "
                  f"{harness.fp32_bound(abs(ref_loss), harness.model_length(mcfg, T)):.1e})")
            said = re.search(r"(\d+) kept as stored", p.stderr)
            check(f"{name} {quant}: projections of partial blocks kept as stored, and said",
                  (int(said.group(1)) if said else 0) == len(kept), f"({len(kept)} kept)")
            # bf16 compute on the quantised base, where the CPU has native bf16
            if bf16_native is not False:
                out16 = w(f"{name}-{quant}-bf16.safetensors")
                p16 = zen_grad(zen, mdir, adir, data, T, B, out16, quant, "bf16")
                bf16_native = p16.returncode == 0
                if not bf16_native:
                    print(f"SKIP bf16 compute: {p16.stderr.strip()}")
                else:
                    lerr, _, cos = grad_errors(out16, ref_loss, ref_grads)
                    check(f"{name} {quant} bf16: loss within 1e-2, gradients at cosine >= 0.999",
                          lerr <= 1e-2 and cos >= 0.999, f"(loss rel {lerr:.1e}, smallest cosine {cos:.6f})")

            # the CUDA backend's dequantisers, on the emulator (tests/emu), f32 and bf16
            if emu:
                for dt in ("f32", "bf16"):
                    oute = w(f"{name}-{quant}-cuda-{dt}.safetensors")
                    pe = zen_grad(emu, mdir, adir, data, T, B, oute, quant, dt, "cuda")
                    if pe.returncode:
                        check(f"{name} {quant} CUDA (emulated) {dt}: zen grad runs", False, pe.stderr.strip())
                        continue
                    if dt == "f32":
                        harness.check_grad_file(f"{name} {quant} CUDA (emulated) f32: vs the reference", oute, ref_loss,
                                                ref_grads, mcfg, T, B * T)
                        continue
                    lerr, _, cos = grad_errors(oute, ref_loss, ref_grads)
                    check(f"{name} {quant} CUDA (emulated) bf16: vs the reference", lerr <= 1e-2 and cos >= 0.999,
                          f"(loss rel {lerr:.1e}, smallest cosine {cos:.6f})")

    # the memory plan of the 4B model on an 8 GB card
    for quant in ("nf4", "q4_0"):
        p = subprocess.run([zen, "grad", "--plan", "--preset", "zen-nano-4b", "--seq-len", "2048", "--device", "cuda",
                            "--base-quant", quant], capture_output=True, text=True)
        total = re.search(r"total\s+([0-9.]+) GiB\s+([0-9.]+) GiB", p.stdout)
        weights = re.search(r"base weights .*?([0-9.]+) GiB", p.stdout)
        check(f"plan zen-nano-4b seq 2048 cuda --base-quant {quant}: <= 5.5 GiB with recompute",
              p.returncode == 0 and total and float(total.group(2)) <= 5.5,
              f"(total {total.group(2) if total else '?'} GiB, weights {weights.group(1) if weights else '?'} GiB)")
    harness.finish()


if __name__ == "__main__":
    main()
