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
import random
import re
import shutil
import signal
import subprocess
import sys
import time

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


REWARD_COMMAND = """import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
fail_after = int(open(os.path.join(here, "fail")).read()) if os.path.exists(os.path.join(here, "fail")) else None
seen = 0
with open(os.path.join(here, "inputs.jsonl"), "a") as log:
    for line in sys.stdin:
        x = json.loads(line)
        seen += 1
        if fail_after is not None and seen > fail_after:
            sys.exit(3)
        log.write(line)
        log.flush()
        digit = any(ch.isdigit() for ch in x["completion"])
        print(json.dumps({"short": -len(x["completion_ids"]) / 16,
                          "digit": 1.0 if digit else (None if x["sample"] == 0 else 0.0)}), flush=True)
"""


def last_number(text):
    """the answer reward's default extraction, written apart: the contents of the last \\boxed{} (no nesting here),
    else the last number (a leading minus kept, thousands commas dropped)"""
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
    if boxed:
        return boxed[-1].strip()
    nums = re.findall(r"-?(?<![\d.,])\d(?:\d|[.,](?=\d))*", text)
    return nums[-1].replace(",", "") if nums else None


MPIRUN = harness.MPIRUN  # (the sanitizer build's ranks skip leak checks: harness.py says why)
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")  # equal thread counts, equal sums


def check_ranks(zen, w, base):
    """2 ranks with grad_accum 1 against one process with grad_accum 2: the same draws, rewards (a command on
    each rank), metrics, samples.jsonl and adapter, bit for bit"""
    if harness.mpi_missing(zen):
        return
    one = subprocess.run(base + ["--out", w("np1")], capture_output=True, text=True, env=ONE_THREAD)
    two = subprocess.run(MPIRUN + ["-np", "2"] + base + ["--out", w("np2"), "--set", "grad_accum=1"],
                         capture_output=True, text=True, env=ONE_THREAD, timeout=600)
    read = lambda d, f: open(os.path.join(d, f), "rb").read() if os.path.exists(os.path.join(d, f)) else None
    metrics = lambda d: [{k: v for k, v in json.loads(l).items() if k not in ("tokens_per_s", "real_tokens_per_s",
                                                                              "elapsed_s") and "timing/" not in k}
                         for l in open(os.path.join(d, "metrics.jsonl"))]
    same = one.returncode == 0 and two.returncode == 0 and \
        read(w("np1"), "adapter_model.safetensors") == read(w("np2"), "adapter_model.safetensors") and \
        read(w("np1"), "samples.jsonl") == read(w("np2"), "samples.jsonl") and metrics(w("np1")) == metrics(w("np2"))
    harness.check("2 ranks (grad_accum 1) = one process (grad_accum 2) bit for bit: draws, rewards, metrics, "
                  "samples.jsonl, adapter", same, (one.stderr + two.stderr)[-300:] if not same else "")


