#!/usr/bin/env python3
"""tests/reference/test_hostile.py: what a hostile user or a failing machine
does to zen, one regression check per finding of the probe (issue 17), and
the fault tests:

- forged files of every format: one line, exit 2, never a crash or a hang;
- a full disk while writing a dataset, a gradient file, a checkpoint, an
  export or a model: exit 1, nothing half-written left, older files intact;
- SIGINT and SIGTERM mid-run: a checkpoint, exit 130/143, and --resume gives
  exactly the losses and adapter of an uninterrupted run;
- a second run into a live run's directory is refused, a killed run's lock
  is not stale;
- an allocation failure injected into an op ends the run with one line,
  exit 1, and the last checkpoint resumes bit for bit.

The full-disk cases mount a small tmpfs (root); where that is not allowed
they are reported as skipped, not passed."""
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, run  # noqa: E402
from zen_files import read_safetensors, write_safetensors, write_tokens  # noqa: E402


def one_line_error(p, code=2):
    """the exit code and one error line (zen train's summary lines before it are not errors)"""
    lines = p.stderr.strip().splitlines()
    errors = [l for l in lines if "error:" in l]
    return p.returncode == code and len(errors) == 1 and errors[0] == lines[-1], (lines[-1] if lines else "")


def expect_error(name, cmd, fragment, code=2, env=None, timeout=60):
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        check(name, False, f"(hung for {timeout} s)")
        return None
    ok, line = one_line_error(p, code)
    check(name, ok and fragment in line, f"(exit {p.returncode}, {time.time() - t0:.1f} s) {line}")
    return p


@contextlib.contextmanager
def small_disk(path, size):
    """a tmpfs of `size` at path, or None where mounting is not allowed"""
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True)
    if p.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def skipped(name):
    print(f"SKIP {name} (cannot mount a small tmpfs here: not root?)")


def leftovers(d):
    return [f for f in os.listdir(d) if f.endswith((".tmp", ".partial"))] if os.path.isdir(d) else []


# ---------------- GGUF files written by hand ----------------

def gguf_bytes(kvs, tensors, alignment=32, version=3, n_kv=None, n_tensors=None, data=b""):
    """kvs: [(key, type, payload bytes)]; tensors: [(name, ne list, type, offset)]"""
    def s(x):
        b = x.encode() if isinstance(x, str) else x
        return struct.pack("<Q", len(b)) + b
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                len(kvs) if n_kv is None else n_kv)
    for key, t, payload in kvs:
        out += s(key) + struct.pack("<I", t) + payload
    for name, ne, t, off in tensors:
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", t, off)
    out += b"\0" * (-len(out) % alignment)
    return out + data


