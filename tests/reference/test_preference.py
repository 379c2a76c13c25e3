#!/usr/bin/env python3
"""tests/reference/test_preference.py: `zen grad --objective dpo|orpo`
against a float64 PyTorch reference written from TRL's definitions
(trl/trainer/dpo_trainer.py: sigmoid, ipo, robust, hinge on summed
completion log-probabilities; trl/experimental/orpo: mean log-probabilities,
log-odds, NLL of prompt + chosen), on the independent decoder of
qwen3_lora_ref.py. Each pair's two sequences run apart in the reference.

Checks, on tiny models (GQA 2:1 tied f32 and 3:1 untied bf16-stored):
- the loss and every LoRA gradient within harness.fp32_bound, for each DPO loss
  with the base as reference, with a reference adapter (a continued one),
  and ORPO with the NLL over prompt + chosen and over the chosen only;
- the metrics zen prints (rewards/*, logps/*, nll_loss, log_odds_*) equal
  TRL's computed from the reference, each within the bound of the summed
  log-probabilities it is computed from (harness.terms_of: a reward
  beta (log pi - log pi_ref) carries the rounding of beta (|log pi| + |log pi_ref|));
- the shared-prompt layout equals the sequences run apart (--pair-layout
  apart): f32 within twice the fp32 bound (two fp32 computations; each
  tensor against the whole gradient's norm), bf16 at cosine >= 0.9999 where the CPU has bf16;
- with --zen-emu, the CUDA backend (emulated) on the shared layout: f32
  within 1e-5 of the reference, bf16 at cosine >= 0.999.
"""
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402
from zen_files import (make_config, read_adapter, read_model_dir, read_safetensors, write_adapter,  # noqa: E402
                       write_model, write_pairs)

BF16_COS = 0.9999
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def seq_logps(model, prompt, completion):
    """per-token log-probabilities of the completion after the prompt, and of the prompt's tokens 1.."""
    seq = list(prompt) + list(completion)
    logits = model.logits(torch.tensor([seq[:-1]]))[0]
    logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(seq[1:])[:, None])[:, 0]
    P = len(prompt)
    return logp[P - 1:], logp[:P - 1]


def log1mexp(x):
    return torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def pair_objective(objective, loss_type, beta, eps, nll_prompt, x, counts):
    """TRL's loss and metrics from the pairs' summed log-probabilities x, a flat tensor [lc, lr, rc, rr] per pair
    (policy chosen, rejected; reference chosen, rejected) and then the NLL's summed token loss; counts: [(nc, nr)]
    per pair and the NLL's tokens. Returns (loss, {metric name: tensor})."""
    terms, m = [], {k: [] for k in ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                                   "logps/chosen", "logps/rejected", "log_odds_ratio", "log_odds_chosen"]}
    for i, (nc, nr) in enumerate(counts[0]):
        lc, lr, rc, rr = x[4 * i], x[4 * i + 1], x[4 * i + 2], x[4 * i + 3]
        if objective == "dpo":
            ratio_c, ratio_r = lc - rc, lr - rr
            d = ratio_c - ratio_r
            if loss_type == "sigmoid":
                t = -torch.nn.functional.logsigmoid(beta * d)
            elif loss_type == "hinge":
                t = torch.relu(1 - beta * d)
            elif loss_type == "ipo":
                t = (ratio_c / nc - ratio_r / nr - 1 / (2 * beta)) ** 2
            else:  # robust
                t = (-(1 - eps) * torch.nn.functional.logsigmoid(beta * d)
                     + eps * torch.nn.functional.logsigmoid(-beta * d)) / (1 - 2 * eps)
            rew_c, rew_r = beta * ratio_c, beta * ratio_r
            m["logps/chosen"].append(lc)
            m["logps/rejected"].append(lr)
        else:
            mc, mr = lc / nc, lr / nr
            log_odds = (mc - mr) - (log1mexp(mc) - log1mexp(mr))
            ratio = torch.nn.functional.logsigmoid(log_odds)
            t = -beta * ratio
            rew_c, rew_r = beta * mc, beta * mr
            m["logps/chosen"].append(mc)
            m["logps/rejected"].append(mr)
            m["log_odds_ratio"].append(ratio)
            m["log_odds_chosen"].append(log_odds)
        terms.append(t)
        m["rewards/chosen"].append(rew_c)
        m["rewards/rejected"].append(rew_r)
        m["rewards/accuracies"].append((rew_c > rew_r).double())
        m["rewards/margins"].append(rew_c - rew_r)
    loss = torch.stack(terms).mean()
    metrics = {k: torch.stack(v).mean() for k, v in m.items() if v}
    if objective == "orpo":
        metrics["nll_loss"] = x[-1] / counts[1]
        loss = loss + metrics["nll_loss"]
    return loss, metrics


