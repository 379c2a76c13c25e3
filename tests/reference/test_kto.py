#!/usr/bin/env python3
"""tests/reference/test_kto.py: `zen grad --objective kto` and `zen train`
with objective kto against a float64 PyTorch reference written from TRL's
definitions (trl/trainer/kto_trainer.py v1.9, ../shared/notes/grpo-and-kto.md
section 4), on the independent decoder of qwen3_lora_ref.py:
- z, the KL reference point: item i of a block of batch_size items (in file
  order) is paired with the completion of item i - 1 (the first with the
  last), that completion cut to seq_len - prompt; z = max(0, mean of the
  pairs' summed policy - reference log-ratio), detached;
- kto: desirable w_d (1 - s(beta (r - z))), undesirable w_u (1 - s(beta (z - r)));
  apo_zero_unpaired: desirable w_d (1 - s(beta r)), undesirable w_u s(beta r);
  the loss their mean over the items;
- TRL's metrics: kl (z), rewards/chosen and /rejected (means of beta r over
  each kind), rewards/margins, logps/chosen and /rejected (summed policy
  log-probabilities).

Checks:
1. zen grad on two models (GQA 2:1 tied f32, 3:1 untied bf16-stored): the
   loss, every LoRA gradient and every metric within harness.fp32_bound, with
   labels mixed, all desirable, all undesirable, both loss types, weights,
   the base and a frozen adapter as the reference, a KL completion cut by
   seq_len, z above 0 and clamped to 0; a preference file used directly
   (TRL's unpair_preference_dataset); the prompt run once (shared) = apart;
   DoRA on an NF4 base; with --zen-emu the CUDA backend (emulated);
2. zen data --format kto: counts, TRL's ratio warning, bad records; a
   made-up task (answers in capitals are desirable): held-out
   eval_rewards/chosen rises above eval_rewards/rejected and zen eval
   --choices improves; resume bit-exact; kto.precompute_ref equal to the
   reference run in each step; the config key reference; batch_size 1 refused;
3. over 2 MPI ranks: z is the mean of the two ranks' micro-batch means (TRL's
   gather), checked against the reference; a resume with other ranks refused.
"""
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402
from test_preference import seq_logps  # noqa: E402
from test_quant_base import nf4_roundtrip  # noqa: E402
from zen_files import (make_config, read_adapter, read_model_dir, read_safetensors, write_adapter,  # noqa: E402
                       write_dora_adapter, write_kto, write_model, write_pairs)

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MPIRUN = harness.MPIRUN  # (the sanitizer build's ranks skip leak checks: harness.py says why)
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def kl_partner(i, B, items):
    """TRL's mismatched pair: the item before i in its block of B items in file order (the first takes the last)"""
    start = i // B * B
    size = min(B, items - start)
    return start + (i - start - 1) % size


def unpair(pairs):
    """TRL's unpair_preference_dataset over (prompt, chosen, rejected): in blocks of 1000 pairs, the chosen
    completions (desirable) then the rejected ones"""
    items = []
    for s in range(0, len(pairs), 1000):
        block = pairs[s:s + 1000]
        items += [(p, c, True) for p, c, _ in block] + [(p, r, False) for p, _, r in block]
    return items


def kto_objective(loss_type, beta, w_d, w_u, labels, x, detach_z=True):
    """TRL's loss and metrics from x, per item [policy logp, reference logp, policy KL logp, reference KL logp]
    (summed over the completion). Returns (loss, {metric: tensor})."""
    X = x.view(len(labels), 4)
    r = X[:, 0] - X[:, 1]
    des = torch.tensor(labels, dtype=torch.bool)
    if loss_type == "kto":
        kl = (X[:, 2] - X[:, 3]).mean()
        z = torch.clamp(kl.detach() if detach_z else kl, min=0)
        losses = torch.where(des, 1 - torch.sigmoid(beta * (r - z)), 1 - torch.sigmoid(beta * (z - r)))
    else:  # no KL term: TRL logs kl as 0
        z = torch.zeros((), dtype=torch.float64)
        losses = torch.where(des, 1 - torch.sigmoid(beta * r), torch.sigmoid(beta * r))
    w = torch.where(des, torch.tensor(w_d, dtype=torch.float64), torch.tensor(w_u, dtype=torch.float64))
    loss = (w * losses).mean()
    m = {"kl": z}
    if des.any():
        m["rewards/chosen"] = (beta * r[des]).mean()
        m["logps/chosen"] = X[des, 0].mean()
    if (~des).any():
        m["rewards/rejected"] = (beta * r[~des]).mean()
        m["logps/rejected"] = X[~des, 0].mean()
    if des.any() and (~des).any():
        m["rewards/margins"] = m["rewards/chosen"] - m["rewards/rejected"]
    return loss, m


