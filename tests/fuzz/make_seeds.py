#!/usr/bin/env python3
"""tests/fuzz/make_seeds.py: writes the fuzzers' seed corpora
(tests/fuzz/corpus/TARGET/) and the BPE tokenizer two of them use
(tests/fuzz/tokenizer/), from the format descriptions and zen's own files.
The outputs are committed; run this again only to change them.

usage: /usr/bin/python3 tests/fuzz/make_seeds.py BUILD_DIR   (BUILD_DIR/zen is used)"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
from zen_files import write_safetensors  # noqa: E402


def corpus(target):
    """the seed directory of a target, emptied but for regress-* files (inputs
    that once found a bug, kept so that every fuzz run replays them)"""
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if not f.startswith("regress-"):
            os.remove(os.path.join(d, f))
    return lambda name, data: open(os.path.join(d, name), "wb").write(data if isinstance(data, bytes) else data.encode())


def bpe_tokenizer(zen, out_dir, n_merges=1500):
    """zen init's byte-level tokenizer (Qwen3's split regex, NFC, special
    tokens) with merges learned from the repository's README"""
    tmp = tempfile.mkdtemp()
    subprocess.run([zen, "init", "--preset", "small", "--out", os.path.join(tmp, "m")], check=True, capture_output=True)
    tok = json.load(open(os.path.join(tmp, "m", "tokenizer.json")))
    cfg = open(os.path.join(tmp, "m", "tokenizer_config.json")).read()
    shutil.rmtree(tmp)
    inv = {v: k for k, v in tok["model"]["vocab"].items()}
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    words = Counter()
    for w in text.replace("\n", " \n ").split(" "):
        if w:
            words[tuple(inv[b] for b in (" " + w).encode())] += 1
    vocab = dict(tok["model"]["vocab"])
    merges = []
    while len(merges) < n_merges:
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = pairs.most_common(1)[0]
        merges.append(f"{a} {b}")
        vocab.setdefault(a + b, len(vocab))
        merged = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    # the special tokens after the vocabulary, as HF numbers them
    for i, t in enumerate(tok["added_tokens"]):
        t["id"] = len(vocab) + i
    tok["model"]["vocab"] = vocab
    tok["model"]["merges"] = merges
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        f.write(cfg)
    return tok