def check_training(zen, w):
    """zen data --format prompts, then zen train with objective grpo: sampling in the loop, built-in and command
    rewards, TRL's metrics and eval_ ones, samples.jsonl, resume, a failing reward command, num_iterations"""
    run = lambda cmd, **kw: subprocess.run(cmd, capture_output=True, text=True, **kw)
    p = run([zen, "init", "--preset", "tiny", "--seed", "3", "--out", w("tiny")])
    assert p.returncode == 0, p.stderr
    rnd = random.Random(5)
    recs = []
    for i in range(24):
        a = rnd.randrange(10)
        prompt = f"Count to {a}:" if i % 2 else [{"role": "user", "content": f"Say {a}"}]
        recs.append({"prompt": prompt, "answer": str(a), "id": i})
    with open(w("p.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    p = run([zen, "data", "--tokenizer", w("tiny"), "--in", w("p.jsonl"), "--format", "prompts", "--out", w("p.h5")])
    info = run([zen, "info", w("p.h5")])
    harness.check("zen data --format prompts: strings and chat lists, the records' fields kept; zen info names them",
                  p.returncode == 0 and "24 prompts" in p.stderr and "24 prompts (root attribute prompt_records" in
                  info.stdout and "/record_json" in info.stdout, (p.stderr + info.stdout).strip()[-400:])
    os.makedirs(w("cmd"), exist_ok=True)
    script = w("cmd", "reward.py")
    with open(script, "w") as f:
        f.write(REWARD_COMMAND)
    G, B, A = 4, 2, 2
    with open(w("grpo.json"), "w") as f:
        json.dump({"objective": "grpo", "seq_len": 72, "batch_size": B, "grad_accum": A, "max_steps": 4,
                   "save_every": 2, "log_every": 1, "lr": 1e-3, "dtype": "f32", "val_fraction": 0.25,
                   "eval_every": 2, "grpo": {"num_generations": G, "max_completion_length": 12},
                   "rewards": [{"name": "answer"},
                               {"name": "command", "argv": ["/usr/bin/python3", script], "outputs": ["short", "digit"],
                                "timeout_s": 60}],
                   "reward.weights": [1.0, 0.5, 0.25]}, f)
    base = [zen, "train", w("grpo.json"), "--model", w("tiny"), "--data", w("p.h5")]
    p = run(base + ["--out", w("run")])
    lines = [json.loads(l) for l in open(w("run", "metrics.jsonl"))] if p.returncode == 0 else []
    trl = ["loss", "reward", "reward_std", "frac_reward_zero_std", "entropy", "clip_ratio/low_mean",
           "clip_ratio/high_mean", "clip_ratio/region_mean", "completions/mean_length", "completions/min_length",
           "completions/max_length", "completions/clipped_ratio", "rewards/answer/mean", "rewards/answer/std",
           "rewards/command.short/mean", "rewards/command.digit/std"]
    want = set(trl) | {"eval_" + k for k in trl}
    harness.check("grpo training: TRL's metrics and their eval_ on the held-out prompts logged at every step",
                  len(lines) == 4 and want <= set().union(*lines), p.stderr[-400:] if p.returncode else
                  f"missing {sorted(want - set().union(*lines))}")
    samples = [json.loads(l) for l in open(w("run", "samples.jsonl"))] if p.returncode == 0 else []
    weights = {"answer": 1.0, "command.short": 0.5, "command.digit": 0.25}
    bad = []
    for s in samples:  # every completion's rewards, computed apart from zen's
        rec = recs[s["index"]]
        for c in s["completions"]:
            want_answer = 1.0 if last_number(c["completion"]) is not None and \
                float(last_number(c["completion"])) == float(rec["answer"]) else 0.0
            named = c["rewards"]
            total = sum(weights[k] * v for k, v in named.items() if v is not None)
            if named["answer"] != want_answer or abs(c["reward"] - total) > 1e-12:
                bad.append((s["step"], c["completion"], named, c["reward"]))
    harness.check("samples.jsonl: each logged step's prompts, G completions each, the answer reward as computed "
                  "apart and the reward the weighted sum of the non-null ones (TRL's nansum)",
                  len(samples) == 4 * B * A and all(len(s["completions"]) == G for s in samples) and not bad,
                  f"{len(samples)} lines; {bad[:2]}")
    fed = [json.loads(l) for l in open(w("cmd", "inputs.jsonl"))] if os.path.exists(w("cmd", "inputs.jsonl")) else []
    ok = fed and all(set(x) == {"prompt", "completion", "completion_ids", "record", "group", "sample"} and
                     x["record"] == recs[x["group"]] and 0 <= x["sample"] < G for x in fed)
    harness.check("the reward command reads a line per completion with the prompt, the completion, its ids, "
                  "the record's fields, the group and the sample", ok, f"{len(fed)} lines, first {fed[:1]}")
    harness.check_resume("grpo: a resumed run equals the uninterrupted one bit for bit", base, w("run"), 4)
    same = lambda f: open(w("run", f), "rb").read() == open(w("run-resumed", f), "rb").read()
    harness.check("grpo: the resumed run's samples.jsonl (its steps 3-4 dropped, then drawn again) is the "
                  "uninterrupted one's", same("samples.jsonl"))
    # the reward command crashes in step 2: one line naming it and the record, a checkpoint, then --resume
    with open(w("cmd", "fail"), "w") as f:
        f.write(str(B * A * G + 3))
    p = run(base + ["--out", w("crash")])
    err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    harness.check("a reward command that crashes: one line naming it, the record and its last answer; exit 2; "
                  "the last good step checkpointed",
                  p.returncode == 2 and f"reward command '/usr/bin/python3 {script}' ended (exit status 3)" in err and
                  "record" in err and "it printed last" in err and "checkpoint-1 (continue with --resume)" in err and
                  os.path.isdir(w("crash", "checkpoint-1")), err or f"exit {p.returncode}")
    os.remove(w("cmd", "fail"))
    p = run(base + ["--out", w("crash"), "--resume"])
    adapter = lambda d: open(os.path.join(d, "adapter_model.safetensors"), "rb").read() \
        if os.path.exists(os.path.join(d, "adapter_model.safetensors")) else b""
    harness.check("fixed, --resume: nothing lost, the adapter of the run that never failed",
                  p.returncode == 0 and adapter(w("crash")) == adapter(w("run")), p.stderr[-300:])
    # num_iterations 2: each generation batch serves two steps, and checkpoints fall at a batch's start
    p = run(base + ["--out", w("mu"), "--set", "grpo.num_iterations=2", "--set", "save_every=3"])
    harness.check("grpo.num_iterations 2 with save_every 3: one line naming the key, exit 2",
                  p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "save_every" in p.stderr,
                  p.stderr.strip())
    p = run(base + ["--out", w("mu"), "--set", "grpo.num_iterations=2", "--set", "max_steps=6"])
    ms = [json.loads(l) for l in open(w("mu", "samples.jsonl"))] if p.returncode == 0 else []
    by = {}
    for s in ms:
        by.setdefault(s["step"], []).append((s["index"], s["completions"]))
    mu_ok = len(by) == 6 and all(by[k] == by[k + 1] and by[k] != by[k + 2 if k < 5 else 1] for k in (1, 3, 5))
    ml = [json.loads(l) for l in open(w("mu", "metrics.jsonl"))] if p.returncode == 0 else []
    # the second step of a batch: rho != 1 after the first step's update, so its loss is -mean(rho A) != 0
    moved = ml and all(abs(ml[k]["loss"]) > 1e-6 > abs(ml[k - 1]["loss"]) for k in (1, 3, 5))
    harness.check("grpo.num_iterations 2: steps 1-2, 3-4, 5-6 share their completions; the second step's ratios "
                  "move off 1", mu_ok and moved, p.stderr[-300:] if p.returncode else
                  f"losses {[round(x['loss'], 6) for x in ml]}")
    harness.check_resume("grpo.num_iterations 2: resumed = uninterrupted", base + ["--set", "grpo.num_iterations=2",
                         "--set", "max_steps=6"], w("mu"), 6)
    # zen eval --prompts: the mean answer reward of greedy completions, against zen generate's and our own scoring
    ev = run([zen, "eval", "--model", w("tiny"), "--adapter", w("run"), "--prompts", w("p.h5"), "--reward",
              '[{"name": "answer"}]', "--max-new-tokens", "12"])
    got = printed(ev) if ev.returncode == 0 else {}
    gen = run([zen, "generate", "--model", w("tiny"), "--adapter", w("run"), "--prompts", w("p.jsonl"),
               "--temperature", "0", "--max-new-tokens", "12", "--out", w("greedy.jsonl")])
    scored = []
    if gen.returncode == 0:
        for line in open(w("greedy.jsonl")):
            x = json.loads(line)
            text = x["samples"][0]["text"]
            n = last_number(text)
            scored.append(1.0 if n is not None and float(n) == float(recs[x["index"]]["answer"]) else 0.0)
    harness.check("zen eval --prompts: the mean reward of greedy completions, as zen generate's scored apart",
                  scored and abs(got.get("reward", -1) - sum(scored) / len(scored)) < 1e-9 and
                  abs(got.get("rewards/answer/mean", -1) - sum(scored) / len(scored)) < 1e-9,
                  f"eval {got} apart {sum(scored)}/{len(scored)} {(ev.stderr + gen.stderr)[-300:]}")
    # DoRA on an NF4 base: GRPO trains, and resumes bit for bit, as the other objectives do
    dq = base + ["--base-quant", "nf4", "--set", "lora.dora=true"]
    p = run(dq + ["--out", w("dora-nf4")])
    harness.check("grpo with DoRA on an NF4 base: 4 steps", p.returncode == 0 and
                  os.path.exists(w("dora-nf4", "adapter_model.safetensors")), p.stderr[-300:])
    harness.check_resume("grpo with DoRA on an NF4 base: resumed = uninterrupted", dq, w("dora-nf4"), 4)
    # a GGUF base (the tiny model exported f32, its tokenizer inside): the same draws and rewards as the directory
    e = run([zen, "export", "--model", w("tiny"), "--format", "gguf", "--dtype", "f32", "--out", w("tiny.gguf")])
    short = ["--set", "max_steps=1", "--set", "eval_every=0"]
    g = run([zen, "train", w("grpo.json"), "--model", w("tiny.gguf"), "--data", w("p.h5"), "--out", w("gguf")] + short)
    d = run(base + ["--out", w("dir1")] + short)
    draws = lambda r: open(os.path.join(r, "samples.jsonl"), "rb").read() if os.path.exists(os.path.join(r, "samples.jsonl")) else None
    harness.check("grpo on a GGUF base: its draws, rewards and adapter those of the same weights in a directory",
                  e.returncode == 0 and g.returncode == 0 and d.returncode == 0 and draws(w("gguf")) == draws(w("dir1"))
                  and open(w("gguf", "adapter_model.safetensors"), "rb").read() ==
                  open(w("dir1", "adapter_model.safetensors"), "rb").read(), (e.stderr + g.stderr)[-300:])
    # SIGINT mid-run: a checkpoint of the step it stopped at, exit 130, and --resume gives the uninterrupted run
    long = base + ["--set", "max_steps=16", "--set", "save_every=0", "--set", "eval_every=0"]
    p = run(long + ["--out", w("sig-full")])
    proc = subprocess.Popen(long + ["--out", w("sig")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = w("sig", "metrics.jsonl")
    while proc.poll() is None and not (os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    proc.wait()
    last = err.strip().splitlines()[-1] if err.strip() else ""
    stopped = proc.returncode == 130 and "stopped by SIGINT" in last and "--resume" in last
    r = run(long + ["--out", w("sig"), "--resume"])
    same = lambda f: os.path.exists(w("sig", f)) and open(w("sig", f), "rb").read() == open(w("sig-full", f), "rb").read()
    harness.check("grpo: SIGINT mid-run stops with a checkpoint (exit 130); --resume gives the uninterrupted run's "
                  "adapter and samples.jsonl", p.returncode == 0 and stopped and r.returncode == 0 and
                  same("adapter_model.safetensors") and same("samples.jsonl"), f"{proc.returncode} {last} {r.stderr[-200:]}")
    check_ranks(zen, w, base)
    if harness.zen_emu:  # CUDA (emulated): one short step draws the CPU's completions (the same streams)
        short = ["--set", "max_steps=1", "--set", "grad_accum=1", "--set", "eval_every=0", "--set",
                 "grpo.max_completion_length=4", "--set", "seq_len=64"]
        pc = run(base + ["--out", w("cpu1")] + short)
        pe = run([harness.zen_emu] + base[1:] + ["--out", w("cuda1"), "--set", "device=cuda"] + short)
        draws = lambda d: [json.loads(l) for l in open(os.path.join(d, "samples.jsonl"))]
        same = pc.returncode == 0 and pe.returncode == 0 and draws(w("cpu1")) == draws(w("cuda1"))
        harness.check("CUDA (emulated): zen train grpo runs a step, its draws and rewards the CPU's", same,
                      (pc.stderr + pe.stderr)[-300:])


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
           "bad-id": {"prompt_ids": [1, 2], "completions": [{"ids": [3, 99], "reward": 1}] * G},
           "longer-than-max_completion_length": {"prompt_ids": [1, 2],
                                                 "completions": [{"ids": [3, 4, 5], "reward": 1}] * G}}
    for bname, rec in bad.items():
        with open(w(f"bad-{bname}.jsonl"), "w") as f:
            f.write(json.dumps(rec) + "\n")
        p = subprocess.run([zen, "grad", "--model", w("ma"), "--completions", w(f"bad-{bname}.jsonl"), "--seq-len",
                            str(T), "--objective", "grpo", "--set", f"grpo.num_generations={G}", "--set",
                            "grpo.max_completion_length=2", "--out", w("bad.st")], capture_output=True, text=True)
        err = p.stderr.strip().splitlines()
        harness.check(f"bad completions file ({bname}): one line naming the line, exit 2",
                      p.returncode == 2 and len(err) == 1 and f"bad-{bname}.jsonl:1" in err[0],
                      err[0] if err else f"exit {p.returncode}")
    # the largest group seq_len allows (a 1-token prompt, G completions of T - 1) fits the micro-batch zen plans:
    # the prompt once and G completions, T + (G - 1)(T - 1) = 45 rows, rounded up to 4 sequences of 12
    big = {"prompt_ids": [1], "completions": [{"ids": list(range(2, 2 + T - 1)), "reward": float(k)}
                                              for k in range(G)]}
    with open(w("big.jsonl"), "w") as f:
        f.write(json.dumps(big) + "\n")
    grpo_args = ["--objective", "grpo", "--set", f"grpo.num_generations={G}", "--set", "grpo.max_completion_length=16"]
    p = subprocess.run([zen, "grad", "--model", w("ma"), "--completions", w("big.jsonl"), "--seq-len", str(T),
                        *grpo_args, "--out", w("big.st")], capture_output=True, text=True)
    plan = subprocess.run([zen, "grad", "--plan", "--model", w("ma"), "--seq-len", str(T), *grpo_args],
                          capture_output=True, text=True)
    harness.check("the largest group fits the planned micro-batch: 48 rows (45 laid out), 48 attention rows",
                  p.returncode == 0 and "a micro-batch's rows: 48 " in plan.stdout and "attention rows 48" in plan.stdout,
                  (p.stderr + plan.stdout + plan.stderr).strip()[-400:])
    check_training(zen, w)
    harness.finish()


if __name__ == "__main__":
    main()