def zen_order(n_pairs):
    """a preference file's items as zen numbers them (pair q's chosen, then its rejected), as positions in TRL's
    unpaired order"""
    order = []
    for q in range(n_pairs):
        first = q // 1000 * 1000
        size = min(1000, n_pairs - first)
        order += [2 * first + q - first, 2 * first + size + q - first]
    return order


def reference(cfg, weights, acfg, adapter, items, picks, B, T, loss_type="kto", beta=0.1, w_d=1.0, w_u=1.0,
              ref_adapter=None):
    """loss, gradients and TRL's metrics of a step over the items at `picks` of `items` (prompt, completion,
    label, in TRL's order), KL partners in blocks of B, and the size of the terms behind each
    (harness.terms_of); and how many KL completions seq_len T cut"""
    pol = Qwen3LoraReference(cfg, weights, acfg, adapter)
    ref = Qwen3LoraReference(cfg, weights, *ref_adapter) if ref_adapter is not None else Qwen3LoraReference(cfg, weights)
    sums, labels, cut = [], [], 0
    for i in picks:
        p, c, label = items[i]
        partner = items[kl_partner(i, B, len(items))][1]
        q = partner[:T - len(p)]
        cut += len(q) < len(partner)
        lp = seq_logps(pol, p, c)[0].sum()
        lq = seq_logps(pol, p, q)[0].sum() if loss_type == "kto" else torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            rp = seq_logps(ref, p, c)[0].sum()
            rq = seq_logps(ref, p, q)[0].sum() if loss_type == "kto" else torch.zeros((), dtype=torch.float64)
        sums += [lp, rp, lq, rq]
        labels.append(bool(label))
    x = torch.stack(sums)
    f = lambda v, d=True: kto_objective(loss_type, beta, w_d, w_u, labels, v, d)
    loss, metrics = f(x)
    loss.backward()
    x0 = x.detach()
    loss_terms = harness.terms_of(lambda v: f(v, False)[0], x0)  # z's own rounding moves the loss too
    metric_terms = {k: harness.terms_of(lambda v, k=k: f(v, False)[1][k], x0) for k in metrics}
    return (loss.item(), {k: v.grad.numpy() for k, v in pol.lora.items()}, {k: v.item() for k, v in metrics.items()},
            loss_terms, metric_terms, cut)


def eval_reference(cfg, weights, acfg, adapter, items, B, T, ref_adapter, beta=0.1):
    """zen eval's numbers over every item of a KTO file, batches of B each with its own z (no gather): the mean
    item loss, the mean z, and the metrics over all items; with the size of the terms behind each"""
    pol = Qwen3LoraReference(cfg, weights, acfg, adapter)
    ref = Qwen3LoraReference(cfg, weights, *ref_adapter)
    sums = []
    with torch.no_grad():
        for i, (p, c, _) in enumerate(items):
            q = items[kl_partner(i, B, len(items))][1][:T - len(p)]
            sums += [seq_logps(pol, p, c)[0].sum(), seq_logps(ref, p, c)[0].sum(), seq_logps(pol, p, q)[0].sum(),
                     seq_logps(ref, p, q)[0].sum()]
    labels = [bool(l) for _, _, l in items]

    def f(v):
        X = v.view(len(items), 4)
        losses, zs = [], []
        for s in range(0, len(items), B):
            z = torch.clamp((X[s:s + B, 2] - X[s:s + B, 3]).mean(), min=0)
            zs.append(z)
            for i in range(s, min(s + B, len(items))):
                r = X[i, 0] - X[i, 1]
                losses.append(1 - torch.sigmoid(beta * ((r - z) if labels[i] else (z - r))))
        _, m = kto_objective("kto", beta, 1.0, 1.0, labels, v)
        m["kl"] = torch.stack(zs).mean()
        m["loss"] = torch.stack(losses).mean()
        return m

    x0 = torch.stack(sums)
    want = {k: v.item() for k, v in f(x0).items()}
    terms = {k: harness.terms_of(lambda v, k=k: f(v)[k], x0) for k in want}
    return want, terms


