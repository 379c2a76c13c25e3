#!/usr/bin/env python3
"""tests/reference/test_documents.py: documents kept whole.

1. `zen data --pack T` with Qwen3's real tokenizer on a chat corpus of mixed
   lengths (multi-turn, think blocks, some conversations longer than T):
   - every document of the unpacked file appears exactly once, whole, with
     the same tokens and loss mask (the assistant-only mask, think blocks and
     <|im_end|> included);
   - none of at most T tokens straddles two windows; a longer one starts a
     window and fills consecutive ones;
   - padding is the pad token (<|endoftext|>) with mask 0, in documents of its
     own that end their window; the file holds W * T + 1 tokens and says
     packed_seq_len = T;
   - the same --seed gives the same file, another seed another order of the
     same documents; the padding share it prints is the file's.
2. On a tiny model: `zen eval` on a packed file equals the float64 reference
   (documents from /doc_offsets: positions restart, attention stays inside
   each, no loss across a boundary), and `zen grad` on it agrees within harness.fp32_bound.
3. A packed file read with another sequence length is refused in one line by
   grad, eval and train.
4. `zen train` reports real (masked-in) tokens/s beside tokens/s."""
import collections
import json
import os
import re
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, finish, run  # noqa: E402
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402
from zen_files import (read_adapter, read_batch, read_docs, read_model_dir, read_safetensors, write_adapter,  # noqa: E402
                       write_model)

LLAMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "llama")
ENDOFTEXT = 151643
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def chat_corpus(path, rng, n, words, scales):
    """n conversations: 1-3 turns of up to a random choice of scales words, some
    assistant turns with a think block"""
    with open(path, "w") as f:
        for i in range(n):
            scale = rng.choice(scales)
            turns = []
            for _ in range(int(rng.integers(1, 4))):
                say = lambda k: " ".join(rng.choice(words, int(rng.integers(1, k + 1))))  # noqa: E731
                answer = say(scale)
                if rng.random() < 0.3:
                    answer = f"<think>\n{say(scale)}\n</think>\n\n{answer}"
                turns += [{"role": "user", "content": say(scale)}, {"role": "assistant", "content": answer}]
            if i % 7 == 0:
                turns.insert(0, {"role": "system", "content": "Be brief."})
            f.write(json.dumps({"messages": turns}) + "\n")


def read_file(path):
    with h5py.File(path) as f:
        return f["tokens"][:], f["loss_mask"][:], f["doc_offsets"][:], dict(f.attrs)


