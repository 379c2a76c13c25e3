#!/usr/bin/env python3
"""tests/reference/test_generate_batch.py: batched generation (`zen generate
--n G`, `--prompts FILE.jsonl`) against the single-sequence path (`zen
generate --prompt`, itself checked against the float64 reference by
test_generate.py), on a GQA 2:1 model with a non-zero adapter (and a DoRA
one), byte-level tokenizer, f32 compute:

1. greedy, prompts of 1 to 40 tokens (across the 16-position pages and the
   whole-prompt attention path), 2 samples each, decoded together: every
   sample's tokens equal the prompt run alone, and the logits each token was
   drawn from equal the single run's bit for bit (every op of a decode step
   computes each row on its own, kernels.h); the same with a DoRA adapter;
2. sampled (temperature 0.9, top-p 0.95), with a stop string so samples
   end at different steps and waiting ones join: the same file at
   --max-rows 1, 3 and 16 and with 1 and 2 threads; sample 0 of prompt 0
   equals `zen generate --prompt` with the same seed (its stream is (seed, 0,
   0)); the summed log-probability is the sum of the per-token ones of the
   logits saved;
3. a shared prompt (--n 8) against the same prompt 8 times: the same greedy
   tokens and log-probabilities, the prompt prefilled once, and less KV cache
   at its peak;
4. --resume: a file cut in the middle of a line continues to the bytes of
   the uninterrupted run; a run killed with SIGKILL too;
5. bad input, each one line and exit 2: a bad prompts line (naming
   file:line), --resume with another seed, an existing --out without
   --resume, a cache too small for one sample, --out without --n;
6. with --zen-emu, the CUDA backend (emulated): greedy the same tokens as
   the CPU, sampled the same file, bit for bit, at --max-rows 1 and 16.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import byte_tokenizer  # noqa: E402
import harness  # noqa: E402
from harness import check, run  # noqa: E402
from zen_files import MODULES, make_config, read_model_dir, read_safetensors, write_adapter, write_dora_adapter, write_model  # noqa: E402,E501

NEW = 24
SAMPLED = ["--temperature", "0.9", "--top-k", "0", "--top-p", "0.95", "--seed", "7"]


def summary(stderr):
    """the numbers of zen generate's summary line"""
    m = re.search(r"(\d+) prompts, (\d+) samples, (\d+) tokens .* prompts (\d+) tokens .* KV cache peak ([0-9.]+) (\w+)",
                  stderr)
    if not m:
        return {}
    scale = {"B": 1, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(6)]
    return {"prompts": int(m.group(1)), "samples": int(m.group(2)), "tokens": int(m.group(3)),
            "prefill": int(m.group(4)), "peak": float(m.group(5)) * scale}


def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f]