def metrics_close(name, got, want, terms, length):
    """each metric zen printed against TRL's from the reference within the fp32 bound of its terms; a
    metric TRL leaves out (no item of that kind) is nan in zen"""
    oks, worst = [], (0.0, "none")
    for k in ("loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen",
              "logps/rejected"):
        if k not in got or (k == "loss" and k not in want):  # zen grad's loss is checked with its gradients
            continue
        if k not in want:
            oks.append(np.isnan(got[k]))
            continue
        err = abs(got[k] - want[k])
        ok, text = harness.fp32_close(f"{name}: {k}", err, terms[k], length)
        oks.append(ok)
        bound = harness.fp32_bound(terms[k], length)
        ratio = err / bound if bound else (0.0 if err == 0 else float("inf"))
        if not ratio <= worst[0]:
            worst = (ratio, f"{k} {text}")
    return all(oks) and oks, f"metrics: worst {worst[1]}"


def zen_grad(prog, args, out):
    return subprocess.run([prog, "grad"] + args + ["--out", out], capture_output=True, text=True)


def printed(p):
    return dict((l.split()[0], float(l.split()[1])) for l in p.stdout.splitlines())


def random_items(rng, V, n, labels):
    """n items: prompts of 1-10 tokens, completions of 1-6"""
    return [(rng.integers(0, V, 1 if i == 1 else int(rng.integers(4, 11))).tolist(),
             rng.integers(0, V, int(rng.integers(1, 7))).tolist(), labels[i]) for i in range(n)]