def reference(cfg, weights, acfg, adapter, pairs, objective, loss_type="sigmoid", beta=0.1, eps=0.0,
              ref_adapter=None, nll_prompt=True):
    """loss, gradients, TRL's metrics, and the size of the terms behind each (harness.terms_of: the summed
    log-probabilities they are computed from)"""
    pol = Qwen3LoraReference(cfg, weights, acfg, adapter)
    if ref_adapter is not None:
        ref = Qwen3LoraReference(cfg, weights, ref_adapter[0], ref_adapter[1])
    else:
        ref = Qwen3LoraReference(cfg, weights)  # the adapter off
    sums, counts, nll_sum, nll_n = [], [], 0.0, 0
    for p, c, r in pairs:
        lc, pc = seq_logps(pol, p, c)
        lr, _ = seq_logps(pol, p, r)
        with torch.no_grad():
            rc, rr = (seq_logps(ref, p, c)[0].sum(), seq_logps(ref, p, r)[0].sum()) if objective == "dpo" else \
                (torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64))
        sums += [lc.sum(), lr.sum(), rc, rr]
        counts.append((len(c), len(r)))
        nll_sum = nll_sum - lc.sum() - (pc.sum() if nll_prompt else 0.0)
        nll_n += len(c) + (len(p) - 1 if nll_prompt else 0)
    sums.append(nll_sum if torch.is_tensor(nll_sum) else torch.tensor(nll_sum, dtype=torch.float64))
    x = torch.stack(sums)
    f = lambda v: pair_objective(objective, loss_type, beta, eps, nll_prompt, v, (counts, nll_n))
    loss, metrics = f(x)
    loss.backward()
    x0 = x.detach()
    loss_terms = harness.terms_of(lambda v: f(v)[0], x0)
    metric_terms = {k: harness.terms_of(lambda v, k=k: f(v)[1][k], x0) for k in metrics}
    return (loss.item(), {k: v.grad.numpy() for k, v in pol.lora.items()}, {k: v.item() for k, v in metrics.items()},
            loss_terms, metric_terms)


def metrics_close(name, got, want, terms, length):  # length: harness.model_length of the model and the sequence
    """each metric zen printed or logged against TRL's from the reference, within the fp32 bound of its terms
    (rewards/accuracies, a mean of 0/1, exactly)"""
    oks, worst = [], (0.0, "")
    for k, v in want.items():
        if k == "rewards/accuracies":  # a count of pairs: equal, to the 9 digits zen prints
            same = abs(got.get(k, float("inf")) - v) <= 1e-9
            oks.append(same)
            if not same:
                worst = (float("inf"), f"{k} {got.get(k)} against {v}")
            continue
        ok, text = harness.fp32_close(f"{name}: {k}", abs(got.get(k, float("inf")) - v), terms[k], length)
        oks.append(ok)
        ratio = abs(got.get(k, float("inf")) - v) / harness.fp32_bound(terms[k], length)
        if not ratio <= worst[0]:
            worst = (ratio, f"{k} {text}")
    return all(oks), f"metrics: worst {worst[1]}"


