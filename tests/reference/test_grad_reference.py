#!/usr/bin/env python3
"""tests/reference/test_grad_reference.py: `zen grad` against the float64
PyTorch reference on tiny configs that cover GQA 4:1, 3:1 and 1:1, tied and
untied output heads, head_dim != hidden/heads, f32/f16/bf16-stored weights,
sharded weights, non-zero adapters (B != 0) on all seven targets and on subsets,
rsLoRA, loss masks, and documents (/doc_offsets: positions restart and
attention stays inside each document; many short ones, empty ones, ones longer
than a sequence, boundaries at a sequence's first and last position; and
--no-doc-mask, which must equal the plain causal reference). Loss and every LoRA gradient must agree to a relative
error within harness.fp32_bound (the loss against its own size, every tensor
against the norm of the whole gradient, over the batch's rows) in f32 compute (pinned:
--dtype f32); --recompute must give bit-identical gradients. Where the CPU has
native bf16 matrix arithmetic, every case also runs with --dtype bf16: loss
within 1e-2 relative, every LoRA gradient at cosine >= 0.999 with the
reference, and two runs byte-identical. Prints the largest errors seen."""
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from zen_files import (make_config, read_adapter, read_batch, read_model_dir, read_safetensors,  # noqa: E402
                       write_adapter, write_model, write_tokens)
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402

BF16_LOSS_TOL, BF16_COSINE = 1e-2, 0.999
bf16 = {"native": None, "results": []}  # whether --dtype bf16 runs here (learned from the first try)
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p.stdout


def check_case(zen, work, name, model_dir, adapter_dir, data, T, B, doc_mask=True):
    out_keep = os.path.join(work, f"{name}.grads.safetensors")
    out_rec = os.path.join(work, f"{name}.grads.recompute.safetensors")
    base = [zen, "grad", "--model", model_dir, "--adapter", adapter_dir, "--data", data,
            "--seq-len", str(T), "--batch", str(B)] + ([] if doc_mask else ["--no-doc-mask"])
    stdout = run(base + ["--dtype", "f32", "--out", out_keep])
    run(base + ["--dtype", "f32", "--out", out_rec, "--recompute"])
    printed = float(stdout.split()[1])
    grads, meta = read_safetensors(out_keep)
    grads_rec, _ = read_safetensors(out_rec)

    cfg, weights = read_model_dir(model_dir)
    acfg, adapter = read_adapter(adapter_dir)
    ref = Qwen3LoraReference(cfg, weights, acfg, adapter)
    inputs, targets, mask, docs = read_batch(data, T, B, doc_mask=doc_mask)
    ref_loss, ref_grads = ref.loss_and_grads(inputs, targets, mask, docs)
    if docs is not None:  # the documents must matter, or the case checks nothing about them
        plain = Qwen3LoraReference(cfg, weights, acfg, adapter).loss(inputs, targets, mask).item()
        assert abs(plain - ref_loss) > 1e-3 * abs(ref_loss), f"{name}: documents do not change the loss"

    assert abs(printed - float(meta["loss"])) <= 1e-8 * abs(printed) + 1e-12, "printed loss != metadata loss"
    for k, g in ref_grads.items():
        assert np.linalg.norm(g) > 0, f"{name}: reference gradient {k} is zero; the case does not exercise it"
        # recompute: bit-identical, not merely close
        assert np.array_equal(grads[k], grads_rec[k]), f"{name}: --recompute changed {k}"
    harness.check_against_reference(f"{name} (f32)", float(meta["loss"]), ref_loss, grads, ref_grads, cfg, T, T * B)
    check_bf16(base, name, work, ref_loss, ref_grads)