def check_packed(name, packed, plain_docs, T, pad_id):
    tokens, mask, off, attrs = read_file(packed)
    n = len(tokens)
    W = (n - 1) // T
    check(f"{name}: packed_seq_len {T} and W*T + 1 tokens", attrs.get("packed_seq_len") == T and n == W * T + 1,
          f"({n} tokens, {W} windows)")
    docs, pads, straddle, long_bad = [], 0, 0, 0
    pad_ok = True
    for a, b in zip(off[:-1], off[1:]):
        t, m = tokens[a:b], mask[a:b]
        if len(t) and (t == pad_id).all() and not m.any():  # padding
            pads += b - a if a < W * T else 0
            pad_ok &= (b % T == 0 and a // T == (b - 1) // T) or (a == W * T and b == n)
            continue
        docs.append((tuple(t.tolist()), tuple(m.tolist())))
        if b - a <= T:
            straddle += a // T != (b - 1) // T
        else:
            long_bad += a % T != 0
    want = collections.Counter((tuple(t), tuple(m)) for t, m in plain_docs)
    got = collections.Counter(docs)
    check(f"{name}: every document exactly once, whole (tokens and mask)", got == want,
          f"({sum(got.values())} placed, {sum(want.values())} in the unpacked file)")
    check(f"{name}: no document of <= {T} tokens straddles windows", straddle == 0, f"({straddle} do)")
    n_long = sum(len(t) > T for t, _ in plain_docs)
    check(f"{name}: each longer document starts a window", long_bad == 0, f"({n_long} longer than {T})")
    check(f"{name}: padding is pad id {pad_id}, mask 0, its own documents at window ends", pad_ok)
    return tokens, mask, off, pads / (W * T), n_long


def printed_share(stderr):
    m = re.search(r"padding ([0-9.]+)%", stderr)
    return float(m.group(1)) / 100 if m else None


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(12)
    words = ["alpha", "beta", "gamma", "delta", "prime", "seven", "the", "a", "of", "sum", "is", "zen", "why", "42",
             "é", "数据", "ok", ".", ",", "?"]

    # ---- 1. packing with the real tokenizer ----
    os.makedirs(w("tok"))
    run(["node", os.path.join(LLAMA_DIR, "tokenize.mjs"), "--dump-config", w("tok")], cwd=LLAMA_DIR)
    chat_corpus(w("chat.jsonl"), rng, 400, words, [3, 10, 30, 120])
    data = [zen, "data", "--tokenizer", w("tok"), "--in", w("chat.jsonl"), "--format", "messages"]
    run(data + ["--out", w("plain.h5")])
    plain_docs = read_docs(w("plain.h5"))
    T = 256
    p1 = run(data + ["--out", w("pack1.h5"), "--pack", str(T), "--seed", "1"])
    tok1, mask1, off1, share, n_long = check_packed("--pack 256", w("pack1.h5"), plain_docs, T, ENDOFTEXT)
    lengths = [len(t) for t, _ in plain_docs]
    print(f"     corpus: {len(plain_docs)} conversations, {min(lengths)}-{max(lengths)} tokens "
          f"(median {int(np.median(lengths))}); padding share {100 * share:.2f}%, {n_long} split")
    shown = printed_share(p1.stderr)
    check("the printed padding share is the file's", shown is not None and abs(shown - share) < 5e-5,
          f"(printed {shown}, file {share:.6f})")
    check("think blocks and <|im_end|> are kept and trained on where the unpacked file has them",
          any(151667 in t and m[t.index(151667)] for t, m in plain_docs) and
          sum(t.count(151645) for t, _ in plain_docs) == int((tok1 == 151645).sum()))
    run(data + ["--out", w("pack1b.h5"), "--pack", str(T), "--seed", "1"])
    tok1b, mask1b, off1b, _ = read_file(w("pack1b.h5"))
    check("the same --seed gives the same file", np.array_equal(tok1, tok1b) and np.array_equal(mask1, mask1b) and
          np.array_equal(off1, off1b))
    run(data + ["--out", w("pack2.h5"), "--pack", str(T), "--seed", "2"])
    tok2 = check_packed("--pack 256 --seed 2", w("pack2.h5"), plain_docs, T, ENDOFTEXT)[0]
    check("another seed, another order", len(tok2) == len(tok1) and not np.array_equal(tok1, tok2))
    # a short T: most conversations are longer than a window
    check_packed("--pack 16", (run(data + ["--out", w("pack16.h5"), "--pack", "16"]), w("pack16.h5"))[1],
                 plain_docs, 16, ENDOFTEXT)

    # ---- 2. eval and grad on a packed file against the reference ----
    # the tiny preset's shapes, untied, with weights large enough that the
    # context matters (with zen init's, documents barely change the loss), and
    # zen init's byte-level tokenizer
    run([zen, "init", "--preset", "tiny", "--seed", "4", "--out", w("init")])
    cfg, _ = read_model_dir(w("init"))
    cfg["tie_word_embeddings"] = False
    write_model(w("model"), cfg, rng, "F32", std=0.3)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(w("init", name), w("model", name))
    chat_corpus(w("small.jsonl"), rng, 60, ["ab", "cd", "e", "fgh", "zen"], [1, 1, 2, 4, 30])
    T = 96
    run([zen, "data", "--tokenizer", w("model"), "--in", w("small.jsonl"), "--format", "messages",
         "--out", w("small.h5"), "--pack", str(T), "--seed", "3"])
    with h5py.File(w("small.h5")) as f:
        S = (f["tokens"].shape[0] - 1) // T
    cfg, weights = read_model_dir(w("model"))
    out = run([zen, "eval", "--model", w("model"), "--data", w("small.h5"), "--seq-len", str(T), "--batch", "3",
               "--dtype", "f32"])
    got = float(out.stdout.split()[1])
    inputs, targets, masks, docs = read_batch(w("small.h5"), T, S)
    want = Qwen3LoraReference(cfg, weights).loss(inputs, targets, masks, docs).item()
    plain = Qwen3LoraReference(cfg, weights).loss(inputs, targets, masks).item()
    # ignoring the documents must miss the bound by a margin, or the check says nothing
    ok, text = harness.fp32_close("zen eval on a packed file equals the reference", abs(got - want), abs(want),
                                  harness.model_length(cfg, T))
    bound = harness.fp32_bound(abs(want), harness.model_length(cfg, T))
    check("zen eval on a packed file equals the reference (and ignoring the documents would not)",
          ok and abs(plain - want) > bound,
          f"(zen {got:.8f}, reference {want:.8f}, documents ignored {plain:.8f}; {S} sequences) {text}")
    write_adapter(w("adapter"), cfg, r=4, alpha=8, targets=ALL, rng=rng)
    run([zen, "grad", "--model", w("model"), "--adapter", w("adapter"), "--data", w("small.h5"), "--seq-len", str(T),
         "--batch", "4", "--dtype", "f32", "--out", w("g.safetensors")])
    grads, meta = read_safetensors(w("g.safetensors"))
    acfg, adapter = read_adapter(w("adapter"))
    ref_loss, ref_grads = Qwen3LoraReference(cfg, weights, acfg, adapter).loss_and_grads(*read_batch(w("small.h5"), T, 4))
    harness.check_against_reference("zen grad on a packed file agrees with the reference", float(meta["loss"]),
                                    ref_loss, grads, ref_grads, cfg, T, 4 * T)

    # ---- 3. another seq_len is refused ----
    for cmd in (["grad", "--model", w("model"), "--data", w("small.h5"), "--seq-len", "48", "--out", w("x.st")],
                ["eval", "--model", w("model"), "--data", w("small.h5"), "--seq-len", "48"]):
        p = run([zen] + cmd, expect=2)
        lines = p.stderr.strip().splitlines()
        check(f"zen {cmd[0]} --seq-len 48 on a file packed for 96: one line", len(lines) == 1 and
              "packed for seq_len 96" in lines[0], f"({lines[-1] if lines else ''})")
    with open(w("train.json"), "w") as f:
        json.dump({"seq_len": 48, "batch_size": 2, "max_steps": 2}, f)
    p = run([zen, "train", w("train.json"), "--model", w("model"), "--data", w("small.h5"), "--out", w("run48")],
            expect=2)
    lines = p.stderr.strip().splitlines()
    check("zen train with seq_len 48 on a file packed for 96: one line, nothing written",
          len(lines) == 1 and "packed for seq_len 96" in lines[0] and not os.path.exists(w("run48", "metrics.jsonl")),
          f"({lines[-1] if lines else ''})")

    # ---- 4. real tokens/s ----
    with open(w("train.json"), "w") as f:
        json.dump({"seq_len": T, "batch_size": 2, "max_steps": 3, "log_every": 1}, f)
    run([zen, "train", w("train.json"), "--model", w("model"), "--data", w("small.h5"), "--out", w("run96")])
    with open(w("run96", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    check("metrics report real tokens/s (masked-in targets) beside tokens/s",
          all(0 < r["real_tokens_per_s"] <= r["tokens_per_s"] for r in rows) and
          sum(r["real_tokens_per_s"] for r in rows) < sum(r["tokens_per_s"] for r in rows),
          f"({rows[0]['real_tokens_per_s']:.0f} of {rows[0]['tokens_per_s']:.0f} at step 1)")
    finish()


if __name__ == "__main__":
    main()