def zen_grad(zen, args, out):
    p = subprocess.run([zen, "grad"] + args + ["--out", out], capture_output=True, text=True)
    return p


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(26)
    cases = []
    # model A: GQA 2:1, tied, f32; model B: GQA 3:1, untied, bf16 weights
    cfg_a = make_config(hidden=32, inter=48, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=64, tied=True)
    write_model(w("ma"), cfg_a, rng, "F32")
    cfg_b = make_config(hidden=48, inter=40, layers=2, heads=6, kv_heads=2, head_dim=12, vocab=50, tied=False)
    write_model(w("mb"), cfg_b, rng, "BF16")
    for name, cfg in (("a", cfg_a), ("b", cfg_b)):
        write_adapter(w("pol" + name), cfg, r=4, alpha=8, targets=ALL, rng=rng, b_scale=0.3)
        write_adapter(w("ref" + name), cfg, r=4, alpha=8, targets=ALL, rng=rng, b_scale=0.3)
        V = cfg["vocab_size"]
        pairs = []
        for i in range(3):  # prompts 2-4x the completions, one prompt of a single token
            P = 1 if i == 1 else int(rng.integers(6, 11))
            pairs.append((rng.integers(0, V, P).tolist(), rng.integers(0, V, int(rng.integers(2, 5))).tolist(),
                          rng.integers(0, V, int(rng.integers(1, 5))).tolist()))
        write_pairs(w(f"pairs{name}.h5"), pairs, V)
        T = max(len(p) + max(len(c), len(r)) for p, c, r in pairs)
        cases.append((name, cfg, pairs, T))

    for name, cfg, pairs, T in cases:
        model = w("m" + name)
        _, weights = read_model_dir(model)
        acfg, adapter = read_adapter(w("pol" + name))
        ref_ad = read_adapter(w("ref" + name))
        base = ["--model", model, "--adapter", w("pol" + name), "--data", w(f"pairs{name}.h5"),
                "--seq-len", str(T), "--batch", str(len(pairs)), "--dtype", "f32"]
        runs = [("dpo-sigmoid-base", ["--objective", "dpo", "--reference", "base"], dict(objective="dpo")),
                ("dpo-ipo-base", ["--objective", "dpo", "--dpo-loss", "ipo", "--beta", "0.5", "--reference", "base"],
                 dict(objective="dpo", loss_type="ipo", beta=0.5)),
                ("dpo-robust-refadapter", ["--objective", "dpo", "--dpo-loss", "robust", "--label-smoothing", "0.2",
                                           "--reference", w("ref" + name)],
                 dict(objective="dpo", loss_type="robust", eps=0.2, ref_adapter=ref_ad)),
                ("dpo-hinge-refadapter", ["--objective", "dpo", "--dpo-loss", "hinge", "--beta", "2",
                                          "--reference", w("ref" + name)],
                 dict(objective="dpo", loss_type="hinge", beta=2.0, ref_adapter=ref_ad)),
                ("dpo-sigmoid-continued", ["--objective", "dpo"],  # the adapter being continued is the reference
                 dict(objective="dpo", ref_adapter=(acfg, adapter))),
                ("orpo-nll-all", ["--objective", "orpo"], dict(objective="orpo")),
                ("orpo-nll-completion", ["--objective", "orpo", "--beta", "0.3", "--orpo-nll", "completion"],
                 dict(objective="orpo", beta=0.3, nll_prompt=False))]
        for rname, args, kw in runs:
            out = w(f"{name}-{rname}.st")
            p = zen_grad(zen, base + args, out)
            if p.returncode:
                raise SystemExit(f"FAILED: zen grad {' '.join(args)}\n{p.stderr}")
            printed = dict((l.split()[0], float(l.split()[1])) for l in p.stdout.splitlines())
            grads, meta = read_safetensors(out)
            loss, ref_grads, metrics, loss_terms, metric_terms = reference(cfg, weights, acfg, adapter, pairs, **kw)
            rows = sum(2 * len(p_) + len(c_) + len(r_) for p_, c_, r_ in pairs)  # both sequences of every pair
            label = f"model {name} {rname}"
            mok, mtext = metrics_close(label, printed, metrics, metric_terms, harness.model_length(cfg, T))
            harness.check_against_reference(f"{label}: loss {loss:.6f}", printed["loss"], loss, grads, ref_grads, cfg, T,
                                            rows,
                                            loss_terms=loss_terms, extra_ok=mok, extra=mtext)
            if rname == "orpo-nll-all":  # zen train's logged metrics of a step over these pairs
                import json
                run_dir = w(f"{name}-train-orpo")
                with open(w("empty.json"), "w") as f:
                    f.write("{}")
                p = subprocess.run([zen, "train", w("empty.json"), "--model", model, "--data", w(f"pairs{name}.h5"),
                                    "--out", run_dir, "--set", "objective=orpo", "--set", f"adapter={w('pol' + name)}",
                                    "--set", f"seq_len={T}", "--set", f"batch_size={len(pairs)}", "--set", "max_steps=1",
                                    "--set", "dtype=f32"], capture_output=True, text=True)
                logged = json.loads(open(os.path.join(run_dir, "metrics.jsonl")).readline()) if not p.returncode else {}
                ok, text = metrics_close(f"model {name}: zen train", logged, dict(metrics, loss=loss),
                                         dict(metric_terms, loss=loss_terms), harness.model_length(cfg, T))
                harness.check(f"model {name}: zen train's metrics.jsonl of a step = TRL's from the reference",
                              ok and logged, text if logged else p.stderr.strip())
            if rname in ("dpo-sigmoid-base", "orpo-nll-all"):
                outa = w(f"{name}-{rname}-apart.st")
                pa = zen_grad(zen, base + args + ["--pair-layout", "apart"], outa)
                ga, _ = read_safetensors(outa)
                # two fp32 computations in other orders: each tensor against the whole gradient's norm
                ok, text = harness.grads_close(f"model {name} {rname}: shared prompt = apart (f32): gradients", grads, ga,
                                               harness.model_length(cfg, T, rows),
                                               results=2)
                harness.check(f"model {name} {rname}: shared prompt = apart (f32)", pa.returncode == 0 and ok, text)
                bf = [w(f"{name}-{rname}-bf16-{lay}.st") for lay in ("shared", "apart")]
                pb = [zen_grad(zen, base[:-1] + ["bf16"] + args + ["--pair-layout", lay], f)
                      for lay, f in zip(("shared", "apart"), bf)]
                if pb[0].returncode == 2 and "native bf16" in pb[0].stderr:
                    print(f"SKIP bf16 shared = apart: {pb[0].stderr.strip()}")
                else:
                    g0, _ = read_safetensors(bf[0])
                    g1, _ = read_safetensors(bf[1])
                    a = np.concatenate([g0[k].ravel() for k in sorted(g0)])
                    b = np.concatenate([g1[k].ravel() for k in sorted(g0)])
                    cos = float(a @ b / np.sqrt((a @ a) * (b @ b)))
                    harness.check(f"model {name} {rname}: shared prompt = apart (bf16)", cos >= BF16_COS,
                                  f"cosine {cos:.7f}")
                if harness.zen_emu:  # the CUDA backend (emulated) on the shared layout, f32 and bf16
                    for dt in ("f32", "bf16"):
                        oe = w(f"{name}-{rname}-cuda-{dt}.st")
                        pe = subprocess.run([harness.zen_emu, "grad"] + base[:-1] + [dt] + args +
                                            ["--device", "cuda", "--out", oe], capture_output=True, text=True)
                        if pe.returncode:
                            raise SystemExit(f"FAILED: zen_emu grad --device cuda\n{pe.stderr}")
                        ge, _ = read_safetensors(oe)
                        a = np.concatenate([ge[k].ravel() for k in sorted(ge)])
                        b = np.concatenate([ref_grads[k].ravel() for k in sorted(ge)])
                        cos = float(a @ b / np.sqrt((a @ a) * (b @ b)))
                        label = f"model {name} {rname}: CUDA (emulated) {dt} against the reference"
                        ok, text = harness.grads_close(label + ": gradients", ge, ref_grads,
                                                                 harness.model_length(cfg, T, rows)) if dt == "f32" else \
                            (cos >= 0.999, f"cosine {cos:.7f}")
                        harness.check(label, ok, text)
    check_choices(zen, w, rng)
    check_training(zen, w)
    harness.finish()