def check_bf16(base, name, work, ref_loss, ref_grads):
    """the same case in bf16 compute, where the CPU has it: loss, cosines, and two runs byte-identical"""
    if bf16["native"] is False:
        return
    outs = [os.path.join(work, f"{name}.grads.bf16.{i}.safetensors") for i in range(2)]
    p = subprocess.run(base[:2] + ["--dtype", "bf16"] + base[2:] + ["--out", outs[0]], capture_output=True, text=True)
    if p.returncode == 2 and "native bf16" in p.stderr:
        bf16["native"] = False
        print(f"SKIP --dtype bf16 cases: {p.stderr.strip()}")
        return
    if p.returncode != 0:
        raise SystemExit(f"FAILED ({p.returncode}): zen grad --dtype bf16 on {name}\n{p.stderr}")
    bf16["native"] = True
    run(base[:2] + ["--dtype", "bf16"] + base[2:] + ["--out", outs[1]])
    grads, meta = read_safetensors(outs[0])
    loss_err = abs(float(meta["loss"]) - ref_loss) / abs(ref_loss)
    cosines = {k: float(np.dot(grads[k].ravel(), g.ravel()) / (np.linalg.norm(grads[k]) * np.linalg.norm(g)))
               for k, g in ref_grads.items()}
    low = min(cosines, key=cosines.get)
    same = open(outs[0], "rb").read() == open(outs[1], "rb").read()
    ok = loss_err <= BF16_LOSS_TOL and cosines[low] >= BF16_COSINE and same
    bf16["results"].append((name, loss_err, cosines[low], low, same, ok))


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(1234)

    # 1. GQA 4:1, tied, head_dim 16 != 32/4, f32 weights, all seven targets, loss mask, B=2
    cfg = make_config(hidden=32, inter=48, layers=2, heads=4, kv_heads=1, head_dim=16, vocab=64, tied=True)
    write_model(w("m1"), cfg, rng, "F32")
    write_adapter(w("a1"), cfg, r=4, alpha=8, targets=ALL, rng=rng)
    toks = rng.integers(0, 64, 2 * 9 + 5)
    write_tokens(w("d1.h5"), toks, 64, loss_mask=rng.integers(0, 2, len(toks)))
    check_case(zen, work, "gqa4:1-tied-f32-all7-mask", w("m1"), w("a1"), w("d1.h5"), 9, 2)

    # 2. GQA 3:1, untied, head_dim 12 != 48/6, bf16 weights, subset of targets, rsLoRA, B=3
    cfg = make_config(hidden=48, inter=40, layers=2, heads=6, kv_heads=2, head_dim=12, vocab=50, tied=False)
    write_model(w("m2"), cfg, rng, "BF16")
    write_adapter(w("a2"), cfg, r=3, alpha=6, targets=["q_proj", "v_proj", "o_proj", "down_proj"], rng=rng,
                  rslora=True)
    toks = rng.integers(0, 50, 3 * 7 + 1)
    write_tokens(w("d2.h5"), toks, 50, loss_mask=rng.integers(0, 2, len(toks)))
    check_case(zen, work, "gqa3:1-untied-bf16-subset-rslora", w("m2"), w("a2"), w("d2.h5"), 7, 3)

    # 3. f16 weights, GQA 1:1 (MHA), untied, rank 1 on two targets, no loss mask
    cfg = make_config(hidden=16, inter=24, layers=3, heads=2, kv_heads=2, head_dim=8, vocab=40, tied=False)
    write_model(w("m3"), cfg, rng, "F16")
    write_adapter(w("a3"), cfg, r=1, alpha=2, targets=["k_proj", "gate_proj"], rng=rng)
    write_tokens(w("d3.h5"), rng.integers(0, 40, 30), 40)
    check_case(zen, work, "mha-untied-f16-r1-nomask", w("m3"), w("a3"), w("d3.h5"), 12, 2)

    # 4. a `zen init` model (preset tiny, bf16, sharded into several files) with a bf16 adapter
    run([zen, "init", "--preset", "tiny", "--dtype", "bf16", "--seed", "7", "--out", w("m4"),
         "--shard-size", "40000"])
    assert os.path.exists(w("m4", "model.safetensors.index.json")), "tiny model was not sharded"
    cfg4, _ = read_model_dir(w("m4"))
    write_adapter(w("a4"), cfg4, r=8, alpha=16, targets=ALL, rng=rng, dtype="BF16", b_scale=0.5)
    toks = rng.integers(0, 256, 40)
    write_tokens(w("d4.h5"), toks, 256, loss_mask=(np.arange(40) % 3 != 0))
    check_case(zen, work, "zen-init-tiny-bf16-sharded", w("m4"), w("a4"), w("d4.h5"), 16, 2)

    # 6-10. documents. Offsets are cut from the token stream independently of
    # the sequence length; the reference derives positions and the
    # block-causal mask from them (read_batch, Qwen3LoraReference.logits).
    def offsets_of(lengths):
        return np.concatenate([[0], np.cumsum(lengths)])

    # 6. many short documents (1-5 tokens, one empty), GQA 4:1 tied f32, loss mask
    lengths = list(rng.integers(1, 6, 20))
    lengths[4] = 0
    n = int(sum(lengths))
    assert n >= 3 * 16 + 1
    write_tokens(w("d6.h5"), rng.integers(0, 64, n), 64, loss_mask=rng.integers(0, 2, n) | (np.arange(n) % 4 == 0),
                 doc_offsets=offsets_of(lengths))
    check_case(zen, work, "docs-short-gqa4:1-tied-f32", w("m1"), w("a1"), w("d6.h5"), 16, 3)

    # 7. documents longer than a sequence (16 and 11 tokens across 7-token sequences), GQA 3:1 untied bf16
    lengths = [16, 2, 11, 14]
    write_tokens(w("d7.h5"), rng.integers(0, 50, sum(lengths)), 50, doc_offsets=offsets_of(lengths))
    check_case(zen, work, "docs-longer-than-T-gqa3:1-untied-bf16", w("m2"), w("a2"), w("d7.h5"), 7, 4)

    # 8. boundaries at the first (12, 24) and the last input (11: a target across
    # sequences; 35: a one-token document at the last position), f16 MHA untied
    lengths = [5, 6, 1, 12, 11, 1, 4]
    write_tokens(w("d8.h5"), rng.integers(0, 40, sum(lengths)), 40, doc_offsets=offsets_of(lengths))
    check_case(zen, work, "docs-edge-boundaries-mha-untied-f16", w("m3"), w("a3"), w("d8.h5"), 12, 3)

    # 9. the sharded zen-init model, bf16 adapter: mixed lengths with a masked prompt per document
    lengths = [5, 17, 3, 9, 1, 8]
    n = sum(lengths)
    prompt = np.concatenate([np.arange(k) >= k // 2 for k in lengths])
    write_tokens(w("d9.h5"), rng.integers(0, 256, n), 256, loss_mask=prompt, doc_offsets=offsets_of(lengths))
    check_case(zen, work, "docs-zen-init-tiny-bf16", w("m4"), w("a4"), w("d9.h5"), 10, 4)

    # 10. --no-doc-mask: the file of case 6 read as plain causal sequences
    check_case(zen, work, "docs-ignored-by-no-doc-mask", w("m1"), w("a1"), w("d6.h5"), 16, 3,
               doc_mask=False)

    # 11. every sequence ends in masked-out targets (3 and 7 of them), as a
    # packed window ends in padding: zen does not run those rows
    n = 2 * 14 + 1
    mask = np.ones(n, np.uint8)
    mask[1 + 14 - 3:1 + 14] = 0
    mask[1 + 28 - 7:] = 0
    write_tokens(w("d11.h5"), rng.integers(0, 64, n), 64, loss_mask=mask, doc_offsets=offsets_of([5, 13, 11]))
    check_case(zen, work, "trailing-masked-rows-skipped", w("m1"), w("a1"), w("d11.h5"), 14, 2)

    # 5. a tied model that also stores lm_head.weight: the extra tensor is ignored
    from zen_files import read_safetensors as _read, write_safetensors as _write
    shutil.copytree(w("m1"), w("m1-extra-head"))
    st = w("m1-extra-head", "model.safetensors")
    weights, _ = _read(st)
    weights["lm_head.weight"] = rng.normal(0, 5.0, weights["model.embed_tokens.weight"].shape)
    _write(st, weights)
    base = [zen, "grad", "--adapter", w("a1"), "--data", w("d1.h5"), "--seq-len", "9", "--batch", "2", "--dtype", "f32"]
    a = run(base + ["--model", w("m1"), "--out", w("t1.safetensors")])
    b = run(base + ["--model", w("m1-extra-head"), "--out", w("t2.safetensors")])
    same = a == b and open(w("t1.safetensors"), "rb").read() == open(w("t2.safetensors"), "rb").read()
    harness.check("tied model with a stored lm_head.weight: the extra tensor is ignored (identical output)", same)
    print("--recompute bit-identical in every case")
    for name, le, cos, key, same, ok in bf16["results"]:
        harness.check(f"{name} (bf16): loss within {BF16_LOSS_TOL:.0e} relative, cosine >= {BF16_COSINE}, two runs "
                      "identical", ok, f"loss rel err {le:.2e}, min cosine {cos:.6f} ({key}), two runs "
                      f"{'identical' if same else 'DIFFER'}")
    harness.finish()


if __name__ == "__main__":
    main()