def gguf(kvs, tensors, data, alignment=32):
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, t, payload in kvs:
        out += s(key) + struct.pack("<I", t) + payload
    for name, ne, t, off in tensors:
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne) + struct.pack("<IQ", t, off)
    out += b"\0" * (-len(out) % alignment)
    return out + data


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    zen = os.path.join(sys.argv[1], "zen")
    tok = bpe_tokenizer(zen, os.path.join(HERE, "tokenizer"))

    # tokenizer.json: a small one (the 1500-merge tokenizer itself is what
    # tokenizer_encode uses; as a seed it would only slow the loader's fuzzing)
    put = corpus("tokenizer_load")
    small = json.loads(json.dumps(tok))
    small["model"]["merges"] = small["model"]["merges"][:20]
    keep = set(list(small["model"]["vocab"])[:256]) | {m.replace(" ", "") for m in small["model"]["merges"]}
    small["model"]["vocab"] = {k: v for k, v in small["model"]["vocab"].items() if k in keep}
    ids = sorted(small["model"]["vocab"].values())
    small["model"]["vocab"] = {k: ids.index(v) for k, v in small["model"]["vocab"].items()}
    for i, t in enumerate(small["added_tokens"]):
        t["id"] = len(ids) + i
    put("small.json", json.dumps(small, ensure_ascii=False))

    put = corpus("tokenizer_encode")
    for i, t in enumerate(["Hello, world! It's 3.14159 o'clock.", "caf\u00e9 cafe\u0301 na\u00efve \u4e2d\u6587\u6587\u672c",
                           "<|im_start|>user\nhi<|im_end|>\n", "\t\tdef f(x):\n        return x ** 2\n\n\n",
                           "\U0001F600\U0001F600 emoji \u0645\u0631\u062d\u0628\u0627", " " * 200 + "x" * 300]):
        put(f"text{i}.txt", t)
    put("invalid.bin", b"ok \xff\xfe \xc3\x28 \xe2\x82")

    put = corpus("data_lines")
    lines = [(0, {"text": "a document\nwith two lines"}),
             (1, {"instruction": "Add 2 and 3.", "input": "", "output": "5"}),
             (1, {"instruction": "Translate", "input": "bonjour", "output": "hello"}),
             (2, {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "<think>\nplan\n</think>\n\nHello!"}]}),
             (2, {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}),
             (6, {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                               {"role": "user", "content": "z"}, {"role": "assistant", "content": "w"}]})]
    for i, (sel, rec) in enumerate(lines):
        put(f"line{i}", bytes([sel]) + json.dumps(rec).encode())

    tmp = tempfile.mkdtemp()
    model = os.path.join(tmp, "model")
    subprocess.run([zen, "init", "--preset", "tiny", "--out", model], check=True, capture_output=True)

    put = corpus("model_config")
    for p in sorted(os.listdir(os.path.join(ROOT, "configs", "presets"))):
        if p.endswith(".json"):
            put(p, open(os.path.join(ROOT, "configs", "presets", p)).read())
    put("written.json", open(os.path.join(model, "config.json")).read())

    # a training run: its adapter config, trainer state and recipe
    rng = np.random.default_rng(0)
    with h5py.File(os.path.join(tmp, "d.h5"), "w") as f:
        f["tokens"] = rng.integers(0, 256, 600).astype(np.int32)
        f.attrs["vocab_size"] = 256
    with open(os.path.join(tmp, "r.json"), "w") as f:
        json.dump({"seq_len": 16, "batch_size": 2, "max_steps": 2, "save_every": 2, "lora": {"dropout": 0.1}}, f)
    subprocess.run([zen, "train", os.path.join(tmp, "r.json"), "--model", model, "--data", os.path.join(tmp, "d.h5"),
                    "--out", os.path.join(tmp, "run")], check=True, capture_output=True)
    put = corpus("adapter_config")
    put("zen.json", open(os.path.join(tmp, "run", "adapter_config.json")).read())
    put("peft.json", json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
                                 "target_modules": "q_proj,v_proj", "bias": "none", "use_rslora": True,
                                 "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None}))
    put = corpus("trainer_state")
    put("state.json", open(os.path.join(tmp, "run", "checkpoint-2", "trainer_state.json")).read())
    put = corpus("run_config")
    put("recipe.json", open(os.path.join(ROOT, "configs", "lora-r8-a16.json")).read())
    put("resolved.json", open(os.path.join(tmp, "run", "train_config.json")).read())
    put("small.json", json.dumps({"model": "m", "data": "d.h5", "out_dir": "o", "val_data": "v.h5", "max_steps": 5,
                                  "lora": {"targets": ["q", "v"], "rslora": True}}))

    put = corpus("safetensors")
    put("adapter.safetensors", open(os.path.join(tmp, "run", "adapter_model.safetensors"), "rb").read())
    for name, dtype in (("f16", "F16"), ("bf16", "BF16")):
        path = os.path.join(tmp, f"{name}.safetensors")
        write_safetensors(path, {"a": np.ones((2, 3)), "b": np.arange(4.0), "empty": np.zeros((0,))}, dtype=dtype,
                          metadata={"format": "pt", "loss": "1.5"})
        put(f"{name}.safetensors", open(path, "rb").read())

    put = corpus("gguf")
    arch = ("general.architecture", 8, struct.pack("<Q", 5) + b"qwen3")
    strs = ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + b"".join(struct.pack("<Q", len(t)) + t
                                                                           for t in (b"a", b"bc", b"<|im_end|>")))
    ints = ("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, 1, 3))
    put("f32_q8.gguf", gguf([arch, ("general.alignment", 4, struct.pack("<I", 32)), strs, ints],
                            [("a", [32, 2], 0, 0), ("b", [32], 8, 256)], b"\x01" * 256 + b"\x02" * 34))
    put("kquant.gguf", gguf([arch, ("x.f", 6, struct.pack("<f", 1.5)), ("x.b", 7, b"\x01"),
                             ("x.u64", 10, struct.pack("<Q", 7))],
                            [("q4k", [256], 12, 0), ("q6k", [256, 2], 14, 160), ("f16", [4, 4], 1, 608)],
                            b"\0" * 640))
    put("empty.gguf", gguf([arch], [], b""))

    put = corpus("hdf5")
    def h5(name, build):
        path = os.path.join(tmp, name)
        with h5py.File(path, "w") as f:
            build(f)
        put(name, open(path, "rb").read())
    def zen_like(f):
        f.create_dataset("tokens", data=rng.integers(0, 256, 300).astype(np.int32), chunks=(64,), compression="gzip",
                         shuffle=True, maxshape=(None,))
        f.create_dataset("loss_mask", data=rng.integers(0, 2, 300).astype(np.uint8), chunks=(64,), maxshape=(None,))
        f.create_dataset("doc_offsets", data=np.array([0, 100, 250, 300], np.int64))
        f.attrs["vocab_size"] = np.int64(256)
    h5("chunked.h5", zen_like)
    def plain(f):
        f["tokens"] = np.arange(50, dtype=np.int32)
        f.attrs["vocab_size"] = 256
    h5("contiguous.h5", plain)
    def packed(f):  # zen data --pack 64: 3 windows and the closing pad token
        f.create_dataset("tokens", data=rng.integers(0, 256, 193).astype(np.int32), chunks=(64,), compression="gzip",
                         maxshape=(None,))
        f.create_dataset("loss_mask", data=(np.arange(193) % 5 != 0).astype(np.uint8), chunks=(64,), maxshape=(None,))
        f.create_dataset("doc_offsets", data=np.array([0, 40, 64, 100, 120, 128, 192, 193], np.int64))
        f.attrs["vocab_size"] = np.int64(256)
        f.attrs["packed_seq_len"] = np.int64(64)
    h5("packed.h5", packed)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
