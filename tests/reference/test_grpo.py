#!/usr/bin/env python3
"""tests/reference/test_grpo.py: `zen grad --objective grpo --completions
FILE.jsonl` against a float64 PyTorch reference written from TRL's
GRPOTrainer (v1.9, trl/trainer/grpo_trainer.py; ../shared/notes/grpo-and-kto.md
section 1) on the independent decoder of qwen3_lora_ref.py, each completion
run apart (prompt + completion, as TRL runs it):

- per-token log-probabilities and entropy of the logits divided by the
  temperature (TRL's logits.div_(temperature));
- advantages per group: (r - mean) / (std + 1e-4) (scale_rewards group, std
  with n - 1), the batch's std (batch) or none; a null reward has advantage
  0 (its row of rewards is NaN);
- rho = exp(l - l_old) per token, or exp of the completion's mean log-ratio
  (importance_sampling_level sequence, GSPO); l_old is l detached unless the
  file gives old_logps;
- L = -min(rho~ A, clip(rho, 1 - eps, 1 + eps_high) A) (rho~ = min(rho,
  delta)) + beta (exp(l_ref - l) - (l_ref - l) - 1);
- dapo, grpo, bnpo and dr_grpo aggregation; mask_truncated_completions;
- TRL's metrics: reward, reward_std, frac_reward_zero_std, kl, entropy,
  clip_ratio/low_mean, high_mean, region_mean, completions/mean_length,
  min_length, max_length, clipped_ratio, rewards/NAME/mean and /std.

Checks, on a GQA 2:1 tied f32 and a 3:1 untied bf16-stored model: the loss,
every LoRA gradient and every metric within harness.fp32_bound for each
case; the prompt computed once for its G completions (shared) = apart, f32
within the bound of two computations and bf16 at cosine >= 0.9999; the
CUDA backend (emulated) with --zen-emu; bad completions files in one line.
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402
from zen_files import (make_config, read_adapter, read_model_dir, read_safetensors, write_adapter,  # noqa: E402
                       write_model)

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BF16_COS = 0.9999


def token_logps(model, prompt, completion, t, grad=True):
    """per-token log-probabilities and entropies of the completion after the prompt, logits divided by t"""
    seq = list(prompt) + list(completion)
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx:
        logits = model.logits(torch.tensor([seq[:-1]]))[0][len(prompt) - 1:] / t
        lp = torch.log_softmax(logits, -1)
        tok = lp.gather(1, torch.tensor(completion)[:, None])[:, 0]
        ent = -(lp.exp() * lp).sum(-1)
    return tok, ent.detach()


def trl_loss(groups, logps, ref_logps, o):
    """TRL's GRPO loss and metrics of one micro-batch that is the whole step (one process, no accumulation):
    groups [(prompt, [completion dict])], logps / ref_logps [[tensor per completion]]"""
    G = len(groups[0][1])
    rewards = torch.tensor([[np.nan if c["reward"] is None else c["reward"] for c in cs] for _, cs in groups],
                           dtype=torch.float64)
    mean = torch.nanmean(rewards, 1, keepdim=True)
    std = torch.tensor([[np.nanstd(r.numpy(), ddof=1) if np.sum(~np.isnan(r.numpy())) > 1 else np.nan]
                        for r in rewards], dtype=torch.float64)
    adv = rewards - mean
    if o["scale_rewards"] == "group":
        adv = adv / (torch.nan_to_num(std, nan=0.0) + 1e-4)
    elif o["scale_rewards"] == "batch":
        flat = rewards[~torch.isnan(rewards)]
        adv = adv / (flat.std() + 1e-4)
    adv = torch.nan_to_num(adv, nan=0.0)
    eps_low, eps_high = o["epsilon"], o.get("epsilon_high") or o["epsilon"]
    terms, masks, kls, lows, highs = [], [], [], [], []
    for g, (_, cs) in enumerate(groups):
        for k, c in enumerate(cs):
            l = logps[g][k]
            old = torch.tensor(c["old_logps"], dtype=torch.float64) if "old_logps" in c else l.detach()
            m = torch.zeros_like(l) if (o.get("mask_truncated") and c.get("truncated")) else torch.ones_like(l)
            log_ratio = l - old
            if o["level"] == "sequence":
                log_ratio = ((log_ratio * m).sum() / m.sum().clamp(min=1.0)).expand_as(l)
            rho = torch.exp(log_ratio)
            a = adv[g, k]
            rt = torch.clamp(rho, max=o["delta"]) if o.get("delta") else rho
            L = -torch.minimum(rt * a, torch.clamp(rho, 1 - eps_low, 1 + eps_high) * a)
            if o["beta"] > 0:
                d = ref_logps[g][k] - l
                kl = torch.exp(d) - d - 1
                L = L + o["beta"] * kl
                kls.append(kl)
            terms.append(L)
            masks.append(m)
            lows.append(((rho < 1 - eps_low) & (a < 0)).double())
            highs.append(((rho > 1 + eps_high) & (a > 0)).double())
    n_tokens = sum(m.sum() for m in masks)
    lt = o["loss_type"]
    if lt == "dapo":
        loss = sum((L * m).sum() for L, m in zip(terms, masks)) / n_tokens
    elif lt == "grpo":
        loss = sum((L * m).sum() / m.sum().clamp(min=1.0) for L, m in zip(terms, masks)) / len(terms)
    elif lt == "bnpo":
        loss = sum((L * m).sum() for L, m in zip(terms, masks)) / n_tokens.clamp(min=1.0)
    else:  # dr_grpo
        loss = sum((L * m).sum() for L, m in zip(terms, masks)) / (len(terms) * o["max_completion_length"])
    lengths = [len(c["ids"]) for _, cs in groups for c in cs]
    tmean = lambda xs: float(sum((x * m).sum() for x, m in zip(xs, masks)) / n_tokens)
    std_rep = torch.nan_to_num(std, nan=0.0).expand(-1, G)
    metrics = {"reward": float(torch.nanmean(rewards)), "reward_std": float(std_rep.mean()),
               "frac_reward_zero_std": float(torch.isclose(std.expand(-1, G), torch.zeros(1, dtype=torch.float64))
                                             .double().mean()),
               "entropy": tmean([e for es in o["_ent"] for e in es]),
               "clip_ratio/low_mean": tmean(lows), "clip_ratio/high_mean": tmean(highs),
               "clip_ratio/region_mean": tmean([a + b - a * b for a, b in zip(lows, highs)]),
               "completions/mean_length": float(np.mean(lengths)), "completions/min_length": float(min(lengths)),
               "completions/max_length": float(max(lengths)),
               "completions/clipped_ratio": float(np.mean([bool(c.get("truncated")) for _, cs in groups for c in cs]))}
    if o["beta"] > 0:
        metrics["kl"] = tmean(kls)
    names = sorted({n for _, cs in groups for c in cs for n in c.get("rewards", {})})
    for n in names:
        v = np.array([np.nan if c.get("rewards", {}).get(n) is None else c["rewards"][n] for _, cs in groups
                      for c in cs])
        metrics[f"rewards/{n}/mean"] = float(np.nanmean(v))
        metrics[f"rewards/{n}/std"] = float(np.nanstd(v, ddof=1))
    return loss, metrics


def reference(cfg, weights, acfg, adapter, groups, o, ref_adapter=None):
    pol = Qwen3LoraReference(cfg, weights, acfg, adapter)
    ref = Qwen3LoraReference(cfg, weights, *ref_adapter) if ref_adapter else Qwen3LoraReference(cfg, weights)
    logps, ref_logps, ents = [], [], []
    for p, cs in groups:
        row, rrow, erow = [], [], []
        for c in cs:
            l, e = token_logps(pol, p, c["ids"], o["temperature"])
            row.append(l)
            erow.append(e)
            if o["beta"] > 0:
                rrow.append(token_logps(ref, p, c["ids"], o["temperature"], grad=False)[0])
        logps.append(row)
        ref_logps.append(rrow)
        ents.append(erow)
    o = dict(o, _ent=ents)
    loss, metrics = trl_loss(groups, logps, ref_logps, o)
    loss.backward()
    # the size of the terms behind the loss: its first-order sensitivity to every token's log-probability
    flat = torch.cat([l.detach() for row in logps for l in row])
    sizes = [len(l) for row in logps for l in row]

    def f(x):
        parts = list(torch.split(x, sizes))
        it = iter(parts)
        return trl_loss(groups, [[next(it) for _ in row] for row in logps], ref_logps, o)[0]
    terms = harness.terms_of(f, flat)
    return loss.item(), {k: v.grad.numpy() for k, v in pol.lora.items()}, metrics, terms


def write_completions(path, groups):
    with open(path, "w") as f:
        for p, cs in groups:
            f.write(json.dumps({"prompt_ids": p, "completions": cs}) + "\n")


def make_groups(rng, V, n_groups, G, T, with_old=None, named=False, nulls=False, truncated=False, equal=False):
    groups = []
    for g in range(n_groups):
        P = int(rng.integers(2, 7))
        cs = []
        for k in range(G):
            c = {"ids": rng.integers(0, V, int(rng.integers(1, T - P + 1))).tolist(),
                 "reward": float(rng.integers(0, 3)) * 0.5}
            if equal and g == 0:
                c["reward"] = 1.0
            if nulls and g == 1 and k == 0:
                c["reward"] = None
            if named:
                c["rewards"] = {"answer": c["reward"], "format": None if k == 1 else float(k % 2)}
            if truncated and k == G - 1:
                c["truncated"] = True
            cs.append(c)
        groups.append((rng.integers(0, V, P).tolist(), cs))
    return groups


def printed(p):
    return dict((l.split()[0], float(l.split()[1])) for l in p.stdout.splitlines())


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(36)
    cfg_a = make_config(hidden=32, inter=48, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=64, tied=True)
    write_model(w("ma"), cfg_a, rng, "F32")
    cfg_b = make_config(hidden=48, inter=40, layers=2, heads=6, kv_heads=2, head_dim=12, vocab=50, tied=False)
    write_model(w("mb"), cfg_b, rng, "BF16")
    T, G = 12, 4
    base_o = {"temperature": 1.0, "scale_rewards": "group", "epsilon": 0.2, "epsilon_high": None, "delta": None,
              "level": "token", "beta": 0.0, "loss_type": "dapo", "max_completion_length": 16, "mask_truncated": False}
    for name, cfg in (("a", cfg_a), ("b", cfg_b)):
        V = cfg["vocab_size"]
        write_adapter(w("pol" + name), cfg, r=4, alpha=8, targets=ALL, rng=rng, b_scale=0.4)
        write_adapter(w("ref" + name), cfg, r=4, alpha=8, targets=ALL, rng=rng, b_scale=0.4)
        _, weights = read_model_dir(w("m" + name))
        acfg, adapter = read_adapter(w("pol" + name))
        ref_ad = read_adapter(w("ref" + name))
        pol = Qwen3LoraReference(cfg, weights, acfg, adapter)
        cases = [
            ("dapo-group-t0.7", dict(temperature=0.7), {}, [], dict(named=True)),
            ("grpo-batch-old-epshigh", dict(loss_type="grpo", scale_rewards="batch", epsilon_high=0.28), {"old": 0.3},
             ["--set", "grpo.epsilon_high=0.28"], dict(nulls=True)),
            ("bnpo-none-delta-beta-base", dict(loss_type="bnpo", scale_rewards="none", delta=1.5, beta=0.04),
             {"old": 0.5}, ["--set", "grpo.delta=1.5", "--set", "grpo.beta=0.04", "--reference", "base"],
             dict(equal=True)),
            ("dr_grpo-gspo-beta-refadapter", dict(loss_type="dr_grpo", level="sequence", beta=0.1, temperature=1.3),
             {"old": 0.2}, ["--set", "grpo.importance_sampling_level=sequence", "--set", "grpo.beta=0.1",
                            "--reference", w("ref" + name)], dict(named=True)),
            ("dapo-masked-truncated-old", dict(mask_truncated=True), {"old": 0.4},
             ["--set", "grpo.mask_truncated_completions=true"], dict(truncated=True, nulls=True))]
        for rname, ov, old, args, gen in cases:
            o = dict(base_o, **ov)
            groups = make_groups(rng, V, 3, G, T, **gen)
            if old:  # old log-probabilities: the current ones moved by noise, so rho != 1 (clipped in places)
                for p_, cs in groups:
                    for c in cs:
                        l, _ = token_logps(pol, p_, c["ids"], o["temperature"], grad=False)
                        c["old_logps"] = np.minimum(l.numpy() + rng.normal(0, old["old"], len(l)), -1e-3).tolist()
            path = w(f"{name}-{rname}.jsonl")
            write_completions(path, groups)
            zargs = ["--model", w("m" + name), "--adapter", w("pol" + name), "--completions", path, "--seq-len",
                     str(T), "--batch", "3", "--dtype", "f32", "--objective", "grpo", "--set",
                     f"grpo.num_generations={G}", "--set", f"grpo.temperature={o['temperature']}", "--set",
                     f"grpo.scale_rewards={o['scale_rewards']}", "--set", f"grpo.loss_type={o['loss_type']}",
                     "--set", f"grpo.max_completion_length={o['max_completion_length']}", *args]
            out = w(f"{name}-{rname}.st")
            p = subprocess.run([zen, "grad", *zargs, "--out", out], capture_output=True, text=True)
            label = f"model {name} {rname}"
            if p.returncode:
                harness.check(label, False, p.stderr.strip()[-300:])
                continue
            got = printed(p)
            grads = read_safetensors(out)[0]
            ref_pair = ref_ad if "refadapter" in rname else None
            loss, ref_grads, metrics, terms = reference(cfg, weights, acfg, adapter, groups, o, ref_pair)
            rows = sum(2 * len(p_) + sum(len(c["ids"]) for c in cs) for p_, cs in groups) * G
            length = harness.model_length(cfg, T)
            oks, worst = [], (0.0, "")
            for k, v in metrics.items():  # each metric: counts exactly, the rest within the bound of its size
                err = abs(got.get(k, np.inf) - v) if not (np.isnan(v) and np.isnan(got.get(k, 0))) else 0.0
                ok, text = harness.fp32_close(f"{label}: {k}", err, max(abs(v), 1.0), length)
                oks.append(ok)
                if not ok or err > worst[0]:
                    worst = (err if ok else np.inf, f"{k} {text}")
            harness.check_against_reference(f"{label}: loss {loss:.6f}", got["loss"], loss, grads, ref_grads, cfg, T,
                                            rows, loss_terms=terms, extra_ok=all(oks),
                                            extra=f"metrics ({len(metrics)}): worst {worst[1]}")
            if rname == "dapo-group-t0.7":
                pa = subprocess.run([zen, "grad", *zargs, "--pair-layout", "apart", "--out", out + ".apart"],
                                    capture_output=True, text=True)
                ga = read_safetensors(out + ".apart")[0] if not pa.returncode else {}
                ok, text = harness.grads_close(f"{label}: shared = apart", grads, ga,
                                               harness.model_length(cfg, T, rows), results=2)
                harness.check(f"{label}: the prompt once for its {G} completions = {G} sequences apart (f32)", ok,
                              text)
                bz = [w(f"{name}-bf16-{lay}.st") for lay in ("shared", "apart")]
                pb = [subprocess.run([zen, "grad", *zargs, "--dtype", "bf16",
                                      "--pair-layout", lay, "--out", f], capture_output=True, text=True)
                      for lay, f in zip(("shared", "apart"), bz)]
                if pb[0].returncode == 2 and "native bf16" in pb[0].stderr:
                    print(f"SKIP bf16 shared = apart: {pb[0].stderr.strip()}")
                elif pb[0].returncode or pb[1].returncode:
                    harness.check(f"{label}: bf16 shared = apart", False, (pb[0].stderr + pb[1].stderr)[-300:])
                else:
                    g0, g1 = read_safetensors(bz[0])[0], read_safetensors(bz[1])[0]
                    a = np.concatenate([g0[k].ravel() for k in sorted(g0)])
                    b = np.concatenate([g1[k].ravel() for k in sorted(g0)])
                    cos = float(a @ b / np.sqrt((a @ a) * (b @ b)))
                    harness.check(f"{label}: the prompt once = apart (bf16)", cos >= BF16_COS, f"cosine {cos:.7f}")
                if harness.zen_emu:
                    pe = subprocess.run([harness.zen_emu, "grad", *zargs, "--device", "cuda", "--out", out + ".cuda"],
                                        capture_output=True, text=True)
                    ge = read_safetensors(out + ".cuda")[0] if not pe.returncode else {}
                    ok, text = harness.grads_close(f"{label}: CUDA (emulated) f32", ge, ref_grads,
                                                   harness.model_length(cfg, T, rows))
                    harness.check(f"{label}: CUDA (emulated) f32 against the reference", ok,
                                  text + (pe.stderr.strip()[-200:] if pe.returncode else ""))
    # bad completions files: one line naming file:line, exit 2
    bad = {"short": {"prompt_ids": [1, 2], "completions": [{"ids": [3], "reward": 1}]},
           "no-reward": {"prompt_ids": [1, 2], "completions": [{"ids": [3]}] * G},
           "bad-old": {"prompt_ids": [1, 2], "completions": [{"ids": [3, 4], "reward": 1, "old_logps": [-1]}] * G},
           "bad-id": {"prompt_ids": [1, 2], "completions": [{"ids": [3, 99], "reward": 1}] * G}}
    for bname, rec in bad.items():
        with open(w(f"bad-{bname}.jsonl"), "w") as f:
            f.write(json.dumps(rec) + "\n")
        p = subprocess.run([zen, "grad", "--model", w("ma"), "--completions", w(f"bad-{bname}.jsonl"), "--seq-len",
                            str(T), "--objective", "grpo", "--set", f"grpo.num_generations={G}", "--out",
                            w("bad.st")], capture_output=True, text=True)
        err = p.stderr.strip().splitlines()
        harness.check(f"bad completions file ({bname}): one line naming the line, exit 2",
                      p.returncode == 2 and len(err) == 1 and f"bad-{bname}.jsonl:1" in err[0],
                      err[0] if err else f"exit {p.returncode}")
    harness.finish()


if __name__ == "__main__":
    main()