def check_training(zen, w):
    """zen data --format preference and zen train with objective dpo / orpo on
    a made-up rule (the chosen answer writes the word in capitals, the
    rejected one does not): held-out rewards/accuracies above 0.9, TRL's
    metrics in metrics.jsonl, resume bit-exact; bad records"""
    import json
    import random
    run = lambda cmd, **kw: subprocess.run(cmd, capture_output=True, text=True, **kw)
    p = run([zen, "init", "--preset", "tiny", "--seed", "3", "--out", w("tiny")])
    assert p.returncode == 0, p.stderr
    rnd = random.Random(7)
    with open(w("rule.jsonl"), "w") as f:
        for _ in range(400):
            word = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 7)))
            f.write(json.dumps({"prompt": f"Say the word {word} in capitals: ", "chosen": word.upper() + ".",
                                "rejected": word + "."}) + "\n")
    p = run([zen, "data", "--tokenizer", w("tiny"), "--in", w("rule.jsonl"), "--format", "preference",
             "--max-length", "48", "--out", w("rule.h5")])
    harness.check("zen data --format preference", p.returncode == 0 and "400 preference pairs" in p.stderr, p.stderr.strip())
    # the tiny preset's byte-level tokenizer has no eos: said once, as a warning
    warned = [l for l in p.stderr.splitlines() if "warning" in l]
    harness.check("a tokenizer without eos: one warning that the completions end without one",
                  len(warned) == 1 and "no end-of-sequence token" in warned[0] and "400 preference pairs" in warned[0], warned)
    info = run([zen, "info", w("rule.h5")])
    harness.check("zen info names a preference file's pairs and their layout",
                  info.returncode == 0 and "400 preference pairs (root attribute preference_pairs" in info.stdout,
                  info.stdout.strip())
    with open(w("cfg.json"), "w") as f:
        json.dump({"objective": "dpo", "seq_len": 48, "batch_size": 4, "grad_accum": 2, "lr": 2e-3,
                   "val_fraction": 0.1, "eval_every": 5, "log_every": 5, "save_every": 10, "max_steps": 20,
                   "dtype": "f32", "lora": {"r": 8}}, f)
    base = [zen, "train", w("cfg.json"), "--model", w("tiny"), "--data", w("rule.h5")]
    p = run(base + ["--out", w("dpo")])
    lines = [json.loads(l) for l in open(w("dpo", "metrics.jsonl"))] if p.returncode == 0 else []
    want = {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected", "eval_rewards/accuracies"}
    evals = [l["eval_rewards/accuracies"] for l in lines if "eval_rewards/accuracies" in l]
    harness.check("dpo: TRL's metrics logged, held-out rewards/accuracies rises above 0.9",
                  lines and want <= set(lines[-1]) and evals[-1] > 0.9,
                  f"eval rewards/accuracies {evals}; loss {[round(l['loss'], 4) for l in lines]}" if lines else p.stderr)
    # resume from checkpoint-10 of that run: the same adapter as running straight through
    harness.check_resume("dpo: a resumed run equals the uninterrupted one bit for bit", base, w("dpo"), 20)
    # continuing that adapter with ORPO, and DPO against it as the frozen reference
    p = run(base + ["--out", w("orpo"), "--set", "objective=orpo", "--set", f"adapter={w('dpo')}"])
    lines = [json.loads(l) for l in open(w("orpo", "metrics.jsonl"))] if p.returncode == 0 else []
    harness.check("orpo: nll_loss and log_odds_ratio logged, continuing an adapter",
                  lines and {"nll_loss", "log_odds_ratio", "log_odds_chosen"} <= set(lines[-1]), p.stderr[-300:])
    p = run(base + ["--out", w("dpo2"), "--set", f"adapter={w('dpo')}", "--set", "max_steps=1"])
    harness.check("dpo continuing an adapter: its frozen copy is the reference (step 1's margin is 0)",
                  p.returncode == 0 and "reference: the starting adapter" in p.stderr and
                  abs(json.loads(open(w("dpo2", "metrics.jsonl")).readline())["rewards/margins"]) < 1e-9, p.stderr[-300:])
    # dpo.precompute_ref: the same run as computing the reference in each step; the file is reused,
    # and a pass that stopped continues where it stopped, to the same bytes
    import glob
    p = run(base + ["--out", w("pre"), "--set", "dpo.precompute_ref=true"])
    files = glob.glob(w("rule.h5.ref-*.logps"))
    a = [json.loads(l) for l in open(w("dpo", "metrics.jsonl"))] if p.returncode == 0 else []
    b = [json.loads(l) for l in open(w("pre", "metrics.jsonl"))] if p.returncode == 0 else []
    err = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b)) if a and b else 1.0
    harness.check("dpo.precompute_ref: the same losses as the reference run in each step",
                  len(files) == 1 and err < 1e-4 and "computing 400 pairs" in p.stderr, f"largest difference {err:.1e}")
    p = run(base + ["--out", w("pre2"), "--set", "dpo.precompute_ref=true"])
    harness.check("dpo.precompute_ref: a second run reads the file", p.returncode == 0 and "read from" in p.stderr,
                  p.stderr[-200:])
    whole = open(files[0], "rb").read()
    with open(files[0] + ".partial", "wb") as f:
        f.write(whole[:24 + 16 * 4 * 40])  # 40 batches of 4 pairs done
    os.remove(files[0])
    p = run(base + ["--out", w("pre3"), "--set", "dpo.precompute_ref=true"])
    harness.check("dpo.precompute_ref: a stopped pass continues, to the same bytes",
                  p.returncode == 0 and "continuing" in p.stderr and open(files[0], "rb").read() == whole,
                  p.stderr[-300:])
    p = run([zen, "train", w("cfg.json"), "--model", w("tiny"), "--data", w("rule.h5"), "--out", w("sft"),
             "--set", "objective=sft"])
    harness.check("sft on a preference file: one line, exit 2", p.returncode == 2 and "objective" in p.stderr,
                  p.stderr.strip())
    # bad records: each one line naming file:line, exit 2, nothing written; --skip-bad counts
    bad = {"missing": {"prompt": "a", "chosen": "b"}, "empty": {"prompt": "a", "chosen": "", "rejected": "c"},
           "number": {"prompt": 3, "chosen": "b", "rejected": "c"}}
    for name, rec in bad.items():
        with open(w(f"bad-{name}.jsonl"), "w") as f:
            f.write(json.dumps({"prompt": "ok", "chosen": "x", "rejected": "y"}) + "\n" + json.dumps(rec) + "\n")
        p = run([zen, "data", "--tokenizer", w("tiny"), "--in", w(f"bad-{name}.jsonl"), "--format", "preference",
                 "--out", w(f"bad-{name}.h5")])
        harness.check(f"bad record ({name}): one line naming the line, exit 2, no file",
                      p.returncode == 2 and f"bad-{name}.jsonl:2" in p.stderr and len(p.stderr.strip().splitlines()) == 1
                      and not os.path.exists(w(f"bad-{name}.h5")), p.stderr.strip())
    with open(w("mixed.jsonl"), "w") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}) + "\n")
        f.write(json.dumps({"prompt": "x" * 40, "chosen": "a", "rejected": "b"}) + "\n")
        f.write(json.dumps({"prompt": "q"}) + "\n")
        f.write(json.dumps({"prompt": "r", "chosen": "c" * 30, "rejected": "d"}) + "\n")
    p = run([zen, "data", "--tokenizer", w("tiny"), "--in", w("mixed.jsonl"), "--format", "preference", "--skip-bad",
             "--max-length", "20", "--out", w("mixed.h5")])
    harness.check("counted, not errors: chosen = rejected, a prompt over --max-length, a cut completion, a bad line",
                  p.returncode == 0 and "2 preference pairs" in p.stderr and "1 bad lines" in p.stderr and "1 dropped" in p.stderr
                  and "1 with a completion cut" in p.stderr and "1 with chosen equal" in p.stderr, p.stderr.strip())


