#!/usr/bin/env python3
"""tests/reference/test_dora.py: DoRA against the float64 reference written
from PEFT's lora/dora.py (qwen3_lora_ref.py), and DoRA's files.

1. `zen grad` with a PEFT DoRA adapter (use_dora, lora_magnitude_vector
   [out]; B != 0 and m away from the norms, so every term matters): loss and
   every gradient, m's included, within harness.fp32_bound in f32 compute, on
   f32, bf16 and f16 bases, GQA tied and untied, rsLoRA, a subset of
   targets, documents; --recompute bit-identical; bf16 compute at cosine
   >= 0.999 where the CPU has it; the CUDA backend under the emulator (f32
   within the same bound, bf16 at cosine >= 0.999). With LoRA dropout (zen's own
   masks, tests/reference/zen_dropout.py): LoRA, DoRA as PEFT trains it
   (the (m/n - 1) term on the dropped-out input) and --dora-clean-base.
   Quantised bases are in test_quant_base.py and test_gguf_base.py.
2. `zen train` with lora.dora (and dropout): the magnitudes start as
   ||W|| per row (the saved adapter at step 0 of a run with lr 0), the loss
   falls, resume is bit-exact, and the adapter is PEFT's layout (use_dora
   true, the magnitude keys and shapes).
3. Exports: peft as trained; mlx-lm's layout; gguf-lora refused in one line;
   merged SafeTensors and GGUF (f32, q8_0, q4_k_m) evaluate as the adapter
   unmerged; zen eval with the adapter equals the reference; zen generate's
   greedy tokens unmerged equal the merged model's."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import zen_dropout  # noqa: E402
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402
from zen_files import (MODULES, make_config, proj_dims, read_adapter, read_batch, read_model_dir,  # noqa: E402
                       read_safetensors, write_adapter, write_dora_adapter, write_model, write_tokens)

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def check_grad(zen, w, name, model, adapter, data, T, B, docs=True):
    base = [zen, "grad", "--model", model, "--adapter", adapter, "--data", data, "--seq-len", str(T), "--batch", str(B)]
    p = run(base + ["--dtype", "f32", "--out", w(name + ".st")])
    q = run(base + ["--dtype", "f32", "--recompute", "--out", w(name + "-rec.st")])
    if p.returncode or q.returncode:
        harness.check(f"{name}: zen grad", False, (p.stderr + q.stderr).strip())
        return
    grads, meta = read_safetensors(w(name + ".st"))
    rec, _ = read_safetensors(w(name + "-rec.st"))
    cfg, weights = read_model_dir(model)
    acfg, ad = read_adapter(adapter)
    ref = Qwen3LoraReference(cfg, weights, acfg, ad)
    inputs, targets, mask, dd = read_batch(data, T, B, doc_mask=docs)
    loss, ref_grads = ref.loss_and_grads(inputs, targets, mask, dd)
    same = set(grads) == set(ref_grads) and all(np.array_equal(grads[k], rec[k]) for k in grads)
    mags = sum("lora_magnitude_vector" in k for k in grads)
    harness.check_against_reference(f"{name}: loss and gradients (m's: {mags} tensors) against the reference",
                                    float(meta["loss"]), loss, grads, ref_grads, cfg, T, B * T,
                                    extra_ok=same and mags > 0,
                                    extra=f"recompute identical: {same}")
    p = run(base[:2] + ["--dtype", "bf16"] + base[2:] + ["--out", w(name + "-bf16.st")])
    if p.returncode == 2 and "native bf16" in p.stderr:
        print(f"SKIP bf16: {p.stderr.strip()}")
    else:
        g16, _ = read_safetensors(w(name + "-bf16.st"))
        a = np.concatenate([g16[k].ravel() for k in sorted(ref_grads)])
        b = np.concatenate([ref_grads[k].ravel() for k in sorted(ref_grads)])
        cos = float(a @ b / np.sqrt((a @ a) * (b @ b)))
        harness.check(f"{name}: bf16 compute", p.returncode == 0 and cos >= 0.999, f"cosine {cos:.6f}")
    if harness.zen_emu:
        p = run([harness.zen_emu] + base[1:] + ["--dtype", "f32", "--device", "cuda", "--out", w(name + "-cuda.st")])
        gc, _ = read_safetensors(w(name + "-cuda.st")) if not p.returncode else ({}, {})
        ok, text = harness.grads_close(f"{name}: CUDA (emulated) f32: gradients", gc, ref_grads,
                                       harness.model_length(cfg, T, B * T))
        harness.check(f"{name}: CUDA (emulated) f32", ok, f"{text} {p.stderr.strip()[-200:] if p.returncode else ''}")
        p = run([harness.zen_emu] + base[1:] + ["--dtype", "bf16", "--device", "cuda", "--out", w(name + "-cuda16.st")])
        gc, _ = read_safetensors(w(name + "-cuda16.st")) if not p.returncode else ({}, {})
        a = np.concatenate([gc[k].ravel() for k in sorted(ref_grads)]) if gc else np.zeros(1)
        b = np.concatenate([ref_grads[k].ravel() for k in sorted(ref_grads)])
        cos = float(a @ b / np.sqrt((a @ a) * (b @ b))) if gc else 0.0
        harness.check(f"{name}: CUDA (emulated) bf16", cos >= 0.999, f"cosine {cos:.6f} {p.stderr.strip()[-150:]}")


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(27)
    cases = [("f32-gqa2:1-tied", make_config(hidden=32, inter=48, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=64,
                                             tied=True), "F32", ALL, False),
             ("bf16-gqa3:1-untied-rslora-subset",
              make_config(hidden=48, inter=40, layers=2, heads=6, kv_heads=2, head_dim=12, vocab=50, tied=False), "BF16",
              ["q_proj", "v_proj", "o_proj", "down_proj"], True),
             ("f16-mha-untied", make_config(hidden=16, inter=24, layers=2, heads=2, kv_heads=2, head_dim=8, vocab=40,
                                            tied=False), "F16", ["k_proj", "o_proj", "up_proj", "down_proj"], False)]
    for name, cfg, dtype, targets, rslora in cases:
        write_model(w("m-" + name), cfg, rng, dtype)
        _, weights = read_model_dir(w("m-" + name))
        write_dora_adapter(w("a-" + name), cfg, weights, r=4, alpha=8, targets=targets, rng=rng, rslora=rslora)
        V = cfg["vocab_size"]
        lengths = [5, 9, 3, 11, 7]
        n = sum(lengths)
        write_tokens(w(f"d-{name}.h5"), rng.integers(0, V, n), V, loss_mask=rng.integers(0, 2, n) | 1,
                     doc_offsets=np.concatenate([[0], np.cumsum(lengths)]))
        check_grad(zen, w, name, w("m-" + name), w("a-" + name), w(f"d-{name}.h5"), 8, 3)

    # 1b. LoRA dropout with zen's masks (zen_dropout.py), LoRA and DoRA (PEFT: the (g - 1) term on the dropped input)
    name, cfg = cases[0][0], cases[0][1]
    _, weights = read_model_dir(w("m-" + name))
    V = cfg["vocab_size"]
    write_tokens(w("d-drop.h5"), rng.integers(0, V, 3 * 8 + 1), V)  # every row carries loss: the rows as laid out
    write_adapter(w("a-lora"), cfg, r=4, alpha=8, targets=ALL, rng=rng, b_scale=0.2)
    for kind, adapter, extra in (("LoRA", w("a-lora"), []), ("DoRA", w("a-" + name), []),
                                 ("DoRA clean base", w("a-" + name), ["--dora-clean-base"])):
        out = w(f"drop-{kind.replace(' ', '-')}.st")
        p = run([zen, "grad", "--model", w("m-" + name), "--adapter", adapter, "--data", w("d-drop.h5"), "--seq-len",
                 "8", "--batch", "3", "--dtype", "f32", "--dropout", "0.3", "--dropout-seed", "12345", "--out", out] +
                extra)
        if p.returncode:
            harness.check(f"{kind} with dropout: zen grad", False, p.stderr.strip())
            continue
        grads, meta = read_safetensors(out)
        acfg, ad = read_adapter(adapter)
        ref = Qwen3LoraReference(cfg, weights, acfg, ad)
        ref.dora_clean_base = bool(extra)
        ref.masks = lambda l, t, shape: zen_dropout.mask(zen_dropout.projection_seed(12345, l, ALL.index(t)), 0.3,
                                                         int(np.prod(shape))).reshape(shape)
        inputs, targets, mask, _ = read_batch(w("d-drop.h5"), 8, 3)
        loss, rg = ref.loss_and_grads(inputs, targets, mask)
        plain = Qwen3LoraReference(cfg, weights, acfg, ad).loss(inputs, targets, mask).item()
        harness.check_against_reference(f"{kind} with dropout 0.3 (zen's masks): loss and gradients against the "
                                        "reference", float(meta["loss"]), loss, grads, rg, cfg, 8, 3 * 8,
                                        extra_ok=abs(plain - loss) > 1e-4 * loss,
                                        extra=f"without dropout the loss is {plain:.4f}, with {loss:.4f}")
        if harness.zen_emu:
            pe = run([harness.zen_emu, "grad", "--model", w("m-" + name), "--adapter", adapter, "--data", w("d-drop.h5"),
                      "--seq-len", "8", "--batch", "3", "--dtype", "f32", "--dropout", "0.3", "--dropout-seed", "12345",
                      "--device", "cuda", "--out", out + ".cuda"] + extra)
            ge, _ = read_safetensors(out + ".cuda") if not pe.returncode else ({}, {})
            ok, text = harness.grads_close(f"{kind} with dropout: CUDA (emulated) f32: gradients", ge, rg,
                                           harness.model_length(cfg, 8, 3 * 8))
            harness.check(f"{kind} with dropout: CUDA (emulated) f32", ok,
                          f"{text} {pe.stderr.strip()[-150:] if pe.returncode else ''}")

    # 2. training: the magnitudes start as ||W||, the loss falls, resume, PEFT's layout
    p = run([zen, "init", "--preset", "tiny", "--seed", "4", "--out", w("tiny")])
    toks = np.tile(np.arange(40) % 23, 60)
    write_tokens(w("train.h5"), toks, 256)
    recipe = {"seq_len": 32, "batch_size": 2, "max_steps": 16, "lr": 5e-3, "save_every": 8, "dtype": "f32",
              "lora": {"r": 4, "dora": True, "dropout": 0.1}}
    with open(w("dora.json"), "w") as f:
        json.dump(recipe, f)
    base = [zen, "train", w("dora.json"), "--model", w("tiny"), "--data", w("train.h5")]
    p0 = run(base + ["--out", w("lr0"), "--set", "lr=0", "--set", "max_steps=1"])
    _, tw = read_model_dir(w("tiny"))
    acfg, ad = read_adapter(w("lr0")) if not p0.returncode else ({}, {})
    err, widest = 0.0, 1
    for l in range(2):
        for t in ALL:
            m = ad.get(f"base_model.model.model.layers.{l}.{MODULES[t]}.{t}.lora_magnitude_vector")
            wt = tw[f"model.layers.{l}.{MODULES[t]}.{t}.weight"]
            widest = max(widest, wt.shape[1])
            err = max(err, 1.0 if m is None else float(np.max(np.abs(m - np.linalg.norm(wt, axis=1)) /
                                                                np.linalg.norm(wt, axis=1))))
    ok, text = harness.fp32_close("train: a fresh DoRA adapter's magnitudes are ||W|| per row", err, 1.0, widest)
    harness.check("train: a fresh DoRA adapter's magnitudes are ||W|| per row (relative to each norm); use_dora true",
                  p0.returncode == 0 and acfg.get("use_dora") is True and ok, f"{text} {p0.stderr[-200:]}")
    p = run(base + ["--out", w("run")])
    losses = [json.loads(l)["loss"] for l in open(w("run", "metrics.jsonl"))] if not p.returncode else []
    harness.check("train: the loss falls", losses and losses[-1] < 0.8 * losses[0],
                  f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else p.stderr.strip())
    harness.check_resume("train: resumed from checkpoint-8, bit-identical adapter", base, w("run"), 16)
    acfg, ad = read_adapter(w("run"))
    shapes = all(ad[f"base_model.model.model.layers.{l}.{MODULES[t]}.{t}.lora_magnitude_vector"].shape ==
                 (proj_dims(json.load(open(w("tiny", "config.json"))), t)[1],) for l in range(2) for t in ALL)
    harness.check("train: the adapter in PEFT's DoRA layout (keys, [out] shapes)", shapes)
    check_exports(zen, w, acfg, ad)
    harness.finish()


def check_exports(zen, w, acfg, ad):
    """the trained DoRA adapter's exports: peft as trained; mlx-lm's layout
    (lora_a = A^T, lora_b = B^T, m, fine_tune_type dora); gguf-lora refused in
    one line; merged safetensors and GGUF (f32, q8_0, q4_k_m) equal to the
    adapter applied unmerged (zen eval, and the reference); zen generate's
    greedy tokens unmerged = merged"""
    from zen_files import read_safetensors as rs
    ex = [zen, "export", "--model", w("tiny"), "--adapter", w("run")]
    p = run(ex + ["--format", "peft", "--out", w("x-peft")])
    pcfg, pad = read_adapter(w("x-peft")) if not p.returncode else ({}, {})
    harness.check("export peft: use_dora and every tensor as trained", pcfg.get("use_dora") is True and
                  set(pad) == set(ad) and all(np.array_equal(pad[k], ad[k]) for k in ad), p.stderr.strip())
    p = run(ex + ["--format", "mlx", "--out", w("x-mlx")])
    ok = p.returncode == 0
    if ok:
        mlx, _ = rs(w("x-mlx", "adapters.safetensors"))
        mcfg = json.load(open(w("x-mlx", "adapter_config.json")))
        ok = mcfg["fine_tune_type"] == "dora" and abs(mcfg["lora_parameters"]["scale"] - acfg["lora_alpha"] / acfg["r"]) < 1e-6
        for l in range(2):
            for t in ALL:
                k, pk = f"model.layers.{l}.{MODULES[t]}.{t}", f"base_model.model.model.layers.{l}.{MODULES[t]}.{t}"
                ok = ok and np.array_equal(mlx[k + ".lora_a"].T, ad[pk + ".lora_A.weight"]) and \
                    np.array_equal(mlx[k + ".lora_b"].T, ad[pk + ".lora_B.weight"]) and \
                    np.array_equal(mlx[k + ".m"], ad[pk + ".lora_magnitude_vector"])
    harness.check("export mlx: fine_tune_type dora, lora_a = A^T, lora_b = B^T, m", ok, p.stderr.strip())
    p = run(ex + ["--format", "gguf-lora", "--out", w("x.gguf")])
    harness.check("export gguf-lora of a DoRA adapter: one line naming the merged GGUF, exit 2",
                  p.returncode == 2 and "--format gguf" in p.stderr and len(p.stderr.strip().splitlines()) == 1 and
                  not os.path.exists(w("x.gguf")), p.stderr.strip())
    write_tokens(w("eval.h5"), np.random.default_rng(5).integers(0, 256, 2 * 32 + 1), 256)  # two sequences
    ev = ["--data", w("eval.h5"), "--seq-len", "32", "--batch", "2", "--dtype", "f32"]
    unmerged = run([zen, "eval", "--model", w("tiny"), "--adapter", w("run")] + ev)
    lu = float(unmerged.stdout.split()[1]) if not unmerged.returncode else float("nan")
    cfg, weights = read_model_dir(w("tiny"))
    inputs, targets, mask, _ = read_batch(w("eval.h5"), 32, 2)
    ref = Qwen3LoraReference(cfg, weights, acfg, ad).loss(inputs, targets, mask).item()
    # f32 merges against the unmerged adapter: two fp32 computations of the loss; quantised ones within their rounding
    cfg, weights = read_model_dir(w("tiny"))
    f32_tol = harness.fp32_bound(abs(lu), harness.model_length(cfg, 32), results=2) / abs(lu)
    for fmt, dtype, tol in (("safetensors", "f32", f32_tol), ("gguf", "f32", f32_tol), ("gguf", "q8_0", 2e-2),
                            ("gguf", "q4_k_m", 1e-1)):
        out = w(f"x-merged-{dtype}" + (".gguf" if fmt == "gguf" else ""))
        p = run(ex + ["--format", fmt, "--dtype", dtype, "--out", out])
        q = run([zen, "eval", "--model", out] + ev) if not p.returncode else p
        lm = float(q.stdout.split()[1]) if not q.returncode else float("nan")
        if dtype == "f32":
            harness.fp32_close(f"merged {fmt} {dtype}: eval loss = the adapter unmerged", abs(lm - lu), abs(lu),
                               harness.model_length(cfg, 32), results=2)  # logged
        harness.check(f"merged {fmt} {dtype}: eval loss = the adapter unmerged", abs(lm - lu) <= tol * abs(lu),
                      f"merged {lm:.6f}, unmerged {lu:.6f} {q.stderr.strip()[-200:] if q.returncode else ''}")
    harness.check_fp32("zen eval with the DoRA adapter = the reference", abs(lu - ref), abs(ref),
                       harness.model_length(cfg, 32),
                       what=f"zen {lu:.7f}, reference {ref:.7f}")
    gen = ["--prompt-ids", "1,2,3,4,5", "--max-new-tokens", "16", "--temperature", "0", "--ids", "--dtype", "f32"]
    a = run([zen, "generate", "--model", w("tiny"), "--adapter", w("run")] + gen)
    b = run([zen, "generate", "--model", w("x-merged-f32")] + gen)
    harness.check("generate: greedy tokens with the DoRA adapter unmerged = the merged model",
                  a.returncode == 0 and a.stdout == b.stdout and a.stdout.strip() != "", f"{a.stdout.strip()[:80]} "
                  f"{a.stderr.strip()[-200:] if a.returncode else ''}")


if __name__ == "__main__":
    main()