def check_grads(zen, w, rng):
    """1: zen grad against the reference"""
    cfg_a = make_config(hidden=32, inter=48, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=64, tied=True)
    write_model(w("ma"), cfg_a, rng, "F32")
    cfg_b = make_config(hidden=48, inter=40, layers=2, heads=6, kv_heads=2, head_dim=12, vocab=50, tied=False)
    write_model(w("mb"), cfg_b, rng, "BF16")
    zs = []
    for name, cfg in (("a", cfg_a), ("b", cfg_b)):
        V = cfg["vocab_size"]
        write_adapter(w("pol" + name), cfg, r=4, alpha=8, targets=ALL, rng=rng, b_scale=0.4)
        write_adapter(w("ref" + name), cfg, r=4, alpha=8, targets=ALL, rng=rng, b_scale=0.4)
        files = {"mixed": random_items(rng, V, 5, [True, False, False, True, False]),
                 "desirable": random_items(rng, V, 4, [True] * 4),
                 "undesirable": random_items(rng, V, 3, [False] * 3)}
        # a long prompt after a long completion: the KL completion is cut to seq_len - prompt
        files["mixed"][2] = (rng.integers(0, V, 11).tolist(), [int(rng.integers(0, V))], False)
        files["mixed"][1] = (files["mixed"][1][0], rng.integers(0, V, 7).tolist(), False)
        for f, items in files.items():
            write_kto(w(f"{name}-{f}.h5"), items, V)
        pairs = [(rng.integers(0, V, int(rng.integers(3, 8))).tolist(), rng.integers(0, V, int(rng.integers(1, 5))).tolist(),
                  rng.integers(0, V, int(rng.integers(1, 5))).tolist()) for _ in range(4)]
        write_pairs(w(f"{name}-pairs.h5"), pairs, V)
        files["pairs"] = unpair(pairs)
        _, weights = read_model_dir(w("m" + name))
        acfg, adapter = read_adapter(w("pol" + name))
        ref_ad = read_adapter(w("ref" + name))
        runs = [("mixed", 4, "kto-base", ["--reference", "base"], {}),
                ("mixed", 5, "kto-beta0.5-weights-refadapter",
                 ["--beta", "0.5", "--set", "kto.desirable_weight=1.3", "--set", "kto.undesirable_weight=0.7",
                  "--reference", w("ref" + name)], dict(beta=0.5, w_d=1.3, w_u=0.7, ref_adapter=ref_ad)),
                ("desirable", 4, "kto-all-desirable", ["--reference", "base"], {}),
                ("undesirable", 3, "kto-all-undesirable-continued", ["--beta", "0.3"],
                 dict(beta=0.3, ref_adapter=(acfg, adapter))),
                ("mixed", 4, "apo-zero-unpaired", ["--reference", w("ref" + name), "--set",
                                                   "kto.loss_type=apo_zero_unpaired"],
                 dict(loss_type="apo_zero_unpaired", ref_adapter=ref_ad)),
                # batch 0 of a preference file: pairs 0 and 1, chosen and rejected; their KL partners from TRL's
                # blocks of 4 (chosen 0-3, rejected 0-3)
                ("pairs", 4, "preference-file-unpaired", ["--reference", "base", "--beta", "2"], dict(beta=2.0))]
        for f, B, rname, args, kw in runs:
            items = files[f]
            T = max(len(p) + len(c) for p, c, _ in items)
            data = w(f"{name}-{f}.h5")
            base = ["--model", w("m" + name), "--adapter", w("pol" + name), "--data", data, "--seq-len", str(T),
                    "--batch", str(B), "--dtype", "f32", "--objective", "kto"]
            out = w(f"{name}-{rname}.st")
            p = zen_grad(zen, base + args, out)
            label = f"model {name} {rname}"
            if p.returncode:
                harness.check(label, False, p.stderr.strip())
                continue
            got = printed(p)
            grads, _ = read_safetensors(out)
            picks = zen_order(len(pairs))[:B] if f == "pairs" else range(B)
            loss, ref_grads, metrics, loss_terms, metric_terms, cut = reference(cfg, weights, acfg, adapter, items,
                                                                                picks, B, T, **kw)
            if "kl" in metrics:
                zs.append(metrics["kl"])
            rows = sum(2 * len(items[i][0]) + len(items[i][1]) + 6 for i in picks)
            mok, mtext = metrics_close(label, got, metrics, metric_terms, harness.model_length(cfg, T))
            harness.check_against_reference(f"{label}: loss {loss:.6f}{', a KL completion cut' if cut else ''}",
                                            got["loss"], loss, grads, ref_grads, cfg, T, rows, loss_terms=loss_terms,
                                            extra_ok=mok, extra=mtext)
            if rname == "kto-beta0.5-weights-refadapter" and name == "a":
                # zen eval over the 5 records in batches of 2 (the last of 1): each batch its own z
                ev = subprocess.run([zen, "eval", "--model", w("m" + name), "--adapter", w("pol" + name), "--data", data,
                                     "--seq-len", str(T), "--batch", "2", "--dtype", "f32", "--objective", "kto",
                                     "--reference", w("ref" + name)], capture_output=True, text=True)
                want, terms = eval_reference(cfg, weights, acfg, adapter, items, 2, T, ref_ad)
                ok, text = metrics_close(f"model {name}: zen eval --objective kto", printed(ev) if not ev.returncode
                                         else {}, want, terms, harness.model_length(cfg, T))
                harness.check(f"model {name}: zen eval --objective kto, batches of 2 each with its own z: loss and "
                              "TRL's metrics against the reference", ok and not ev.returncode,
                              text + ev.stderr.strip()[-200:])
            if rname == "kto-base":
                pa = zen_grad(zen, base + args + ["--pair-layout", "apart"], out + ".apart")
                ga = read_safetensors(out + ".apart")[0] if not pa.returncode else {}
                ok, text = harness.grads_close(f"{label}: shared prompt = apart", grads, ga,
                                               harness.model_length(cfg, T, rows), results=2)
                harness.check(f"{label}: the prompt run once = run per completion (f32)", ok, text)
                harness.check(f"{label}: a KL completion is cut to seq_len - prompt here", cut > 0, f"({cut} cut)")
            if harness.zen_emu and rname in ("kto-base", "apo-zero-unpaired"):
                pe = zen_grad(harness.zen_emu, base + args + ["--device", "cuda"], out + ".cuda")
                ge = read_safetensors(out + ".cuda")[0] if not pe.returncode else {}
                ok, text = harness.grads_close(f"{label}: CUDA (emulated) f32", ge, ref_grads,
                                               harness.model_length(cfg, T, rows))
                harness.check(f"{label}: CUDA (emulated) f32 against the reference", ok,
                              text + (pe.stderr.strip()[-200:] if pe.returncode else ""))
    harness.check("z is above 0 in some cases and clamped to 0 in others",
                  any(z > 0 for z in zs) and any(z == 0 for z in zs), f"(z: {[round(z, 4) for z in zs]})")

    # DoRA on an NF4 base: the reference on bitsandbytes' NF4 of each projection, n from the dequantised rows
    cfg = make_config(hidden=64, inter=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=64, tied=True)
    write_model(w("mq"), cfg, rng, "BF16")
    _, weights = read_model_dir(w("mq"))
    qweights = {k: (nf4_roundtrip(v).astype(np.float64) if "_proj.weight" in k else v) for k, v in weights.items()}
    write_dora_adapter(w("dora"), cfg, weights, r=4, alpha=8, targets=ALL, rng=rng)
    items = random_items(rng, 64, 4, [True, False, True, False])
    write_kto(w("q.h5"), items, 64)
    T = max(len(p) + len(c) for p, c, _ in items)
    out = w("dora-nf4.st")
    p = zen_grad(zen, ["--model", w("mq"), "--adapter", w("dora"), "--data", w("q.h5"), "--seq-len", str(T), "--batch",
                       "4", "--dtype", "f32", "--objective", "kto", "--reference", "base", "--base-quant", "nf4"], out)
    acfg, ad = read_adapter(w("dora"))
    loss, ref_grads, _, loss_terms, _, _ = reference(cfg, qweights, acfg, ad, items, range(4), 4, T)
    if p.returncode:
        harness.check("DoRA on an NF4 base", False, p.stderr.strip())
    else:
        harness.check_against_reference("DoRA on an NF4 base (kto): loss and gradients against the reference",
                                        printed(p)["loss"], loss, read_safetensors(out)[0], ref_grads, cfg, T,
                                        sum(2 * len(p_) + len(c_) + 6 for p_, c_, _ in items), loss_terms=loss_terms)