def check_choices(zen, w, rng):
    """zen eval --choices against the reference: each choice's summed
    log-probability after the context (a byte-level tokenizer: token = byte),
    acc and acc_norm (divided by the choice's bytes); the same at --batch 1
    and 3; an empty context starts from the end-of-text token (here byte 10)"""
    import json
    import byte_tokenizer
    cfg = make_config(hidden=32, inter=48, layers=2, heads=4, kv_heads=1, head_dim=8, vocab=256, tied=False)
    write_model(w("mc"), cfg, rng, "F32", head_std=1.5)
    byte_tokenizer.write(w("mc"))
    _, weights = read_model_dir(w("mc"))
    ref = Qwen3LoraReference(cfg, weights)
    letters = "abcdefghij ."
    recs, best, best_norm = [], [], []
    for i in range(40):
        ctx = "" if i == 7 else "".join(rng.choice(list(letters), int(rng.integers(3, 12))))
        if i % 5 == 0:
            ctx += " "  # trailing whitespace moves to the continuations
        k = int(rng.integers(2, 5))
        choices = ["".join(rng.choice(list(letters), int(rng.integers(1, 6)))) for _ in range(k)]
        recs.append({"context": ctx, "choices": choices, "label": int(rng.integers(0, k))})
        stripped = ctx.rstrip(" ")
        ctx_ids = list(stripped.encode()) if stripped else [10]
        ll = []
        for c in choices:
            cont = list((ctx[len(stripped):] + c).encode())
            lp, _ = seq_logps(ref, ctx_ids, cont)
            ll.append(lp.sum().item())
        best.append(int(np.argmax(ll)))
        best_norm.append(int(np.argmax([v / len(c.encode()) for v, c in zip(ll, choices)])))
    with open(w("choices.jsonl"), "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    acc = np.mean([b == r["label"] for b, r in zip(best, recs)])
    acc_norm = np.mean([b == r["label"] for b, r in zip(best_norm, recs)])
    for batch in ("1", "3"):
        p = subprocess.run([zen, "eval", "--model", w("mc"), "--choices", w("choices.jsonl"), "--seq-len", "32",
                            "--batch", batch, "--dtype", "f32"], capture_output=True, text=True)
        got = dict((l.split()[0], float(l.split()[1])) for l in p.stdout.splitlines()) if not p.returncode else {}
        harness.check(f"eval --choices --batch {batch}: acc {acc:.3f}, acc_norm {acc_norm:.3f} as the reference",
                      got.get("acc") == acc and got.get("acc_norm") == acc_norm, f"zen: {got or p.stderr.strip()}")


if __name__ == "__main__":
    main()
