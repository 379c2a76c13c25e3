#!/usr/bin/env python3
"""tests/reference/test_arm64_grad.py: the arm64 build of zen (scripts/cross_arm64),
run under qemu-aarch64, against the float64 PyTorch reference computed here on
x86-64 in the same run: `zen grad` on tiny models (GQA 4:1 with a tied head and
rank 8 on all seven targets; GQA 3:1, untied, bf16 weights, rsLoRA and rank 3
on a subset; documents) must give the loss and every LoRA gradient within
harness.fp32_bound, as the x86-64 build must. The x86-64 build runs the
same cases beside it, and the two are printed side by side."""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from zen_files import (make_config, read_adapter, read_batch, read_model_dir, read_safetensors,  # noqa: E402
                       write_adapter, write_model, write_tokens)
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def grad(cmd_prefix, model, adapter, data, T, B, out):
    cmd = cmd_prefix + ["grad", "--model", model, "--adapter", adapter, "--data", data, "--seq-len", str(T),
                        "--batch", str(B), "--dtype", "f32", "--out", out]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    harness.check(f"{' '.join(cmd_prefix)} grad runs", p.returncode == 0, p.stderr.strip()[-300:])
    return read_safetensors(out) if p.returncode == 0 else ({}, {})


def main():
    ap_zen = sys.argv.index("--zen-arm64")
    zen_arm64 = sys.argv.pop(ap_zen + 1)
    sys.argv.pop(ap_zen)
    zen, work, w = harness.setup()
    rng = np.random.default_rng(7)
    cases = []
    cfg = make_config(hidden=32, inter=48, layers=2, heads=4, kv_heads=1, head_dim=16, vocab=64, tied=True)
    write_model(w("m1"), cfg, rng, "F32")
    write_adapter(w("a1"), cfg, r=8, alpha=16, targets=ALL, rng=rng)
    toks = rng.integers(0, 64, 40)
    write_tokens(w("d1.h5"), toks, 64, loss_mask=rng.integers(0, 2, len(toks)))
    cases.append(("gqa4:1-tied-r8-all7", w("m1"), w("a1"), w("d1.h5"), 9, 2))
    cfg = make_config(hidden=48, inter=40, layers=2, heads=6, kv_heads=2, head_dim=12, vocab=50, tied=False)
    write_model(w("m2"), cfg, rng, "BF16")
    write_adapter(w("a2"), cfg, r=3, alpha=6, targets=["q_proj", "v_proj", "down_proj"], rng=rng, rslora=True)
    n = 60
    write_tokens(w("d2.h5"), rng.integers(0, 50, n), 50, loss_mask=rng.integers(0, 2, n) | (np.arange(n) % 4 == 0),
                 doc_offsets=[0, 5, 6, 20, 33, 47, n])
    cases.append(("gqa3:1-untied-bf16-rslora-docs", w("m2"), w("a2"), w("d2.h5"), 14, 3))

    for name, model, adapter, data, T, B in cases:
        cfg_, weights = read_model_dir(model)
        acfg, adapter_w = read_adapter(adapter)
        inputs, targets, mask, docs = read_batch(data, T, B)
        ref_loss, ref_grads = Qwen3LoraReference(cfg_, weights, acfg, adapter_w).loss_and_grads(inputs, targets,
                                                                                              mask, docs)
        for arch, prefix in (("arm64 (qemu)", ["qemu-aarch64", zen_arm64]), ("x86-64", [zen])):
            grads, meta = grad(prefix, model, adapter, data, T, B, w(f"{name}.{arch.split()[0]}.safetensors"))
            harness.check_against_reference(f"{name}: {arch} loss and LoRA gradients against the float64 reference",
                                            float(meta.get("loss", "nan")), ref_loss, grads, ref_grads, cfg_, T, B * T)
    harness.finish()


if __name__ == "__main__":
    main()
