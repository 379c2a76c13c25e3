#!/usr/bin/env python3
"""tests/reference/test_generate.py: `zen generate` (KV cache, adapter unmerged)
against the float64 reference, which recomputes the whole prefix every step.

On a GQA and an MHA model, each with a non-zero adapter on all seven targets,
f32 compute:
- greedy (temperature 0) from prompt ids, 48 new tokens: the same ids as the
  reference's greedy;
- the logits each token was chosen from (--save-logits) equal the reference's
  full-sequence forward at that position within harness.fp32_bound (terms:
  the norm of the step's logits; length: the positions): the cache gives
  what a full forward gives, across the prefill/decode boundary;
- the adapter changes them (it is applied);
- bf16 compute (a bf16 cache): the logits equal zen eval's bf16 forward of
  the same sequence (the training forward's rounding), within 5e-2 of f32;
- sampling: the same seed gives the same ids, top-k 1 gives greedy's;
- llama.cpp's greedy (node-llama-cpp) on zen's merged f32 GGUF of the GQA
  model gives the same tokens;
- --chat: the logits of two turns equal one forward over the conversation;
- sample_every in zen train writes samples.jsonl, and the last step's greedy
  sample equals zen generate with the final adapter;
- a prompt id outside the vocabulary is one line, exit 2."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import byte_tokenizer  # noqa: E402
import harness  # noqa: E402
from harness import check, run  # noqa: E402
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402
from zen_files import (MODULES, make_config, read_adapter, read_model_dir, read_safetensors, write_adapter,  # noqa: E402
                       write_model, write_tokens)

NEW = 48
LLAMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "llama")


def main():
    zen, work, w = harness.setup()
    emu = harness.zen_emu
    rng = np.random.default_rng(41)
    cases = [("gqa4:1", make_config(hidden=64, inter=96, layers=2, heads=4, kv_heads=1, head_dim=16, vocab=300,
                                    tied=True)),
             ("mha-untied", make_config(hidden=48, inter=64, layers=3, heads=3, kv_heads=3, head_dim=16, vocab=70,
                                        tied=False))]
    for name, cfg in cases:
        mdir, adir = w(name), w(name + "-adapter")
        write_model(mdir, cfg, rng, "F32", std=0.3, embed_std=1.0, head_std=0.5)
        write_adapter(adir, cfg, r=4, alpha=8, targets=list(MODULES), rng=rng, b_scale=0.3)
        prompt = [int(t) for t in rng.integers(0, cfg["vocab_size"], 7)]
        base = [zen, "generate", "--model", mdir, "--prompt-ids", ",".join(map(str, prompt)), "--max-new-tokens",
                str(NEW), "--ids", "--ignore-eos", "--dtype", "f32"]
        out = run(base + ["--adapter", adir, "--temperature", "0", "--save-logits", w(name + ".st")]).stdout
        ids = [int(t) for t in out.split(",")]
        zlogits = read_safetensors(w(name + ".st"))[0]["logits"]
        mcfg, weights = read_model_dir(mdir)
        acfg, adapter = read_adapter(adir)
        ref = Qwen3LoraReference(mcfg, weights, acfg, adapter)
        seq, ref_ids, worst = list(prompt), [], 0.0
        with torch.no_grad():
            for step in range(NEW):  # the whole prefix every step
                logits = ref.logits(torch.as_tensor(np.array([seq])))[0, -1].numpy()
                nxt = int(np.argmax(logits))
                ref_ids.append(nxt)
                if step < len(zlogits):
                    worst = max(worst, np.linalg.norm(zlogits[step] - logits) / np.linalg.norm(logits))
                seq.append(ids[step] if step < len(ids) else nxt)  # follow zen's tokens: compare logits position by position
        check(f"{name}: greedy, {NEW} new tokens, identical to the reference's greedy", ids == ref_ids,
              f"({sum(a == b for a, b in zip(ids, ref_ids))}/{NEW} equal)")
        # each step's ||zen - ref|| against the norm of its logits, over the positions it attends
        ok, text = harness.fp32_close(f"{name}: KV-cache logits = full-sequence forward at every step", worst, 1.0,
                                      harness.model_length(cfg, len(prompt) + NEW))
        check(f"{name}: KV-cache logits = full-sequence forward at every step", len(zlogits) == NEW and ok,
              f"(worst step, relative to its logits' norm: {text})")
        plain = run(base + ["--temperature", "0", "--save-logits", w(name + "-plain.st")]).stdout
        pl = read_safetensors(w(name + "-plain.st"))[0]["logits"]
        check(f"{name}: the adapter is applied (unmerged): logits change",
              np.abs(pl[0] - zlogits[0]).max() > 1e-3, f"({np.abs(pl[0] - zlogits[0]).max():.2e}; {plain.strip()[:20]}...)")
        s1 = run(base + ["--adapter", adir, "--temperature", "1", "--seed", "5"]).stdout
        s2 = run(base + ["--adapter", adir, "--temperature", "1", "--seed", "5"]).stdout
        s3 = run(base + ["--adapter", adir, "--temperature", "1", "--seed", "6"]).stdout
        k1 = run(base + ["--adapter", adir, "--temperature", "1", "--top-k", "1", "--seed", "9"]).stdout
        check(f"{name}: sampling: same seed same ids, another seed others, top-k 1 = greedy",
              s1 == s2 and s1 != s3 and k1 == out)
        if emu:  # the CUDA backend's decoding on the emulator: the same tokens and logits
            cuda = run([emu] + base[1:] + ["--adapter", adir, "--temperature", "0", "--device", "cuda", "--save-logits",
                                          w(name + "-cuda.st")]).stdout
            cl = read_safetensors(w(name + "-cuda.st"))[0]["logits"]
            err = max(np.linalg.norm(cl[i] - zlogits[i]) / np.linalg.norm(zlogits[i]) for i in range(len(zlogits)))
            ok, text = harness.fp32_close(f"{name}: CUDA (emulated) generation = the CPU's: logits", err, 1.0,
                                          harness.model_length(cfg, len(prompt) + NEW), results=2)
            check(f"{name}: CUDA (emulated) generation = the CPU's: tokens, and logits", cuda == out and ok, text)
        # bf16 compute: a bf16 cache, q and the probabilities rounded as the training forward rounds them,
        # so decoding gives zen eval's bf16 logits of the whole sequence (the training forward)
        b16 = run([("bf16" if a == "f32" else a) for a in base] + ["--adapter", adir, "--temperature", "0",
                                                                    "--save-logits", w(name + "-bf16.st")], expect=None)
        if b16.returncode == 2 and "bf16" in b16.stderr:
            print(f"SKIP {name}: bf16 generation: {b16.stderr.strip()}")
        else:
            check(f"{name}: bf16 generation runs", b16.returncode == 0, b16.stderr[-300:])
            bl = read_safetensors(w(name + "-bf16.st"))[0]["logits"]
            bids = [int(t) for t in b16.stdout.split(",")]
            seq = prompt + bids
            write_tokens(w(name + "-bf16.h5"), np.array(seq + [0], dtype=np.int64), cfg["vocab_size"])
            run([zen, "eval", "--model", mdir, "--adapter", adir, "--data", w(name + "-bf16.h5"), "--seq-len",
                 str(len(seq)), "--batch", "1", "--dtype", "bf16", "--save-logits", w(name + "-eval16.st")])
            ev = read_safetensors(w(name + "-eval16.st"))[0]["logits"]
            run([zen, "eval", "--model", mdir, "--adapter", adir, "--data", w(name + "-bf16.h5"), "--seq-len",
                 str(len(seq)), "--batch", "1", "--dtype", "f32", "--save-logits", w(name + "-eval32.st")])
            ev32 = read_safetensors(w(name + "-eval32.st"))[0]["logits"]  # f32 on the tokens bf16 chose
            at = len(prompt) - 1  # eval's row t predicts token t + 1: the first new token's logits are row at
            errs = [np.linalg.norm(bl[i] - ev[at + i]) / np.linalg.norm(ev[at + i]) for i in range(len(bl))]
            d32 = max(np.linalg.norm(bl[i] - ev32[at + i]) / np.linalg.norm(ev32[at + i]) for i in range(len(bl)))
            # the same rounding points; sums in another order (oneDNN's tiles, the fast exp) can flip a bf16
            # rounding now and then, which moves a step's logits by ~1e-3: most steps must agree to fp32
            # rounding, none by more than bf16's
            fp32 = harness.fp32_bound(1.0, harness.model_length(cfg, len(prompt) + NEW), results=2)
            ok, text = harness.fp32_close(f"{name}: bf16 KV-cache logits = zen eval's bf16 forward: median step",
                                          float(np.median(errs)), 1.0, harness.model_length(cfg, len(prompt) + NEW),
                                          results=2)
            check(f"{name}: bf16 KV-cache logits = zen eval's bf16 forward (the median step within the fp32 bound, "
                  "the worst <= 2e-2)", len(bl) == NEW and ok and max(errs) <= 2e-2,
                  f"({text}, worst {max(errs):.1e}, {sum(e <= fp32 for e in errs)}/{NEW} within the fp32 bound)")
            check(f"{name}: bf16 logits within 5e-2 of f32's and rounded (differ by > 1e-4)", 1e-4 < d32 <= 5e-2,
                  f"({d32:.1e})")
        if cfg["vocab_size"] >= 259:  # llama.cpp's greedy on zen's merged f32 GGUF (it needs a tokenizer)
            byte_tokenizer.write(mdir)
            run([zen, "export", "--model", mdir, "--adapter", adir, "--format", "gguf", "--dtype", "f32", "--out",
                 w(name + ".gguf")])
            seq = prompt + ids[:-1]
            cmd = ["node", os.path.join(LLAMA_DIR, "probs.mjs"), w(name + ".gguf"), ",".join(map(str, seq))]
            probs = np.array(json.loads(run(cmd, cwd=LLAMA_DIR).stdout)["probs"])
            llama_ids = [int(np.argmax(probs[i])) for i in range(len(prompt) - 1, len(seq))]
            check(f"{name}: llama.cpp's greedy on zen's merged f32 GGUF gives the same tokens", llama_ids == ids,
                  f"({sum(a == b for a, b in zip(llama_ids, ids))}/{NEW} equal)")
    # ChatML: --messages renders as zen data does, plus the generation prompt; --chat keeps the cache
    m = w("chat-model")  # zen init's toy tokenizer: bytes, and <|endoftext|>, <|im_start|>, <|im_end|> = 256-258
    run([zen, "init", "--preset", "small", "--seed", "2", "--out", m])
    conv = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]}
    with open(w("conv.json"), "w") as f:
        json.dump(conv, f)
    with open(w("conv.jsonl"), "w") as f:
        f.write(json.dumps(conv) + "\n")
    run([zen, "data", "--tokenizer", m, "--in", w("conv.jsonl"), "--format", "messages", "--out", w("conv.h5"),
         "--train-on-prompt"])
    from zen_files import read_docs
    rendered = read_docs(w("conv.h5"))[0][0]
    rendered = rendered[:-1] if rendered[-1] == 256 else rendered  # without the document separator
    gen_prompt = [257] + list(b"assistant\n")   # <|im_start|> is 257 in the byte tokenizer
    common = ["--max-new-tokens", "6", "--temperature", "0", "--ids", "--ignore-eos", "--dtype", "f32"]
    for think, extra in (("", []), ("--no-think", list(b"<think>\n\n</think>\n\n"))):
        got = run([zen, "generate", "--model", m, "--messages", w("conv.json")] + ([think] if think else []) +
                  common).stdout.strip()
        want = run([zen, "generate", "--model", m, "--prompt-ids",
                    ",".join(map(str, rendered + gen_prompt + extra))] + common).stdout.strip()
        check(f"--messages {think or '(thinking)'}: the prompt zen data renders + Qwen3's generation prompt",
              got == want and got, f"({got})")
    turn = lambda text: [257] + list(b"user\n" + text.encode()) + [258] + list(b"\n")
    p = subprocess.run([zen, "generate", "--model", m, "--chat"] + common, input="Hello\nAgain\n",
                       capture_output=True, text=True)
    answers = [l for l in p.stdout.splitlines() if l.strip()]
    first = [int(t) for t in answers[0].split(",")] if answers else []
    conv2 = turn("Hello") + gen_prompt + first + [258] + list(b"\n") + turn("Again") + gen_prompt
    want = run([zen, "generate", "--model", m, "--prompt-ids", ",".join(map(str, conv2))] + common).stdout.strip()
    check("--chat: the second turn continues the cache as the whole conversation at once would",
          p.returncode == 0 and len(answers) == 2 and answers[1] == want, f"({answers[-1:] if answers else p.stderr[-200:]})")
    # the logits of both turns (--save-logits keeps every turn's) = the training forward over the conversation
    p = subprocess.run([zen, "generate", "--model", m, "--chat", "--save-logits", w("chat.st")] + common,
                       input="Hello\nAgain\n", capture_output=True, text=True)
    cl = read_safetensors(w("chat.st"))[0]["logits"] if p.returncode == 0 else np.zeros((0, 1))
    second = [int(t) for t in answers[1].split(",")] if len(answers) == 2 else []
    whole = conv2 + second
    with open(os.path.join(m, "config.json")) as f:
        write_tokens(w("chat.h5"), np.array(whole, dtype=np.int64), json.load(f)["vocab_size"])
    run([zen, "eval", "--model", m, "--data", w("chat.h5"), "--seq-len", str(len(whole) - 1), "--batch", "1",
         "--dtype", "f32", "--save-logits", w("chat-eval.st")])
    ev = read_safetensors(w("chat-eval.st"))[0]["logits"]
    t1, t2 = len(turn("Hello") + gen_prompt) - 1, len(conv2) - 1  # rows whose logits chose each turn's first token
    rows = [t1 + i for i in range(len(first))] + [t2 + i for i in range(len(second))]
    worst = max((np.linalg.norm(cl[i] - ev[r]) / np.linalg.norm(ev[r]) for i, r in enumerate(rows)), default=1.0)
    with open(os.path.join(m, "config.json")) as f:
        chat_cfg = json.load(f)
    ok, text = harness.fp32_close("--chat: the logits of both turns = one forward over the whole conversation", worst,
                                  1.0, harness.model_length(chat_cfg, len(whole)), results=2)
    check("--chat: the logits of both turns = one forward over the whole conversation", len(cl) == len(rows) == 12
          and ok, f"({len(cl)} rows, worst relative to its logits' norm: {text})")
    # sample_every in training: samples.jsonl, and the last step's greedy = zen generate with the final adapter
    write_tokens(w("train.h5"), np.tile(np.frombuffer(b"In the beginning was the word. ", dtype=np.uint8), 60), 4096)
    with open(w("run.json"), "w") as f:
        json.dump({"seq_len": 64, "batch_size": 2, "max_steps": 6, "lr": 5e-3, "warmup_steps": 1, "log_every": 3,
                   "save_every": 0, "val_fraction": 0, "dtype": "f32", "sample_every": 3,
                   "sample_prompts": ["In the", "The word"]}, f)
    p = run([zen, "train", w("run.json"), "--model", m, "--data", w("train.h5"), "--out", w("srun")])
    with open(w("srun", "samples.jsonl")) as f:
        samples = [json.loads(l) for l in f]
    check("sample_every: samples.jsonl holds greedy and sampled continuations of each prompt every 3 steps",
          [(s["step"], s["prompt"]) for s in samples] == [(3, "In the"), (3, "The word"), (6, "In the"), (6, "The word")]
          and all(isinstance(s["greedy"], str) and isinstance(s["sampled"], str) for s in samples) and
          p.stderr.count("sample 1 (greedy)") == 2)
    final = run([zen, "generate", "--model", m, "--adapter", w("srun"), "--prompt", "In the", "--temperature", "0",
                 "--max-new-tokens", "48", "--dtype", "f32"]).stdout
    check("the last step's greedy sample = zen generate with the final adapter", final[:-1] == samples[2]["greedy"],
          f"({samples[2]['greedy'][:40]!r})")
    # an output that cannot be written fails before any work, in one line
    p = run([zen, "generate", "--model", m, "--prompt", "In the", "--max-new-tokens", "4", "--save-logits",
             "/proc/x/y/gl.safetensors"], expect=None)
    lines = p.stderr.strip().splitlines()
    check("--save-logits into a place that cannot be written: one line, exit 2, nothing generated first",
          p.returncode == 2 and len(lines) == 1 and "/proc/x" in lines[0] and p.stdout == "", f"{lines} {p.stdout!r}")
    # text (here the ids) without a final newline: the speed line still starts a line of its own (stdout and stderr in one pipe)
    p = subprocess.run([zen, "generate", "--model", m, "--prompt", "In the", "--max-new-tokens", "5", "--ignore-eos",
                        "--temperature", "0", "--ids"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check("the speed line starts a line of its own after the text", p.returncode == 0 and
          re.search(r"^zen generate: prompt \d+ tokens", p.stdout, re.M) is not None, repr(p.stdout[-200:]))
    p = run([zen, "generate", "--model", w("gqa4:1"), "--prompt-ids", "1,500", "--ids"], expect=None)
    lines = p.stderr.strip().splitlines()
    check("a prompt id outside the vocabulary: one line, exit 2", p.returncode == 2 and len(lines) == 1 and
          "500" in lines[0], lines[:1])
    harness.finish()


if __name__ == "__main__":
    main()