def main():
    zen, work, w = harness.setup()
    emu = harness.zen_emu
    rng = np.random.default_rng(35)
    cfg = make_config(hidden=64, inter=96, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=256, tied=True)
    model, adapter, dora = w("model"), w("adapter"), w("dora")
    write_model(model, cfg, rng, "F32", std=0.3, embed_std=1.0, head_std=1.0)
    byte_tokenizer.write(model)
    write_adapter(adapter, cfg, r=4, alpha=8, targets=list(MODULES), rng=rng, b_scale=0.3)
    write_dora_adapter(dora, cfg, read_model_dir(model)[1], r=4, alpha=8, targets=list(MODULES), rng=rng)
    letters = "abcdefghij klmnop"
    texts = ["".join(rng.choice(list(letters), n)) for n in (1, 3, 17, 40, 9, 16)]
    with open(w("prompts.jsonl"), "w") as f:
        for t in texts:
            f.write(json.dumps({"prompt": t}) + "\n")
    length = harness.model_length(cfg, 40 + NEW)
    common = ["--model", model, "--max-new-tokens", str(NEW), "--dtype", "f32", "--ignore-eos"]

    # ---- 1: greedy batches against each prompt alone ----
    for name, ad in (("LoRA", adapter), ("DoRA", dora)):
        out, logits = w(f"greedy-{name}.jsonl"), w(f"greedy-{name}.st")
        p = run([zen, "generate", *common, "--adapter", ad, "--prompts", w("prompts.jsonl"), "--n", "2",
                 "--temperature", "0", "--out", out, "--save-logits", logits])
        got, saved = lines(out), read_safetensors(logits)[0]
        same, exact, steps = True, True, 0
        for i, t in enumerate(texts):
            q = run([zen, "generate", *common, "--adapter", ad, "--prompt", t, "--temperature", "0", "--ids",
                     "--save-logits", w(f"alone-{name}-{i}.st")])
            alone = [int(x) for x in q.stdout.split(",")]
            single = read_safetensors(w(f"alone-{name}-{i}.st"))[0]["logits"]
            for k in range(2):
                same &= got[i]["samples"][k]["ids"] == alone
                batch = saved[f"logits.{i}.{k}"]
                exact &= batch.shape == single.shape and np.array_equal(batch, single)
                steps += len(batch)
        check(f"{name}: greedy, 6 prompts of 1-40 tokens x 2 samples decoded together = each prompt alone (tokens)",
              same and len(got) == len(texts), f"({sum(len(s['ids']) for l in got for s in l['samples'])} tokens)")
        check(f"{name}: the logits each token was drawn from = alone's, bit for bit", exact, f"({steps} steps)")

    # ---- 2: sampled, with samples ending at different steps: the same at any batch size and thread count ----
    sampled = [zen, "generate", *common, "--adapter", adapter, "--prompts", w("prompts.jsonl"), "--n", "3", *SAMPLED,
               "--stop", "e"]
    files = {}
    for rows in ("1", "3", "16"):
        for threads in ("1", "2"):
            out = w(f"sampled-{rows}-{threads}.jsonl")
            env = dict(os.environ, OMP_NUM_THREADS=threads)
            run(sampled + ["--out", out, "--max-rows", rows] + (["--save-logits", w("sampled.st")] if rows == "16"
                                                                and threads == "2" else []), env=env)
            files[(rows, threads)] = lines(out)
    ref = files[("16", "2")]
    tokens = lambda f: [[(s["ids"], s["finish"], s.get("text")) for s in l["samples"]] for l in f]
    finishes = {s["finish"] for l in ref for s in l["samples"]}
    check("sampled, samples ending early (stop) and late (length): the same tokens at --max-rows 1, 3 and 16, with 1 "
          "and 2 threads", all(tokens(f) == tokens(ref) for f in files.values()) and finishes == {"stop", "length"},
          f"(finish reasons {sorted(finishes)}; {len(ref) * 3} samples, rows 3 < samples: waiting ones join)")
    lp_ok = all(f == ref for f in files.values())  # the whole lines: texts, ids, log-probabilities
    saved = read_safetensors(w("sampled.st"))[0]
    recomputed = []
    for i, l in enumerate(ref):
        for k, s in enumerate(l["samples"]):
            lg = saved[f"logits.{i}.{k}"].astype(np.float64)
            lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
            recomputed.append(abs(sum(lg[t, s["ids"][t]] - lse[t] for t in range(len(s["ids"]))) - s["logprob"]))
    check("sampled: the summed log-probability is the saved logits' log-softmax of the tokens; every line the same "
          "(log-probabilities too) at every batch size and thread count", lp_ok and max(recomputed) < 1e-3, f"(largest difference {max(recomputed):.1e})")
    q = run([zen, "generate", *common, "--adapter", adapter, "--prompt", texts[0], *SAMPLED, "--ids"])
    alone = [int(x) for x in q.stdout.split(",")]
    first = ref[0]["samples"][0]["ids"]
    check("sample 0 of prompt 0 = zen generate --prompt with the same seed", alone[:len(first)] == first,
          f"({len(first)} tokens)")
    text = ref[0]["samples"][0]
    check("a stop string ends a sample; its text stops before it", all(
        ("e" not in s["text"]) for l in ref for s in l["samples"]), "")

    # ---- 3: a shared prompt against G copies ----
    G, prompt = 8, texts[3]
    with open(w("copies.jsonl"), "w") as f:
        for _ in range(G):
            f.write(json.dumps({"prompt": prompt}) + "\n")
    p1 = run([zen, "generate", *common, "--adapter", adapter, "--prompt", prompt, "--n", str(G), "--temperature", "0",
              "--out", w("shared.jsonl")])
    p2 = run([zen, "generate", *common, "--adapter", adapter, "--prompts", w("copies.jsonl"), "--temperature", "0",
              "--out", w("copies-out.jsonl")])
    a, b = summary(p1.stderr), summary(p2.stderr)
    same = [(s["ids"], s["logprob"]) for s in lines(w("shared.jsonl"))[0]["samples"]] == \
        [(l["samples"][0]["ids"], l["samples"][0]["logprob"]) for l in lines(w("copies-out.jsonl"))]
    check(f"a shared prompt (--n {G}) = {G} copies: the same tokens and log-probabilities; prefilled once; less KV "
          "cache",
          same and a and b and a["prefill"] * G == b["prefill"] and a["peak"] < b["peak"],
          f"(prefill {a.get('prefill')} vs {b.get('prefill')} tokens, cache peak {a.get('peak', 0) / 1024:.0f} vs "
          f"{b.get('peak', 0) / 1024:.0f} KiB)")

    # ---- 4: resume ----
    many = [json.dumps({"prompt": "".join(rng.choice(list(letters), int(rng.integers(2, 30))))}) for _ in range(24)]
    with open(w("many.jsonl"), "w") as f:
        f.write("\n".join(many) + "\n")
    cmd = [zen, "generate", *common, "--adapter", adapter, "--prompts", w("many.jsonl"), "--n", "2", *SAMPLED,
           "--max-new-tokens", "40"]
    run(cmd + ["--out", w("whole.jsonl")])
    whole = open(w("whole.jsonl"), "rb").read()
    cut = whole.index(b"\n", len(whole) // 3) + 40  # 40 bytes into a line
    with open(w("cut.jsonl"), "wb") as f:
        f.write(whole[:cut])
    shutil.copy(w("whole.jsonl.run.json"), w("cut.jsonl.run.json"))
    p = run(cmd + ["--out", w("cut.jsonl"), "--resume"])
    check("--resume of a file cut mid-line: the uninterrupted run's bytes", open(w("cut.jsonl"), "rb").read() == whole
          and "continuing with prompt" in p.stderr, p.stderr.strip().splitlines()[0] if p.stderr else "")
    proc = subprocess.Popen(cmd + ["--out", w("killed.jsonl")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 30 and proc.poll() is None:
        if os.path.exists(w("killed.jsonl")) and os.path.getsize(w("killed.jsonl")) > 0:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = os.path.getsize(w("killed.jsonl")) if os.path.exists(w("killed.jsonl")) else 0
    p = run(cmd + ["--out", w("killed.jsonl"), "--resume"])
    check("a run killed with SIGKILL, resumed: the uninterrupted run's bytes",
          open(w("killed.jsonl"), "rb").read() == whole, f"({kept} of {len(whole)} bytes written before the kill)")

    # ---- 5: bad input ----
    with open(w("bad.jsonl"), "w") as f:
        f.write(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": 3}) + "\n")
    bad = [("a prompt that is a number", ["--prompts", w("bad.jsonl"), "--n", "2"], "bad.jsonl:2"),
           ("--resume with another seed", ["--adapter", adapter, "--prompts", w("many.jsonl"), "--n", "2",
                                           "--dtype", "f32", "--ignore-eos", *SAMPLED[:-1], "8",
                                           "--max-new-tokens", "40", "--out", w("whole.jsonl"), "--resume"], "seed"),
           ("an existing --out without --resume", ["--prompts", w("many.jsonl"), "--n", "2", "--out", w("whole.jsonl")],
            "--resume"),
           ("--out without --n or --prompts", ["--prompt", "ab", "--out", w("x.jsonl")], "--out"),
           ("a KV cache too small for one sample", ["--model", w("wide"), "--prompt", "ab", "--n", "2",
                                                    "--max-new-tokens", "100", "--max-cache-mib", "1"],
            "--max-cache-mib")]
    # a model whose page of 16 positions is 512 KiB: 1 MiB holds 2 pages
    write_model(w("wide"), make_config(hidden=64, inter=64, layers=8, heads=8, kv_heads=8, head_dim=64, vocab=256,
                                       tied=True), rng, "F32")
    byte_tokenizer.write(w("wide"))
    for name, args, fragment in bad:
        p = run([zen, "generate", *(["--model", model] if "--model" not in args else []), *args], expect=None)
        err = p.stderr.strip().splitlines()
        check(f"{name}: one line, exit 2", p.returncode == 2 and len(err) == 1 and fragment in err[0],
              err[0] if err else f"exit {p.returncode}")

    # ---- 6: the CUDA backend, emulated ----
    if emu:
        run([emu, "generate", *common, "--adapter", adapter, "--prompts", w("prompts.jsonl"), "--n", "2",
             "--temperature", "0", "--device", "cuda", "--out", w("cuda-greedy.jsonl")])
        same = [[s["ids"] for s in l["samples"]] for l in lines(w("cuda-greedy.jsonl"))] == \
            [[s["ids"] for s in l["samples"]] for l in lines(w("greedy-LoRA.jsonl"))]
        check("CUDA (emulated): greedy batches, the CPU's tokens", same)
        outs = []
        for rows in ("1", "16"):
            run([emu, *sampled[1:], "--device", "cuda", "--max-rows", rows, "--out", w(f"cuda-sampled-{rows}.jsonl")])
            outs.append(lines(w(f"cuda-sampled-{rows}.jsonl")))
        check("CUDA (emulated): sampled, the same lines (log-probabilities too) at --max-rows 1 and 16",
              outs[0] == outs[1])
    harness.finish()


if __name__ == "__main__":
    main()