def capitals(rnd, n, desirable=(5, 9)):
    """the made-up task: a word said in capitals is desirable, as it is not, undesirable (a word per record);
    desirable[0] of every desirable[1] records are desirable (5 of 9: within TRL's 1:1 to 4:3)"""
    word = lambda: "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 7)))
    recs = []
    for i in range(n):
        w_, good = word(), i % desirable[1] < desirable[0]
        recs.append({"prompt": f"Say the word {w_} in capitals: ", "completion": (w_.upper() if good else w_) + ".",
                     "label": good})
    return recs


def check_training(zen, w):
    """2: zen data --format kto and zen train with objective kto"""
    run = lambda cmd, **kw: subprocess.run(cmd, capture_output=True, text=True, **kw)
    p = run([zen, "init", "--preset", "tiny", "--seed", "3", "--out", w("tiny")])
    assert p.returncode == 0, p.stderr
    rnd = random.Random(11)
    recs = capitals(rnd, 480)
    with open(w("rule.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    nd = sum(r["label"] for r in recs)
    p = run([zen, "data", "--tokenizer", w("tiny"), "--in", w("rule.jsonl"), "--format", "kto", "--max-length", "48",
             "--out", w("rule.h5")])
    harness.check("zen data --format kto: records, desirable and undesirable counted",
                  p.returncode == 0 and "480 labelled completions" in p.stderr and
                  f"{nd} desirable, {480 - nd} undesirable" in p.stderr and "1:1 to 4:3" not in p.stderr,
                  p.stderr.strip()[-400:])
    info = run([zen, "info", w("rule.h5")])
    harness.check("zen info names a KTO file's records", "480 labelled completions (root attribute kto_records" in
                  info.stdout, info.stdout.strip()[-300:])
    # TRL's ratio advice: 3 desirable to 1 undesirable at weights 1, 1 is outside 1:1 .. 4:3
    lop = [r for r in recs if r["label"]][:150] + [r for r in recs if not r["label"]][:50]
    with open(w("lop.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in lop)
    p = run([zen, "data", "--tokenizer", w("tiny"), "--in", w("lop.jsonl"), "--format", "kto", "--out", w("lop.h5")])
    warned = [l for l in p.stderr.splitlines() if "1:1 to 4:3" in l]
    harness.check("zen data: 150 desirable and 50 undesirable, one line of TRL's ratio advice with the ranges",
                  p.returncode == 0 and len(warned) == 1 and "kto.desirable_weight in [0.33, 0.44]" in warned[0] and
                  "kto.undesirable_weight in [2.26, 3.00]" in warned[0], warned or p.stderr.strip())
    with open(w("cfg.json"), "w") as f:
        json.dump({"objective": "kto", "seq_len": 48, "batch_size": 8, "grad_accum": 2, "lr": 2e-3,
                   "val_fraction": 0.1, "eval_every": 5, "log_every": 5, "save_every": 10, "max_steps": 30,
                   "dtype": "f32", "lora": {"r": 8}}, f)
    base = [zen, "train", w("cfg.json"), "--model", w("tiny"), "--data", w("rule.h5")]
    p = run(base + ["--out", w("kto")])
    lines = [json.loads(l) for l in open(w("kto", "metrics.jsonl"))] if p.returncode == 0 else []
    want = {"loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected",
            "eval_loss", "eval_kl", "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins",
            "eval_logps/chosen", "eval_logps/rejected"}
    ev = [(l["step"], l["eval_rewards/chosen"], l["eval_rewards/rejected"]) for l in lines if "eval_rewards/chosen" in l]
    harness.check("kto: TRL's metrics (and eval_ ones) logged; held-out desirable rewards rise above undesirable",
                  lines and want <= set().union(*lines) and ev[-1][1] > ev[-1][2] + 0.5 and ev[-1][1] > ev[0][1],
                  f"eval rewards chosen/rejected {[(s, round(c, 3), round(r, 3)) for s, c, r in ev]}" if lines
                  else p.stderr[-400:])
    # the rule as a multiple-choice task: after training, the capitals win more often
    crnd = random.Random(12)
    with open(w("choices.jsonl"), "w") as f:
        for r in capitals(crnd, 100, (1, 1)):
            word = r["completion"][:-1]
            f.write(json.dumps({"context": r["prompt"].rstrip(), "choices": [" " + word.lower() + ".", " " + word + "."],
                                "label": 1}) + "\n")
    ev = [zen, "eval", "--model", w("tiny"), "--choices", w("choices.jsonl"), "--seq-len", "64"]
    before, after = run(ev), run(ev + ["--adapter", w("kto")])
    acc = lambda q: dict((l.split()[0], float(l.split()[1])) for l in q.stdout.splitlines()).get("acc", -1)
    harness.check("kto: zen eval --choices on the rule improves", acc(after) >= acc(before) + 0.3,
                  f"acc {acc(before)} -> {acc(after)} {after.stderr.strip()[-200:]}")
    # resume from checkpoint-20: the same adapter as running straight through
    harness.check_resume("kto: a resumed run equals the uninterrupted one bit for bit", base, w("kto"), 30)
    # kto.precompute_ref: the same run as the reference in each step
    p = run(base + ["--out", w("pre"), "--set", "kto.precompute_ref=true"])
    a = [json.loads(l) for l in open(w("kto", "metrics.jsonl"))]
    b = [json.loads(l) for l in open(w("pre", "metrics.jsonl"))] if p.returncode == 0 else []
    err = max(abs(x[k] - y[k]) / max(abs(x[k]), 1e-3) for x, y in zip(a, b) for k in ("loss", "kl", "rewards/margins")) \
        if b else 1.0
    harness.check("kto.precompute_ref: the losses and metrics of the reference run in each step",
                  p.returncode == 0 and "computing 480 records" in p.stderr and err < 1e-4,
                  f"largest difference {err:.1e} {p.stderr[-300:] if p.returncode else ''}")
    # the preference data of the DPO test used directly: its pairs unpaired
    prec = [{"prompt": r["prompt"], "chosen": r["completion"].upper(), "rejected": r["completion"].lower()}
            for r in recs[:200]]
    with open(w("pairs.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in prec)
    run([zen, "data", "--tokenizer", w("tiny"), "--in", w("pairs.jsonl"), "--format", "preference", "--out",
         w("pairs.h5")])
    p = run(base[:3] + ["--model", w("tiny"), "--data", w("pairs.h5"), "--out", w("kto-pairs"), "--set", "max_steps=2"])
    harness.check("kto on a preference file: its 200 pairs are 400 records (TRL's unpair_preference_dataset)",
                  p.returncode == 0 and "400 records" in p.stderr, p.stderr[-300:])
    # the config key reference: continuing the adapter with the base as the reference (r is not 0 at step 1)
    p = run(base + ["--out", w("cont"), "--set", f"adapter={w('kto')}", "--set", "max_steps=1"])
    q = run(base + ["--out", w("cont-base"), "--set", f"adapter={w('kto')}", "--set", "max_steps=1", "--set",
                    "reference=base"])
    m1 = json.loads(open(w("cont", "metrics.jsonl")).readline()) if p.returncode == 0 else {}
    m2 = json.loads(open(w("cont-base", "metrics.jsonl")).readline()) if q.returncode == 0 else {}
    harness.check("reference: the continued adapter frozen by default (margin 0 at step 1), reference=base the base",
                  m1 and m2 and abs(m1["rewards/margins"]) < 1e-9 and m2["rewards/margins"] > 0.1 and
                  "reference: the base model" in q.stderr and "reference: the starting adapter" in p.stderr,
                  f"margins {m1.get('rewards/margins')}, {m2.get('rewards/margins')} {q.stderr[-200:]}")
    p = run(base + ["--out", w("sft-ref"), "--set", "objective=sft", "--set", "reference=base"])
    harness.check("reference with an objective that has none: one line, exit 2",
                  p.returncode == 2 and "'reference'" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
                  p.stderr.strip())
    # the ratio advice at zen train, and weights that balance it
    lop_cfg = base[:3] + ["--model", w("tiny"), "--data", w("lop.h5"), "--set", "max_steps=1", "--set", "val_fraction=0"]
    p = run(lop_cfg + ["--out", w("lop1")])
    q = run(lop_cfg + ["--out", w("lop2"), "--set", "kto.undesirable_weight=2.5"])
    harness.check("zen train repeats the ratio advice; kto.undesirable_weight 2.5 balances it",
                  p.returncode == 0 and "1:1 to 4:3" in p.stderr and q.returncode == 0 and "1:1 to 4:3" not in q.stderr,
                  p.stderr[-300:])
    p = run(base + ["--out", w("b1"), "--set", "batch_size=1"])
    harness.check("batch_size 1: one line saying why (no mismatched pair), exit 2",
                  p.returncode == 2 and "mismatched" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
                  p.stderr.strip())
    p = run(base + ["--out", w("b1-apo"), "--set", "batch_size=1", "--set", "kto.loss_type=apo_zero_unpaired",
                    "--set", "max_steps=2"])
    harness.check("batch_size 1 with apo_zero_unpaired (no z) trains", p.returncode == 0, p.stderr[-200:])
    p = run([zen, "train", w("cfg.json"), "--model", w("tiny"), "--data", w("rule.h5"), "--out", w("sft"),
             "--set", "objective=sft"])
    harness.check("sft on a KTO file: one line naming kto, exit 2", p.returncode == 2 and "kto" in p.stderr and
                  len(p.stderr.strip().splitlines()) == 1, p.stderr.strip())
    # bad records: one line naming file:line, exit 2, nothing written
    bad = {"label-missing": {"prompt": "a", "completion": "b"},
           "label-not-bool": {"prompt": "a", "completion": "b", "label": "yes"},
           "empty-completion": {"prompt": "a", "completion": "", "label": True}}
    for name, rec in bad.items():
        with open(w(f"bad-{name}.jsonl"), "w") as f:
            f.write(json.dumps({"prompt": "ok", "completion": "x", "label": False}) + "\n" + json.dumps(rec) + "\n")
        p = run([zen, "data", "--tokenizer", w("tiny"), "--in", w(f"bad-{name}.jsonl"), "--format", "kto",
                 "--out", w(f"bad-{name}.h5")])
        harness.check(f"bad record ({name}): one line naming the line, exit 2, no file",
                      p.returncode == 2 and f"bad-{name}.jsonl:2" in p.stderr and len(p.stderr.strip().splitlines()) == 1
                      and not os.path.exists(w(f"bad-{name}.h5")), p.stderr.strip())


def check_ranks(zen, w, rng):
    """3: two ranks, z gathered as TRL gathers it"""
    if harness.mpi_missing(zen):
        return
    cfg = make_config(hidden=32, inter=48, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=64, tied=True)
    write_model(w("mr"), cfg, rng, "F32")
    write_adapter(w("polr"), cfg, r=4, alpha=8, targets=ALL, rng=rng, b_scale=0.4)
    # a step over 2 ranks of 3 items each holds the whole file: whichever items the shuffle gives each rank,
    # z is the mean of the two micro-batch means of the file's blocks of 3
    items = random_items(rng, 64, 6, [True, False, True, False, False, True])
    write_kto(w("r.h5"), items, 64)
    T = max(len(p) + len(c) for p, c, _ in items)
    with open(w("r.json"), "w") as f:
        json.dump({"objective": "kto", "seq_len": T, "batch_size": 3, "max_steps": 1, "lr": 1e-6, "dtype": "f32",
                   "reference": "base", "adapter": w("polr"), "grad_clip": 0, "save_every": 1}, f)
    p = subprocess.run(MPIRUN + ["-np", "2", zen, "train", w("r.json"), "--model", w("mr"), "--data", w("r.h5"),
                                 "--out", w("np2")], capture_output=True, text=True, env=ONE_THREAD)
    got = json.loads(open(w("np2", "metrics.jsonl")).readline()) if p.returncode == 0 else {}
    _, weights = read_model_dir(w("mr"))
    acfg, adapter = read_adapter(w("polr"))
    # the two ranks' micro-batches hold 3 items each, so the mean of their means is the mean over all 6,
    # whichever items the shuffle gave each (the KL partners come from the file's blocks of 3)
    loss, ref_grads, metrics, loss_terms, metric_terms, _ = reference(cfg, weights, acfg, adapter, items, range(6), 3,
                                                                      T)
    norm = float(np.sqrt(sum(float(np.sum(g * g)) for g in ref_grads.values())))
    length = harness.model_length(cfg, T, 6 * T)
    ok1, t1 = harness.loss_close("2 ranks: loss", got.get("loss", np.inf), loss, length, terms=loss_terms)
    ok2, t2 = harness.fp32_close("2 ranks: kl", abs(got.get("kl", np.inf) - metrics["kl"]), metric_terms["kl"], length)
    ok3, t3 = harness.fp32_close("2 ranks: grad_norm", abs(got.get("grad_norm", np.inf) - norm), norm, length)
    harness.check(f"2 ranks: z the mean of the ranks' micro-batch means (TRL's gather): loss, kl "
                  f"{metrics['kl']:.4f} and grad_norm against the reference", ok1 and ok2 and ok3,
                  f"loss {t1}; kl {t2}; grad_norm {t3} {p.stderr[-300:] if p.returncode else ''}")
    shutil.copytree(w("np2"), w("np2-r"))
    p = subprocess.run([zen, "train", w("r.json"), "--model", w("mr"), "--data", w("r.h5"), "--out", w("np2-r"),
                        "--resume", "--set", "max_steps=2", "--set", "grad_accum=2"], capture_output=True, text=True,
                       env=ONE_THREAD)
    harness.check("a 2-rank KTO run resumed by one process: one line, exit 2 (z averages across the ranks)",
                  p.returncode == 2 and "resume with 2 ranks" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
                  p.stderr.strip())


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(34)
    check_grads(zen, w, rng)
    check_training(zen, w)
    check_ranks(zen, w, rng)
    harness.finish()


if __name__ == "__main__":
    main()