def u32(v):
    return struct.pack("<I", v)


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(17)
    run([zen, "init", "--preset", "tiny", "--seed", "2", "--out", w("model")])
    run([zen, "init", "--preset", "small", "--seed", "2", "--out", w("small")])
    write_tokens(w("data.h5"), rng.integers(0, 256, 4000), 256)

    # ---- 1. silent data loss: zen data onto a full disk; a corrupt file is refused ----
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz \n", np.uint8)
    text = letters[rng.integers(0, len(letters), 400_000)].tobytes()  # barely compressible
    with open(w("text.txt"), "wb") as f:
        f.write(text)
    with small_disk(w("full1"), "64k") as d:
        if d is None:
            skipped("zen data onto a full disk")
        else:
            p = run([zen, "data", "--tokenizer", w("model"), "--in", w("text.txt"), "--format", "text", "--out",
                     os.path.join(d, "d.h5")], expect=None)
            ok, line = one_line_error(p, 1)
            check("full disk: zen data exits 1 with one line, no file, no temp", ok and not os.listdir(d), line)
    with small_disk(w("full1p"), "64k") as d:
        if d is None:
            skipped("zen data --pack onto a full disk")
        else:
            p = run([zen, "data", "--tokenizer", w("model"), "--in", w("text.txt"), "--format", "text", "--out",
                     os.path.join(d, "d.h5"), "--pack", "64"], expect=None)
            ok, line = one_line_error(p, 1)
            check("full disk: zen data --pack exits 1 with one line, no file, no spill left", ok and not os.listdir(d),
                  line)
    for value, count, fragment in ((0, 129, "packed_seq_len"), (-3, 129, "packed_seq_len"), (64, 130, "multiple")):
        with h5py.File(w("packed.h5"), "w") as f:
            f["tokens"] = np.arange(count, dtype=np.int32) % 256
            f.attrs["vocab_size"] = 256
            f.attrs["packed_seq_len"] = value
        expect_error(f"packed_seq_len {value} over {count} tokens refused", [zen, "info", w("packed.h5")], fragment)
    with h5py.File(w("zeroed.h5"), "w") as f:  # what the old writer renamed into place
        f["tokens"] = np.zeros(100, np.int32)
        f["loss_mask"] = np.zeros(100, np.uint8)
        f["doc_offsets"] = np.array([0, 0], np.int64)
        f.attrs["vocab_size"] = 256
    expect_error("zen info refuses doc_offsets [0, 0] over 100 tokens", [zen, "info", w("zeroed.h5")], "/doc_offsets")
    with h5py.File(w("offsets.h5"), "w") as f:
        f["tokens"] = np.arange(100, dtype=np.int32)
        f["doc_offsets"] = np.array([0, 60, 40, 100], np.int64)
        f.attrs["vocab_size"] = 256
    expect_error("decreasing doc_offsets refused", [zen, "info", w("offsets.h5")], "/doc_offsets[2] = 40")
    # KTO files: /labels one 0 or 1 per record, and only where the records have labels
    for name, attr, labels, fragment in (("labels-short", "kto_records", [1], "/labels has 1 entries for 2 records"),
                                         ("labels-two", "kto_records", [1, 2], "/labels[1] = 2"),
                                         ("labels-none", "kto_records", None, "need /labels"),
                                         ("labels-pairs", "preference_pairs", [1], "records have no labels")):
        with h5py.File(w(name + ".h5"), "w") as f:
            f["tokens"] = np.arange(12, dtype=np.int32)
            f["loss_mask"] = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1], np.uint8)
            offsets = [0, 2, 4, 6, 8] if attr == "kto_records" else [0, 2, 4, 6]
            f["doc_offsets"] = np.array(offsets, np.int64)
            if labels is not None:
                f["labels"] = np.array(labels, np.uint8)
            f.attrs["vocab_size"] = 256
            f.attrs[attr] = 2 if attr == "kto_records" else 1
        expect_error(f"KTO file: {name} refused", [zen, "info", w(name + ".h5")], fragment)

    # ---- 2. SafeTensors with two __metadata__ objects ----
    header = ('{"__metadata__":{"a":"1"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
              '"__metadata__":{"b":"2","c":"3","d":"4"}}').encode()
    with open(w("twometa.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    expect_error("SafeTensors: two __metadata__ objects refused", [zen, "info", w("twometa.safetensors")],
                 "appears twice")

    # ---- 3. tokenizer.json ids ----
    with open(w("small", "tokenizer.json")) as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]

    def tokenizer_variant(name, edit):
        d = w(name)
        os.makedirs(d, exist_ok=True)
        t = json.loads(json.dumps(tok))
        edit(t)
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            json.dump(t, f)
        return d

    def data_ids(tok_dir, text_):
        with open(w("t.jsonl"), "w") as f:
            f.write(json.dumps({"text": text_}) + "\n")
        p = run([zen, "data", "--tokenizer", tok_dir, "--in", w("t.jsonl"), "--format", "jsonl", "--out", w("t.h5")],
                expect=None)
        if p.returncode:
            return None, p
        with h5py.File(w("t.h5")) as f:
            ids = f["tokens"][:].tolist()
        os.remove(w("t.h5"))
        return ids, p

    eot = next(a for a in tok["added_tokens"] if a["content"] == "<|endoftext|>")

    def gpt2_layout(t):  # the added token is also a vocabulary entry with the same id
        t["model"]["vocab"]["<|endoftext|>"] = eot["id"]
    ids, p = data_ids(tokenizer_variant("gpt2", gpt2_layout), "a<|endoftext|>b")
    check("tokenizer: an added token also in model.vocab (GPT-2's layout) works, no use-after-free",
          ids == [97, eot["id"], 98, eot["id"]], f"{ids} {p.stderr.strip()[-200:]}")
    for bad in (-1, 2**31 - 1, 1e308, 1e12, 2.5, "3"):
        def edit(t, bad=bad):
            t["added_tokens"][0]["id"] = bad
        d = tokenizer_variant("badid", edit)
        expect_error(f"tokenizer: added token id {bad!r} refused", [zen, "data", "--tokenizer", d, "--in", w("t.jsonl"),
                     "--format", "jsonl", "--out", w("t.h5")], "added token 0")
    for bad in (-7, 2**31 - 1, 1e12):
        def edit(t, bad=bad):
            t["model"]["vocab"]["a"] = bad
        d = tokenizer_variant("badvocab", edit)
        expect_error(f"tokenizer: vocab id {bad!r} refused", [zen, "data", "--tokenizer", d, "--in", w("t.jsonl"),
                     "--format", "jsonl", "--out", w("t.h5")], "vocab entry 'a'")

    def dup_vocab_id(t):
        t["model"]["vocab"]["zz"] = t["model"]["vocab"]["a"]
    expect_error("tokenizer: two vocabulary entries with one id refused", [zen, "data", "--tokenizer",
                 tokenizer_variant("dupid", dup_vocab_id), "--in", w("t.jsonl"), "--format", "jsonl", "--out",
                 w("t.h5")], "share id")
    # HF's rule for a new added token: the vocabulary size, whatever id the file lists
    new_id = len(vocab) + len(tok["added_tokens"])

    def wrong_listed_id(t):
        t["added_tokens"].append({"id": 5000, "content": "<|new|>", "single_word": False, "lstrip": False,
                                  "rstrip": False, "normalized": False, "special": True})
    ids, p = data_ids(tokenizer_variant("newtok", wrong_listed_id), "x<|new|>")
    check("tokenizer: a new added token takes HF's id (after the others), noted", ids == [120, new_id, eot["id"]] and
          "1 added tokens" in p.stderr, f"{ids} (expected [120, {new_id}, {eot['id']}])")

    # ---- 4. a full disk while the SafeTensors writer closes (the double fclose) ----
    with small_disk(w("full4"), "4k") as d:
        if d is None:
            skipped("zen grad --out onto a full disk")
        else:
            p = run([zen, "grad", "--model", w("model"), "--data", w("data.h5"), "--seq-len", "16", "--batch", "2",
                     "--out", os.path.join(d, "g.safetensors")], expect=None)
            ok, line = one_line_error(p, 1)
            check("full disk: zen grad --out exits 1 (no SIGABRT), nothing left", ok and not os.listdir(d), line)

    # ---- 5. resume hazards ----
    recipe = {"seq_len": 16, "batch_size": 2, "max_steps": 6, "save_every": 3, "log_every": 1, "lr": 1e-3}
    with open(w("r.json"), "w") as f:
        json.dump(recipe, f)
    base = [zen, "train", w("r.json"), "--model", w("model"), "--data", w("data.h5")]
    run(base + ["--out", w("r1")])
    p = expect_error("resume: every changed key is named", base + ["--out", w("r1"), "--resume", "--set", "lr=2e-3",
                     "--set", "lora.alpha=32", "--set", "schedule=linear"], "'lr'")
    check("resume: ... lr, lora.alpha and schedule all in the line", p is not None and all(
        k in p.stderr for k in ("'lr'", "'lora.alpha'", "'schedule'")))
    run(base + ["--out", w("r0"), "--set", "save_every=0"])
    check("save_every 0: the final checkpoint is written", os.path.exists(w("r0", "checkpoint-6", "trainer_state.json")))
    expect_error("a fresh run into a finished run's directory is refused", base + ["--out", w("r1")], "checkpoint-6")
    for c in os.listdir(w("r1")):
        if c.startswith("checkpoint-"):
            shutil.rmtree(w("r1", c))
    before = open(w("r1", "adapter_model.safetensors"), "rb").read()
    expect_error("--resume with no checkpoint next to a finished adapter is refused", base + ["--out", w("r1"),
                 "--resume"], "finished run")
    expect_error("a fresh run over a finished adapter is refused", base + ["--out", w("r1")], "finished run")
    check("... and the finished adapter is untouched", open(w("r1", "adapter_model.safetensors"), "rb").read() == before)
    p = run(base + ["--out", w("rnew"), "--resume"])
    check("--resume into an empty directory starts at step 0, saying so", "no checkpoint to resume from" in p.stderr)
    run(base + ["--out", w("r2"), "--set", "max_steps=3"])
    state_path = w("r2", "checkpoint-3", "trainer_state.json")
    state = json.load(open(state_path))
    for key, value, fragment in (("step", -5, "'step'"), ("step", 1e30, "'step'"), ("step", 1e15, "step"),
                                 ("step", 2.5, "'step'"), ("step", "3", "'step'"), ("epoch", 7, "epoch"),
                                 ("elapsed_s", -1, "'elapsed_s'"), ("format", "x", "trainer state")):
        bad = dict(state, **{key: value})
        with open(state_path, "w") as f:
            json.dump(bad, f)
        expect_error(f"tampered trainer_state.json: {key} = {value!r} refused", base + ["--out", w("r2"), "--resume",
                     "--set", "max_steps=3"], fragment)
    with open(state_path, "w") as f:
        json.dump(state, f)
    write_tokens(w("moving.h5"), rng.integers(0, 256, 4000), 256)
    mbase = [zen, "train", w("r.json"), "--model", w("model"), "--data", w("moving.h5"), "--out", w("r3")]
    run(mbase + ["--set", "max_steps=3"])
    write_tokens(w("moving.h5"), rng.integers(0, 256, 4100), 256)  # the same path, other data
    expect_error("--resume on data that changed under the same path is refused", mbase + ["--resume"], "4100 tokens")

    # ---- 6. crashes and hangs on small inputs ----
    run([zen, "data", "--tokenizer", w("model"), "--in", w("text.txt"), "--format", "text", "--out", w("d6.h5")])
    expect_error("zen data --decode --range 5:2 --plain", [zen, "data", "--decode", w("d6.h5"), "--tokenizer",
                 w("model"), "--range", "5:2", "--plain"], "--range")
    with h5py.File(w("sparse.h5"), "w") as f:
        f.create_dataset("tokens", shape=(2**36,), dtype=np.int32, chunks=(65536,))
        f.attrs["vocab_size"] = 256
    check("the sparse file is small", os.path.getsize(w("sparse.h5")) < 100_000, f"({os.path.getsize(w('sparse.h5'))} B)")
    for cmd in (["info", w("sparse.h5")], ["grad", "--model", w("model"), "--data", w("sparse.h5"), "--seq-len", "8",
                "--out", w("g.safetensors")]):
        expect_error(f"sparse /tokens of 2^36 entries: zen {cmd[0]} refuses at once", [zen] + cmd, "sparse", timeout=20)
    with h5py.File(w("sparse2.h5"), "w") as f:
        f.create_dataset("tokens", shape=(2**30,), dtype=np.int32)  # contiguous, never written
        f.attrs["vocab_size"] = 256
    expect_error("contiguous /tokens never written refused", [zen, "info", w("sparse2.h5")], "stores 0 bytes")
    with h5py.File(w("scaleoffset.h5"), "w") as f:
        f.create_dataset("tokens", data=np.zeros(1000, np.int32), chunks=(100,), scaleoffset=0)
        f.attrs["vocab_size"] = 256
    expect_error("a filter with unbounded expansion (scaleoffset) refused", [zen, "info", w("scaleoffset.h5")],
                 "filter")
    with open(w("ext.bin"), "wb") as f:
        f.write(np.arange(100, dtype=np.int32).tobytes())
    with h5py.File(w("external.h5"), "w") as f:
        f.create_dataset("tokens", shape=(100,), dtype=np.int32, external=[(w("ext.bin"), 0, 400)])
        f.attrs["vocab_size"] = 256
    expect_error("external storage (reads another file) refused", [zen, "info", w("external.h5")], "external")
    p = expect_error("a crash inside libhdf5 is one line, exit 2, the file called malformed",
                     [zen, "info", w("data.h5")], "malformed HDF5 file: the HDF5 library",
                     env=dict(os.environ, ZEN_FAULT_HDF5_CRASH="1", TMPDIR=w()))
    for cmd in (["info", w("data.h5")], ["grad", "--model", w("model"), "--data", w("data.h5"), "--seq-len", "8",
                "--out", w("g.safetensors")]):
        p = expect_error(f"libhdf5 looping on a file: zen {cmd[0]} stops the check at its deadline, exit 2",
                         [zen] + cmd, "did not finish", timeout=30,
                         env=dict(os.environ, ZEN_FAULT_HDF5_HANG="1", ZEN_DATASET_CHECK_SECONDS="1"))
        left = subprocess.run(["pgrep", "-f", w("data.h5")], capture_output=True, text=True).stdout.split()
        check(f"  zen {cmd[0]}: the stopped check process is gone", p is not None and not left, f"{left}")
    # the child's own stderr (a sanitizer's report on a real crash) goes to the file the line names, not
    # to the terminal
    p = subprocess.run([zen, "info", w("data.h5")], capture_output=True, text=True,
                       env=dict(os.environ, ZEN_FAULT_HDF5_CRASH="1", TMPDIR=w()))
    log = p.stderr.strip().split("its report is in ")[-1] if "its report is in " in p.stderr else ""
    named = log.startswith(w("zen-dataset-check-")) and os.path.isfile(log) and "crashes on purpose" in open(log).read()
    check("the crashed check's report is kept in the file its one line names", p.returncode == 2 and named and
          len(p.stderr.strip().splitlines()) == 1, p.stderr.strip())
    cfg = json.load(open(w("model", "config.json")))
    for key, value in (("num_attention_heads", 2**31 - 1), ("num_hidden_layers", 2e8), ("hidden_size", 1e10),
                       ("vocab_size", -1), ("rope_theta", 1e300)):
        d = w(f"cfg_{key}")
        shutil.copytree(w("model"), d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(dict(cfg, **{key: value}), f)
        expect_error(f"config.json {key} = {value!r} refused", [zen, "grad", "--model", d, "--data", w("data.h5"),
                     "--seq-len", "8", "--out", w("g.safetensors")], f"key '{key}'")
    d = w("cfg_sliding")
    shutil.copytree(w("model"), d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(cfg, use_sliding_window=True), f)
    expect_error("config.json use_sliding_window true refused", [zen, "grad", "--model", d, "--data", w("data.h5"),
                 "--seq-len", "8", "--out", w("g.safetensors")], "use_sliding_window")
    run([zen, "train", w("r.json"), "--model", w("model"), "--data", w("data.h5"), "--out", w("ad"),
         "--set", "max_steps=1"])
    for r in (10**6, 2**31 - 1, 0, 2.5):
        d = w(f"adapter_r{r}")
        shutil.copytree(w("ad"), d, ignore=shutil.ignore_patterns("checkpoint-*"))
        acfg = json.load(open(os.path.join(d, "adapter_config.json")))
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump(dict(acfg, r=r), f)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        expect_error(f"adapter r = {r}: exit 2 before allocating", [zen, "eval", "--model", w("model"), "--adapter", d,
                     "--data", w("data.h5"), "--seq-len", "16"], "'r'")
        check(f"... adapter r = {r}: peak RSS stays small", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < max(
            before, 400_000), f"({resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024} MiB max so far)")

    # ---- 7. GGUF files the reader must refuse ----
    q8 = 8
    good = gguf_bytes([("general.architecture", 8, struct.pack("<Q", 5) + b"qwen3")],
                      [("a", [32, 2], 0, 0), ("b", [32], q8, 256)], data=b"\0" * (256 + 34))
    with open(w("good.gguf"), "wb") as f:
        f.write(good)
    p = run([zen, "info", w("good.gguf")])
    check("GGUF: a well-formed file reads", "tensor a" in p.stdout and "Q8_0" in p.stdout)
    arch = ("general.architecture", 8, struct.pack("<Q", 5) + b"qwen3")
    mutants = [
        ("version 0", gguf_bytes([arch], [], version=0), "version 0 is not supported"),
        ("key count past the file", gguf_bytes([arch], [], n_kv=2**40), "more than a file"),
        ("offset near 2^64", gguf_bytes([arch], [("a", [32], 0, 2**64 - 32)], data=b"\0" * 128), "offset"),
        ("dims whose product wraps to 0", gguf_bytes([arch], [("a", [2**32, 2**32], 0, 0)], data=b"\0" * 64),
         "overflows"),
        ("unknown tensor type", gguf_bytes([arch], [("a", [32], 99, 0)], data=b"\0" * 128), "unknown ggml type 99"),
        ("Q8_0 with 7 elements", gguf_bytes([arch], [("a", [7], q8, 0)], data=b"\0" * 64), "multiple"),
        ("overlapping tensors", gguf_bytes([arch], [("a", [32], 0, 0), ("b", [32], 0, 0)], data=b"\0" * 256),
         "expected 128"),
        ("duplicate tensor names", gguf_bytes([arch], [("a", [8], 0, 0), ("a", [8], 0, 32)], data=b"\0" * 64),
         "appears twice"),
        ("duplicate keys", gguf_bytes([arch, arch], []), "appears twice"),
        ("misaligned offset", gguf_bytes([arch], [("a", [8], 0, 4)], data=b"\0" * 64), "offset 4"),
        ("alignment 3", gguf_bytes([arch, ("general.alignment", 4, u32(3))], []), "power of 2"),
        ("alignment of type u8", gguf_bytes([arch, ("general.alignment", 0, b"\x20")], []), "must be u32"),
        ("nested array", gguf_bytes([("k", 9, u32(9) + struct.pack("<Q", 1) + u32(0) + struct.pack("<Q", 0))], []),
         "unknown type"),
        ("a string past the end", gguf_bytes([("k", 8, struct.pack("<Q", 2**40) + b"abc")], []), "past the end"),
        ("5 dimensions", gguf_bytes([arch], [("a", [1, 1, 1, 1, 1], 0, 0)]), "5 dimensions"),
        ("truncated data", gguf_bytes([arch], [("a", [64], 0, 0)], data=b"\0" * 100), "past the end"),
    ]
    for name, blob, fragment in mutants:
        with open(w("bad.gguf"), "wb") as f:
            f.write(blob)
        expect_error(f"GGUF: {name} refused", [zen, "info", w("bad.gguf")], fragment)
    arrays = [("u16s", 2, "H", [1, 65535]), ("i16s", 3, "h", [-2, 300]), ("u64s", 10, "Q", [2**40, 7]),
              ("i64s", 11, "q", [-2**40, 9]), ("f64s", 12, "d", [0.5, -1.25])]
    kvs = [(k, 9, u32(t) + struct.pack("<Q", len(v)) + struct.pack("<" + f * len(v), *v)) for k, t, f, v in arrays]
    kvs.append(("evil\x1b[31mkey\r", 4, u32(1)))
    with open(w("arrays.gguf"), "wb") as f:
        f.write(gguf_bytes(kvs, []))
    out = run([zen, "info", w("arrays.gguf")]).stdout
    expect = {"u16s": "1 65535", "i16s": "-2 300", "u64s": f"{2**40} 7", "i64s": f"{-2**40} 9", "f64s": "0.5 -1.25"}
    check("zen info prints u16/i16/u64/i64/f64 arrays with their own stride",
          all(next((l for l in out.splitlines() if k in l), "").rstrip().endswith(v) for k, v in expect.items()),
          out.strip())
    check("zen info escapes control characters in keys", "\x1b" not in out and "\r" not in out and
          "evil\\x1b[31mkey\\x0d" in out)

    # ---- 8. two runs into one directory: the lock ----
    long = {"seq_len": 16, "batch_size": 2, "max_steps": 100000, "save_every": 0, "log_every": 1}
    with open(w("long.json"), "w") as f:
        json.dump(long, f)
    lbase = [zen, "train", w("long.json"), "--model", w("model"), "--data", w("data.h5")]

    def start_until_step(cmd, step):
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        for line in proc.stderr:
            if line.startswith(f"step {step}/"):
                break
        return proc
    first = start_until_step(lbase + ["--out", w("locked")], 3)
    expect_error("lock: a second run into a live run's directory is refused", lbase + ["--out", w("locked")],
                 "in use by another zen train")
    expect_error("lock: ... --resume too", lbase + ["--out", w("locked"), "--resume"], "in use by another zen train")
    first.kill()
    first.wait()
    p = run(lbase + ["--out", w("locked"), "--resume", "--set", "max_steps=5"], expect=None)
    check("lock: a killed run leaves no stale lock", p.returncode == 0, p.stderr.strip()[-200:])

    # ---- SIGINT / SIGTERM mid-run, then --resume: the uninterrupted run's losses ----
    sig = {"seq_len": 16, "batch_size": 2, "grad_accum": 2, "max_steps": 1500, "save_every": 400, "log_every": 1,
           "lr": 1e-3, "val_fraction": 0.05, "eval_every": 500, "lora": {"r": 4, "dropout": 0.1}}
    with open(w("sig.json"), "w") as f:
        json.dump(sig, f)
    sbase = [zen, "train", w("sig.json"), "--model", w("model"), "--data", w("data.h5")]
    run(sbase + ["--out", w("uninterrupted")])

    def losses(d):
        with open(os.path.join(d, "metrics.jsonl")) as f:
            return {json.loads(l)["step"]: l.split('"loss": ')[1].split(",")[0] for l in f}
    for signame, code in (("SIGINT", 130), ("SIGTERM", 143)):
        out = w(f"sig_{signame}")
        proc = start_until_step(sbase + ["--out", out], 20)
        proc.send_signal(getattr(signal, signame))
        rest = proc.stderr.read()
        proc.wait()
        last = rest.strip().splitlines()[-1] if rest.strip() else ""
        check(f"{signame}: exit {code}, one line naming the checkpoint and the resume command",
              proc.returncode == code and f"stopped by {signame}" in last and "--resume" in last, last)
        saved = [c for c in os.listdir(out) if c.startswith("checkpoint-")]
        check(f"{signame}: a checkpoint of the step it stopped at", len(saved) == 1 and not leftovers(out), str(saved))
        run(sbase + ["--out", out, "--resume"])
        check(f"{signame}: --resume gives the uninterrupted run's losses, bit for bit",
              losses(out) == losses(w("uninterrupted")))
        check(f"{signame}: ... and its adapter, byte for byte",
              open(os.path.join(out, "adapter_model.safetensors"), "rb").read() ==
              open(w("uninterrupted", "adapter_model.safetensors"), "rb").read())

    # ---- an allocation failure injected into an op ----
    small_run = dict(sig, max_steps=12, save_every=3, eval_every=0, val_fraction=0)
    with open(w("fault.json"), "w") as f:
        json.dump(small_run, f)
    fbase = [zen, "train", w("fault.json"), "--model", w("model"), "--data", w("data.h5")]
    run(fbase + ["--out", w("nofault")])
    # the N-th scratch request fails: find the smallest N that fails in step 5 (after checkpoint-3)
    def failing_step(n):
        p = run(fbase + ["--out", w("probe")], expect=None, env=dict(os.environ, ZEN_FAULT_SCRATCH=str(n)))
        shutil.rmtree(w("probe"), ignore_errors=True)
        m = re.search(r"error: step (\d+):", p.stderr)
        return int(m.group(1)) if m else 0 if p.returncode else 10**9  # 0: failed before the first step
    lo, hi = 1, 1
    while failing_step(hi) < 5:
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if failing_step(mid) < 5 else (lo, mid)
    p = run(fbase + ["--out", w("fault")], expect=None, env=dict(os.environ, ZEN_FAULT_SCRATCH=str(lo)))
    ok, line = one_line_error(p, 1)
    check("injected allocation failure: exit 1, one line naming it and the last checkpoint", ok and
          "injected" in line and "step 5:" in line and "checkpoint-3" in line, line)
    check("... checkpoint-3 is intact", os.path.exists(w("fault", "checkpoint-3", "trainer_state.json")) and
          not leftovers(w("fault")))
    run(fbase + ["--out", w("fault"), "--resume"])
    check("... and resumes to the losses of a run without the fault", losses(w("fault")) == losses(w("nofault")))

    # ---- disk full during a checkpoint, an export, zen init ----
    ck_dir = w("nofault", "checkpoint-12")
    ck = sum(os.path.getsize(os.path.join(ck_dir, f)) for f in os.listdir(ck_dir))
    with small_disk(w("full_ckpt"), str(int(ck * 1.6) + 24 * 1024)) as d:
        if d is None:
            skipped("disk full during a checkpoint")
        else:
            out = os.path.join(d, "run")
            p = run(fbase + ["--out", out, "--set", "keep_checkpoints=0"], expect=None)
            ok, line = one_line_error(p, 1)
            check("full disk at a checkpoint: exit 1, one line", ok and "checkpoint-3" in line, line)
            check("... the earlier checkpoint is intact, no half one", os.path.exists(os.path.join(
                out, "checkpoint-3", "optimizer.safetensors")) and not leftovers(out), str(os.listdir(out)))
            shutil.copytree(out, w("moved"))
            run(fbase + ["--out", w("moved"), "--resume"])
            check("... and resumes elsewhere to the uninterrupted losses", losses(w("moved")) == losses(w("nofault")))
    with small_disk(w("full_export"), "16k") as d:
        if d is None:
            skipped("disk full during an export")
        else:
            for fmt, name in (("gguf", "m.gguf"), ("safetensors", "m"), ("peft", "a")):
                model, extra = (w("model"), ["--adapter", w("nofault")]) if fmt == "peft" else (w("small"), [])
                p = run([zen, "export", "--model", model, "--format", fmt, "--out", os.path.join(d, name)] + extra,
                        expect=None)
                ok, line = one_line_error(p, 1)
                check(f"full disk: export {fmt} exits 1, nothing left", ok and not os.listdir(d), line)
    with small_disk(w("full_init"), "64k") as d:
        if d is None:
            skipped("disk full during zen init")
        else:
            p = run([zen, "init", "--preset", "small", "--out", os.path.join(d, "m")], expect=None)
            ok, line = one_line_error(p, 1)
            check("full disk: zen init exits 1 and leaves no half-written OUT", ok and not os.listdir(d), line)

    # ---- 9. metrics: JSON on a step without targets; an all-zero mask is refused ----
    mask = np.zeros(4000, np.uint8)
    mask[2000] = 1  # one target in the file: most steps have none
    write_tokens(w("holes.h5"), rng.integers(0, 256, 4000), 256, loss_mask=mask)
    p = run([zen, "train", w("r.json"), "--model", w("model"), "--data", w("holes.h5"), "--out", w("holes"),
             "--set", "max_steps=3"])
    rows = [json.loads(l) for l in open(w("holes", "metrics.jsonl"))]  # raises on invalid JSON
    check("metrics.jsonl: every line is JSON; a step without targets has loss null", len(rows) == 3 and
          any(r["loss"] is None for r in rows) and "no target token with loss_mask 1" in p.stderr,
          str([r["loss"] for r in rows]))
    write_tokens(w("nomask.h5"), rng.integers(0, 256, 4000), 256, loss_mask=np.zeros(4000, np.uint8))
    expect_error("zen train on an all-zero mask is refused before the first step", [zen, "train", w("r.json"),
                 "--model", w("model"), "--data", w("nomask.h5"), "--out", w("nomask")], "nothing to train")
    check("... and leaves no directory", not os.path.exists(w("nomask")))

    # ---- 10. smaller gaps ----
    for name, line in (("trailing garbage", '{"text": "a"} x'), ("two objects", '{"text": "a"}{"text": "b"}'),
                       ("a key twice", '{"text": "a", "text": "b"}')):
        with open(w("bad.jsonl"), "w") as f:
            f.write(line + "\n")
        expect_error(f"jsonl line with {name} refused", [zen, "data", "--tokenizer", w("model"), "--in",
                     w("bad.jsonl"), "--format", "jsonl", "--out", w("bad.h5")], "bad.jsonl:1")
    with open(w("empty.jsonl"), "w") as f:
        f.write('{"text": ""}\n{"text": "x"}\n')
    p = run([zen, "data", "--tokenizer", w("model"), "--in", w("empty.jsonl"), "--format", "jsonl", "--out",
             w("empty.h5")], expect=None)
    check("an empty text is a document (no UB)", p.returncode == 0 and "2 documents" in p.stderr, p.stderr.strip())
    write_tokens(w("vattr.h5"), np.arange(150), 100)
    expect_error("token ids are checked against the file's vocab_size", [zen, "info", w("vattr.h5")],
                 "/tokens[100] = 100 is outside the file's vocab_size")
    shutil.copy(w("text.txt"), w("inout.txt"))
    expect_error("zen data --in X --out X refused", [zen, "data", "--tokenizer", w("model"), "--in", w("inout.txt"),
                 "--format", "text", "--out", w("inout.txt")], "one of the inputs")
    check("... X untouched", open(w("inout.txt"), "rb").read() == text)
    weights_before = open(w("model", "model.safetensors"), "rb").read()
    expect_error("zen grad --out MODEL/model.safetensors refused", [zen, "grad", "--model", w("model"), "--data",
                 w("data.h5"), "--seq-len", "8", "--out", w("model", "model.safetensors")], "model's own")
    expect_error("zen export --format gguf --out MODEL/model.safetensors refused", [zen, "export", "--model",
                 w("model"), "--format", "gguf", "--out", w("model", "model.safetensors")], "model's own")
    check("... the model untouched", open(w("model", "model.safetensors"), "rb").read() == weights_before)
    d = w("nan_model")
    shutil.copytree(w("model"), d)
    t, _ = read_safetensors(os.path.join(d, "model.safetensors"))
    t["model.layers.1.self_attn.v_proj.weight"][2, 3] = np.inf
    write_safetensors(os.path.join(d, "model.safetensors"), t)
    for cmd in (["grad", "--out", w("g.safetensors")], ["eval"]):
        expect_error(f"zen {cmd[0]} on a model holding inf names the tensor, exit 2",
                     [zen, cmd[0], "--model", d, "--data", w("data.h5"), "--seq-len", "16"] + cmd[1:],
                     "'model.layers.1.self_attn.v_proj.weight'")
    os.makedirs(w("existing"), exist_ok=True)
    with open(w("existing", "f"), "w") as f:
        f.write("x")
    expect_error("export onto an existing directory: exit 2", [zen, "export", "--model", w("model"), "--format",
                 "safetensors", "--out", w("existing")], "already exists")
    expect_error("gguf export onto a directory: exit 2", [zen, "export", "--model", w("model"), "--format", "gguf",
                 "--out", w("existing")], "is a directory")
    # a 40 MB single-line text: bounded memory
    with open(w("oneline.txt"), "w") as f:
        for _ in range(40):
            f.write(" ".join(["word"] * 200_000) + " ")
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", zen, "data", "--tokenizer", w("model"), "--in", w("oneline.txt"),
                        "--format", "text", "--out", w("oneline.h5")], capture_output=True, text=True)
    peak = int(p.stderr.strip().splitlines()[-1]) if p.returncode == 0 else -1
    if "ASAN_OPTIONS" in os.environ:  # the sanitizer build's shadow memory and quarantine hide the figure
        print(f"SKIP a 40 MB one-line text takes bounded memory (sanitizer build: peak {peak // 1024} MiB)")
    else:
        check("a 40 MB one-line text takes bounded memory", 0 < peak < 200_000,
              f"(peak {peak // 1024} MiB, {time.time() - t0:.1f} s)")

    # ---- the command line wins over the recipe ----
    write_tokens(w("val.h5"), rng.integers(0, 256, 400), 256)
    with open(w("vf.json"), "w") as f:
        json.dump(dict(recipe, val_fraction=0.1), f)
    p = run([zen, "train", w("vf.json"), "--model", w("model"), "--data", w("data.h5"), "--out", w("vf"),
             "--set", f"val_data={w('val.h5')}"], expect=None)
    check("--set val_data overrides the recipe's val_fraction, with one line", p.returncode == 0 and
          "--set val_data overrides the recipe's 'val_fraction'" in p.stderr and "(from val_data)" in p.stderr,
          p.stderr.strip()[-300:])

    harness.finish()


if __name__ == "__main__":
    main()
