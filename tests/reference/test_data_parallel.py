#!/usr/bin/env python3
"""tests/reference/test_data_parallel.py: `mpirun -np N zen train` against one
process with N x the gradient accumulation, on a tiny model, with LoRA
dropout, a held-out split, shuffling and a loss mask on.

1. -np 2 with grad_accum 1, -np 4 with grad_accum 1 and -np 2 with grad_accum 2
   against one process with grad_accum 2 or 4: the losses, gradient norms and
   eval losses as written, and the final adapter's bytes, are identical.
2. zen eval over 2 and 4 ranks prints what one process prints.
3. A 2-rank run killed with SIGKILL mid-checkpoint resumes with -np 2 to the
   identical adapter; resumed by one process with grad_accum 2 (the same
   micro-batches per step), too.
4. One rank killed mid-run: every rank ends non-zero within 60 s, and the last
   checkpoint is intact (it resumes).
5. Errors agreed by every rank, in one line: a data file missing on rank 1
   only, 3 ranks, a resume with other micro-batches per step.

Skipped (exit 77) when zen was built without MPI or mpirun is missing. With
--zen-emu (zen on the emulated CUDA backend) also CUDA ranks, one emulated GPU
each."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from zen_files import write_pairs, write_tokens  # noqa: E402

from harness import check, run  # noqa: E402

# every process computes with one thread: equal thread counts make equal sums
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
MPIRUN = harness.MPIRUN  # (the sanitizer build's ranks skip leak checks: harness.py says why)


def raw_fields(out, keys=("loss", "grad_norm", "eval_loss")):
    """per step, the chosen fields exactly as written (text)"""
    rows = []
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            step = json.loads(line)["step"]
            parts = {k: line.split(f'"{k}": ')[1].split(",")[0].split("}")[0] for k in keys if f'"{k}": ' in line}
            rows.append((step, parts))
    return rows


def same_file(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def main():
    zen, work, w = harness.setup()
    emu = harness.zen_emu
    if not shutil.which("mpirun"):
        print("skipped: mpirun not found (apt-get install -y openmpi-bin)")
        sys.exit(77)
    probe = subprocess.run(MPIRUN + ["-np", "2", zen, "info", "/nonexistent"], capture_output=True, text=True, env=ENV)
    if "built without MPI" in probe.stderr:
        print("skipped: zen was built without MPI (apt-get install -y libopenmpi-dev, then rebuild)")
        sys.exit(77)

    rng = np.random.default_rng(23)
    run([zen, "init", "--preset", "tiny", "--seed", "5", "--out", w("model")])
    tokens = rng.integers(0, 256, 9000)
    write_tokens(w("data.h5"), tokens, 256, loss_mask=(rng.random(len(tokens)) > 0.25))
    cfg = {"seq_len": 32, "batch_size": 2, "max_steps": 8, "lr": 1e-2, "warmup_steps": 2, "log_every": 1,
           "eval_every": 3, "save_every": 3, "val_fraction": 0.1, "seed": 9, "dtype": "f32",
           "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}
    with open(w("run.json"), "w") as f:
        json.dump(cfg, f)

    def train(out, ranks, accum, *extra, expect=0, env=ENV):
        cmd = [zen, "train", w("run.json"), "--model", w("model"), "--data", w("data.h5"), "--out", w(out),
               "--set", f"grad_accum={accum}", *extra]
        return run((MPIRUN + ["-np", str(ranks)] if ranks else []) + cmd, expect=expect, env=env)

    # ---- 1: N ranks equal one process with N x accumulation ----
    train("one-a2", 0, 2)
    train("one-a4", 0, 4)
    for ranks, accum, ref in [(2, 1, "one-a2"), (4, 1, "one-a4"), (2, 2, "one-a4")]:
        out = f"np{ranks}-a{accum}"
        p = train(out, ranks, accum)
        mine, theirs = raw_fields(w(out)), raw_fields(w(ref))
        evals = sum("eval_loss" in f for _, f in mine)
        check(f"-np {ranks} grad_accum {accum} = one process grad_accum {ranks * accum}: losses, grad norms, "
              f"eval losses", mine == theirs and evals >= 2, f"({len(mine)} steps, {evals} evaluations)")
        check(f"-np {ranks} grad_accum {accum}: final adapter byte-identical",
              same_file(w(out, "adapter_model.safetensors"), w(ref, "adapter_model.safetensors")))
        check(f"-np {ranks}: one summary, from rank 0", p.stderr.count("zen train: model") == 1 and
              "data parallel: %d ranks" % ranks in p.stderr)
    check("only rank 0 writes: one metrics line per step", len(raw_fields(w("np4-a1"))) == cfg["max_steps"])

    # ---- 1b: DPO: ranks split the pairs; equal to one process ----
    pairs = [(rng.integers(0, 256, int(rng.integers(4, 12))), rng.integers(0, 256, int(rng.integers(1, 6))),
              rng.integers(0, 256, int(rng.integers(1, 6)))) for _ in range(64)]
    write_pairs(w("pairs.h5"), pairs, 256)
    dpo = [zen, "train", w("run.json"), "--model", w("model"), "--data", w("pairs.h5"), "--set", "objective=dpo",
           "--set", "seq_len=20", "--set", "dpo.loss=robust", "--set", "label_smoothing=0.1"]
    keys = ("loss", "grad_norm", "eval_loss", "rewards/accuracies", "rewards/margins", "eval_rewards/margins")
    run(dpo + ["--out", w("dpo-one"), "--set", "grad_accum=2"], env=ENV)
    run(MPIRUN + ["-np", "2"] + dpo + ["--out", w("dpo-np2")], env=ENV)
    check("dpo: -np 2 = one process grad_accum 2: losses, metrics, eval, adapter",
          raw_fields(w("dpo-np2"), keys) == raw_fields(w("dpo-one"), keys) and
          same_file(w("dpo-np2", "adapter_model.safetensors"), w("dpo-one", "adapter_model.safetensors")))

    # ---- 2: zen eval split across ranks ----
    ev = [zen, "eval", "--model", w("model"), "--adapter", w("one-a2"), "--data", w("data.h5"), "--seq-len", "32",
          "--batch", "3"]
    alone = run(ev, env=ENV).stdout
    for ranks in (2, 4):
        spread = run(MPIRUN + ["-np", str(ranks)] + ev, env=ENV)
        check(f"zen eval over {ranks} ranks = one process", spread.stdout == alone and alone.startswith("loss "),
              f"({alone.split()[1]})")

    # ---- 3: killed mid-checkpoint, resumed ----
    kill_env = dict(ENV, ZEN_FAULT_KILL_IN_CHECKPOINT="6")
    p = train("killed", 2, 1, expect=None, env=kill_env)
    check("SIGKILL of rank 0 mid-checkpoint ends the 2-rank run", p.returncode != 0 and
          os.path.exists(w("killed", "checkpoint-3")) and not os.path.exists(w("killed", "checkpoint-6")),
          f"(exit {p.returncode})")
    shutil.copytree(w("killed"), w("killed-alone"))
    train("killed", 2, 1, "--resume")
    check("resumed with -np 2: adapter identical to the uninterrupted run",
          same_file(w("killed", "adapter_model.safetensors"), w("np2-a1", "adapter_model.safetensors")))
    check("resumed: metrics identical to the uninterrupted run", raw_fields(w("killed")) == raw_fields(w("np2-a1")))
    p = train("killed-alone", 0, 2, "--resume")
    check("resumed by one process with grad_accum 2 (same micro-batches per step): identical adapter",
          same_file(w("killed-alone", "adapter_model.safetensors"), w("np2-a1", "adapter_model.safetensors")))

    # ---- 4: one rank dies mid-run ----
    cmd = MPIRUN + ["-np", "2", zen, "train", w("run.json"), "--model", w("model"), "--data", w("data.h5"),
                    "--out", w("dies"), "--set", "max_steps=1000000", "--set", "save_every=40", "--set",
                    "eval_every=0", "--set", "log_every=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(w("dies", "checkpoint-120")):
        time.sleep(0.05)
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    killed_at = time.time()
    if len(ranks) == 2:
        os.kill(int(ranks[1]), signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=60)
        took = time.time() - killed_at
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        took = None
    check("one rank killed: every rank ends non-zero within 60 s", len(ranks) == 2 and took is not None and
          proc.returncode != 0, f"({'%.1f s' % took if took is not None else 'hung'}, exit {proc.returncode})")
    saved = sorted(int(d.split("-")[1]) for d in os.listdir(w("dies")) if d.startswith("checkpoint-")
                   and d.split("-")[1].isdigit())
    p = run(MPIRUN + ["-np", "2", zen, "train", w("run.json"), "--model", w("model"), "--data", w("data.h5"),
                      "--out", w("dies"), "--set", f"max_steps={saved[-1] + 2}", "--set", "save_every=40",
                      "--set", "eval_every=0", "--set", "log_every=100000", "--resume"], expect=None, env=ENV)
    check("the last checkpoint is intact: it resumes", p.returncode == 0 and f"resuming at step {saved[-1]}" in p.stderr,
          f"(checkpoint-{saved[-1]}, exit {p.returncode})")

    # ---- 4b: SIGTERM to one rank stops every rank after the same step, with a checkpoint ----
    cmd = MPIRUN + ["-np", "2", zen, "train", w("run.json"), "--model", w("model"), "--data", w("data.h5"),
                    "--out", w("term"), "--set", "max_steps=1000000", "--set", "save_every=100000", "--set",
                    "eval_every=0", "--set", "log_every=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.exists(w("term", "train_config.json")):
        time.sleep(0.05)
    time.sleep(1.0)
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    if len(ranks) == 2:
        os.kill(int(ranks[1]), signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    stops = [l for l in err.splitlines() if "stopped by SIGTERM" in l]
    saved = [d for d in os.listdir(w("term")) if d.startswith("checkpoint-")] if os.path.isdir(w("term")) else []
    check("SIGTERM to rank 1 alone: every rank stops after the same step, one line, a checkpoint there",
          len(ranks) == 2 and len(stops) == 1 and len(saved) == 1 and f"saved {w('term', saved[0])}" in stops[0] and
          "mpirun -np 2" in stops[0], f"({stops[:1]})")

    # ---- 5: errors every rank agrees on, in one line ----
    base = [zen, "train", w("run.json"), "--model", w("model"), "--out", w("mpmd"), "--set", "max_steps=2"]
    p = run(MPIRUN + ["-np", "1"] + base + ["--data", w("data.h5"), ":", "-np", "1"] + base +
            ["--data", w("missing.h5")], expect=None, env=ENV)
    lines = [l for l in p.stderr.splitlines() if l.startswith("zen train: error")]
    check("data missing on rank 1 only: every rank stops, one line naming rank 1 and the file",
          p.returncode != 0 and len(lines) == 1 and "rank 1" in lines[0] and "missing.h5" in lines[0] and
          not os.path.exists(w("mpmd", "adapter_model.safetensors")), f"({lines[:2]})")
    p = train("three", 3, 1, expect=None)
    lines = [l for l in p.stderr.splitlines() if l.startswith("zen train: error")]
    check("-np 3: one line, the number of ranks must be a power of two",
          p.returncode != 0 and len(lines) == 1 and "power of two" in lines[0], f"({lines[:1]})")
    p = train("np2-a1", 4, 1, "--set", "max_steps=10", "--resume", expect=None)
    lines = [l for l in p.stderr.splitlines() if l.startswith("zen train: error")]
    check("resume with other micro-batches per step: one line naming both",
          p.returncode != 0 and len(lines) == 1 and "2 ranks x grad_accum 1" in lines[0], f"({lines[:1]})")
    # ---- 6: CUDA ranks (the emulated backend, one emulated GPU per rank) ----
    if emu:
        emu_env = dict(ENV, ZEN_EMU_DEVICES="2")
        def train_emu(out, ranks, accum, env=emu_env, expect=0):
            cmd = [emu, "train", w("run.json"), "--model", w("model"), "--data", w("data.h5"), "--out", w(out),
                   "--set", f"grad_accum={accum}", "--set", "device=cuda", "--set", "max_steps=4"]
            return run((MPIRUN + ["-np", str(ranks)] if ranks else []) + cmd, expect=expect, env=env)
        train_emu("cuda-one-a2", 0, 2)
        p = train_emu("cuda-np2", 2, 1)
        check("CUDA (emulated), -np 2 = one process grad_accum 2: metrics and adapter identical",
              raw_fields(w("cuda-np2")) == raw_fields(w("cuda-one-a2")) and
              same_file(w("cuda-np2", "adapter_model.safetensors"), w("cuda-one-a2", "adapter_model.safetensors")),
              "(GPU 0 and 1; gradients through host memory)")
        p = train_emu("cuda-toomany", 2, 1, env=ENV, expect=None)
        lines = [l for l in p.stderr.splitlines() if l.startswith("zen train: error")]
        check("CUDA: more ranks on a machine than GPUs is one line", p.returncode == 2 and len(lines) == 1 and
              "rank 1" in lines[0] and "GPU 1" in lines[0], f"({lines[:1]})")
    harness.finish()


if __name__ == "__main__":
    main()
