#!/usr/bin/env python3
"""tests/reference/test_cli_errors.py: every bad input a user can give zen init /
zen grad (flags, configs, weights, datasets, adapters) exits with code 2 and one
line on stderr naming what is wrong; never a crash."""
import json
import platform
import re
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from zen_files import read_safetensors, write_adapter, write_safetensors, write_tokens  # noqa: E402

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(7)

    subprocess.run([zen, "init", "--preset", "tiny", "--out", w("model")], check=True, capture_output=True)
    with open(w("model", "config.json")) as f:
        cfg = json.load(f)
    write_tokens(w("good.h5"), rng.integers(0, 256, 100), 256)
    write_adapter(w("adapter"), cfg, 2, 4, ALL, rng)

    def model_variant(name, edit_config=None, edit_weights=None, truncate=None):
        d = w(name)
        shutil.copytree(w("model"), d)
        if edit_config:
            c = dict(cfg)
            edit_config(c)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(c, f)
        st = os.path.join(d, "model.safetensors")
        if edit_weights:
            weights, _ = read_safetensors(st)
            edit_weights(weights)
            write_safetensors(st, weights)
        if truncate:
            with open(st, "r+b") as f:
                f.truncate(os.path.getsize(st) - truncate)
        return d

    def data_variant(name, build):
        path = w(name)
        with h5py.File(path, "w") as f:
            build(f)
        return path

    def adapter_variant(name, edit_config=None, edit_tensors=None):
        d = w(name)
        shutil.copytree(w("adapter"), d)
        if edit_config:
            with open(os.path.join(d, "adapter_config.json")) as f:
                c = json.load(f)
            edit_config(c)
            with open(os.path.join(d, "adapter_config.json"), "w") as f:
                json.dump(c, f)
        if edit_tensors:
            st = os.path.join(d, "adapter_model.safetensors")
            t, _ = read_safetensors(st)
            edit_tensors(t)
            write_safetensors(st, t)
        return d

    def grad(model=None, data=None, extra=(), adapter=None):
        cmd = [zen, "grad", "--model", model or w("model"), "--data", data or w("good.h5"), "--seq-len", "8",
               "--batch", "2", "--out", w("g.safetensors")]
        if adapter:
            cmd += ["--adapter", adapter]
        return cmd + list(extra)

    def with_tokens(tokens, mask=None, vocab=256):
        def build(f):
            f.create_dataset("tokens", data=tokens)
            if mask is not None:
                f.create_dataset("loss_mask", data=mask)
            if vocab is not None:
                f.attrs["vocab_size"] = vocab
        return build

    toks = np.arange(100, dtype=np.int32) % 256
    NO_BF16 = dict(os.environ, DNNL_MAX_CPU_ISA="AVX2")  # as on a CPU without bf16 matrix arithmetic
    cases = [
        ("no command", [zen], "missing command"),
        ("unknown command", [zen, "fly"], "fly"),
        ("unknown option", grad(extra=["--bogus"]), "--bogus"),
        ("missing value", [zen, "grad", "--model"], "--model"),
        ("missing --data", [zen, "grad", "--model", w("model"), "--seq-len", "8", "--out", w("x")], "--data"),
        ("bad integer", grad(extra=["--seq-len", "abc"]), "--seq-len"),
        ("zero batch", grad(extra=["--batch", "0"]), "--batch"),
        ("device cuda without a GPU (or in a CPU build)", grad(extra=["--device", "cuda"]), "cuda"),
        ("unknown device", grad(extra=["--device", "tpu"]), "tpu"),
        ("bf16 compute on a cpu without native bf16", grad(extra=["--dtype", "bf16"]), "native bf16", NO_BF16),
        ("unknown compute dtype", grad(extra=["--dtype", "fp8"]), "fp8"),
        ("unknown target", grad(extra=["--targets", "q,embed"]), "embed"),
        ("adapter with --rank", grad(adapter=w("adapter"), extra=["--rank", "4"]), "--rank"),
        ("unknown preset", [zen, "init", "--preset", "huge", "--out", w("x")], "huge"),
        ("bad dtype", [zen, "init", "--preset", "tiny", "--dtype", "f8", "--out", w("x")], "f8"),
        ("preset and config", [zen, "init", "--preset", "tiny", "--config", "c.json", "--out", w("x")], "exactly one"),
        ("missing model dir", grad(model=w("nowhere")), "nowhere"),
        ("other model_type", grad(model=model_variant("llama", lambda c: c.update(model_type="llama"))), "llama"),
        ("heads not dividing", grad(model=model_variant("heads", lambda c: c.update(num_key_value_heads=3))),
         "num_key_value_heads"),
        ("config missing key", grad(model=model_variant("nokey", lambda c: c.pop("rope_theta"))), "rope_theta"),
        ("truncated weights", grad(model=model_variant("trunc", truncate=100)), "model.safetensors"),
        ("missing tensor", grad(model=model_variant("notensor", edit_weights=lambda t: t.pop(
            "model.layers.1.mlp.up_proj.weight"))), "model.layers.1.mlp.up_proj.weight"),
        ("wrong shape", grad(model=model_variant("shape", edit_weights=lambda t: t.update(
            {"model.norm.weight": np.ones(3)}))), "model.norm.weight"),
        ("data not HDF5", grad(data=w("model", "config.json")), "not an HDF5 file"),
        ("data missing", grad(data=w("absent.h5")), "absent.h5"),
        ("no /tokens", grad(data=data_variant("notokens.h5", lambda f: f.create_dataset("tok", data=toks))),
         "/tokens"),
        ("float tokens", grad(data=data_variant("float.h5", with_tokens(toks.astype(np.float32)))), "dtype"),
        ("2-D tokens", grad(data=data_variant("rank2.h5", with_tokens(toks.reshape(10, 10)))), "rank 2"),
        ("mask length", grad(data=data_variant("masklen.h5", with_tokens(toks, np.ones(99, np.uint8)))),
         "loss_mask"),
        ("mask value", grad(data=data_variant("maskval.h5", with_tokens(toks, np.full(100, 2, np.uint8)))),
         "loss_mask[0] = 2"),
        ("token out of vocab", grad(data=data_variant("vocab.h5", with_tokens(np.where(
            np.arange(100) == 57, 999, toks).astype(np.int32)))), "/tokens[57] = 999"),
        ("token out of vocab deep in a large file (read in pieces)", grad(data=data_variant("big.h5", with_tokens(
            np.where(np.arange(2_500_000) == 2_400_001, 256, np.arange(2_500_000) % 256).astype(np.int32)))),
         "/tokens[2400001] = 256"),
        ("no vocab_size", grad(data=data_variant("novocab.h5", with_tokens(toks, vocab=None))), "vocab_size"),
        ("fewer tokens than a batch", grad(data=data_variant("short.h5", with_tokens(toks[:12]))), "fewer than one batch"),
        ("batch 0 fully masked", grad(data=data_variant("masked.h5", with_tokens(toks, np.where(
            np.arange(100) < 20, 0, 1).astype(np.uint8)))), "no target token"),
        ("adapter missing", grad(adapter=w("noadapter")), "adapter_config.json"),
        ("adapter bad target", grad(adapter=adapter_variant("abad", edit_config=lambda c: c.update(
            target_modules=["q_proj", "lm_head"]))), "lm_head"),
        ("adapter wrong shape", grad(adapter=adapter_variant("ashape", edit_tensors=lambda t: t.update(
            {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.ones((2, 5))}))), "shape"),
        ("adapter missing tensor", grad(adapter=adapter_variant("amiss", edit_tensors=lambda t: t.pop(
            "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"))), "down_proj.lora_B"),
        # use_dora without the magnitudes, and magnitudes without use_dora: each names what is wrong
        ("DoRA adapter without magnitudes", grad(adapter=adapter_variant("adora", edit_config=lambda c: c.update(
            use_dora=True))), "q_proj.lora_magnitude_vector"),
        ("magnitudes without use_dora", grad(adapter=adapter_variant("amag", edit_tensors=lambda t: t.update(
            {"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": np.ones(64)}))),
         "needs use_dora true"),
        ("use_dora not a boolean", grad(adapter=adapter_variant("abool", edit_config=lambda c: c.update(
            use_dora="yes"))), "use_dora must be true or false"),
        ("grad: dpo options without --objective dpo", grad(extra=["--dpo-loss", "ipo"]), "--objective dpo"),
        ("grad: dropout without its seed", grad(extra=["--dropout", "0.1"]), "--dropout-seed"),
        ("grad: dpo on a token file", grad(extra=["--objective", "dpo"]), "not a preference file"),
    ]
    # zen train: the run config and its overrides
    def train_cfg(name, content):
        path = w(name)
        with open(path, "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path

    ok_cfg = train_cfg("ok.json", {"seq_len": 8, "batch_size": 2, "max_steps": 1})
    train = [zen, "train", ok_cfg, "--model", w("model"), "--data", w("good.h5"), "--out", w("trainout")]
    cases += [
        ("train: no config", [zen, "train", "--model", w("model")], "missing the run config"),
        ("train: config not JSON", [zen, "train", train_cfg("bad.json", "{seq_len: 8")], "not valid JSON"),
        ("train: unknown key", [zen, "train", train_cfg("unk.json", {"learning_rate": 1})], "'learning_rate'"),
        ("train: unknown lora key", [zen, "train", train_cfg("unk2.json", {"lora": {"rank": 4}})], "'lora.rank'"),
        ("train: wrong type", [zen, "train", train_cfg("type.json", {"lr": "high"})], "'lr' must be a number"),
        ("train: out of range", train + ["--set", "lora.dropout=1.5"], "'lora.dropout'"),
        ("train: --set unknown", train + ["--set", "speed=11"], "'speed'"),
        ("train: --set not key=value", train + ["--set", "lr"], "key=value"),
        ("train: unknown option", train + ["--fast"], "--fast"),
        ("train: bad schedule", train + ["--set", "schedule=step"], "'schedule'"),
        ("train: unknown objective", train + ["--set", "objective=ppo"], "'objective'"),
        ("train: unknown DPO loss", train + ["--set", "objective=dpo", "--set", "dpo.loss=exo"], "'dpo.loss'"),
        ("train: label smoothing outside robust DPO", train + ["--set", "objective=dpo", "--set", "label_smoothing=0.1"],
         "robust"),
        ("train: dpo on a token file", train + ["--set", "objective=dpo"], "not a preference file"),
        ("train: precompute_ref without dpo", train + ["--set", "dpo.precompute_ref=true"], "needs objective dpo"),
        ("train: unknown pair layout", train + ["--set", "objective=dpo", "--set", "pair_layout=mixed"], "'pair_layout'"),
        ("train: missing model", [zen, "train", ok_cfg, "--data", w("good.h5"), "--out", w("o2")], "'model'"),
        ("train: too little data", train + ["--set", "batch_size=20"], "fewer than one step"),
        ("train: cuda", train + ["--set", "device=cuda"], "cuda"),
        ("train: bf16 on a cpu without native bf16", train + ["--set", "dtype=bf16"], "avx2", NO_BF16),
        ("train: recompute maybe", train + ["--set", "recompute=maybe"], "recompute"),
        ("eval: missing data", [zen, "eval", "--model", w("model"), "--seq-len", "8"], "--data"),
        ("eval: data shorter than a sequence", [zen, "eval", "--model", w("model"), "--data", w("good.h5"),
                                               "--seq-len", "500"], "fewer than one sequence"),
        ("ZEN_CPU_ISA: unknown level", grad(), "ZEN_CPU_ISA=fast", dict(os.environ, ZEN_CPU_ISA="fast")),
        ("ZEN_CPU_ISA: another architecture's level", grad(), "not a kernel level of this CPU architecture",
         dict(os.environ, ZEN_CPU_ISA="neon" if platform.machine() == "x86_64" else "avx2")),
        ("output under a folder that cannot be made", [x if x != w("g.safetensors") else "/proc/zen-no/dir/g.safetensors" for x in grad()],
         "/proc/zen-no"),
    ]
    # a level above this CPU (checked on the machines that lack one)
    cpu = subprocess.run([zen, "info", "--cpu"], capture_output=True, text=True).stdout
    for level in re.findall(r"^kernel level (\S+) +not supported", cpu, re.M):
        cases.append((f"ZEN_CPU_ISA={level} above this CPU", grad(), f"ZEN_CPU_ISA={level}: this CPU",
                      dict(os.environ, ZEN_CPU_ISA=level)))
    failed = 0
    for name, cmd, fragment, *env in cases:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env[0] if env else None)
        lines = p.stderr.strip().splitlines()
        ok = p.returncode == 2 and len(lines) == 1 and fragment in lines[0]
        if not ok:
            failed += 1
            print(f"FAIL {name}: exit {p.returncode}, stderr: {p.stderr.strip()!r} (expected '{fragment}')")
        else:
            print(f"ok   {name}: {lines[0]}")
    # a build with the CUDA backend loads its module (every symbol it takes from zen resolves): without a GPU
    # the one line is the backend's own "no CUDA GPU", never "cannot load"
    if "CUDA backend: built" in subprocess.run([zen, "--version"], capture_output=True, text=True).stdout:
        p = subprocess.run(grad(extra=["--device", "cuda"]), capture_output=True, text=True)
        ok = p.returncode == 0 or ("no CUDA GPU is visible" in p.stderr and "cannot load" not in p.stderr)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} the CUDA backend's module loads: {p.stderr.strip()[-200:]}")
    # --dtype auto: bf16 where the CPU has native bf16 matrix arithmetic, else
    # f32, and the summary says which and why
    checks = 0
    capped = dict(os.environ, ZEN_CPU_ISA="generic")
    for label, env in (("this cpu", None), ("oneDNN limited to avx2", NO_BF16), ("ZEN_CPU_ISA=generic", capped)):
        p = subprocess.run(train + ["--out", w(f"auto-{checks}")], capture_output=True, text=True, env=env)
        line = next((l for l in p.stderr.splitlines() if l.strip().startswith("device cpu:")), "")
        ok = p.returncode == 0 and "(auto: " in line and (env is None or line.strip().startswith("device cpu: f32"))
        ok = ok and "kernels " in line and (env is not capped or "kernels generic" in line)
        checks += 1
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} dtype auto on {label}: {line.strip() or p.stderr.strip()[-200:]}")
    # every output's missing parent folders are made, as zen export's are
    for name, cmd, out in (
            ("grad --out", [x if x != w("g.safetensors") else w("new", "a", "g.safetensors") for x in grad()],
             w("new", "a", "g.safetensors")),
            ("eval --save-logits", [zen, "eval", "--model", w("model"), "--data", w("good.h5"), "--seq-len", "8",
                                    "--save-logits", w("new", "b", "l.safetensors")], w("new", "b", "l.safetensors"))):
        p = subprocess.run(cmd, capture_output=True, text=True)
        ok = p.returncode == 0 and os.path.isfile(out)
        checks += 1
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name} into missing folders: {'made' if ok else p.stderr.strip()}")
    # OpenBLAS's pthread build (where installed): zen runs it single-threaded and says so in one line
    pthread_dir = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
    if os.path.exists(os.path.join(pthread_dir, "libopenblas.so.0")):
        p = subprocess.run(grad(extra=["--dtype", "f32"]), capture_output=True, text=True,
                           env=dict(os.environ, LD_LIBRARY_PATH=pthread_dir))
        notes = [l for l in p.stderr.splitlines() if l.startswith("zen: note: OpenBLAS is its pthread build")]
        ok = p.returncode == 0 and len(notes) == 1 and "libopenblas-openmp-dev" in notes[0]
        checks += 1
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} OpenBLAS pthread build: {notes[0] if notes else p.stderr.strip()[-200:]}")
    else:
        print(f"SKIP OpenBLAS pthread build: {pthread_dir}/libopenblas.so.0 is not installed")
    print(f"{len(cases) + checks - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
