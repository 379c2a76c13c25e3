"""scripts/zen_bench.py: what the benchmark scripts share: the model FLOPs per
token that MFU is computed from, and a timed `zen train` run read back from its
metrics.jsonl. (A module, imported by scripts/bench_cpu and scripts/bench_gpu.)"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import numpy as np  # noqa: E402

from zen_files import peft_key, proj_dims  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def model_flops_per_token(cfg, T, r):
    """4 per frozen projection/LM-head parameter (forward + input gradient),
    6 r (in + out) per LoRA pair, 12 hd (T/2) per head and layer for causal
    attention (forward QK, PV; backward dP, dQ, dK, dV). Recomputation is not
    counted."""
    L, C, V = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
    frozen = sum(fi * fo for fi, fo in (proj_dims(cfg, t) for t in TARGETS)) * L + V * C
    lora = sum(6 * r * (fi + fo) for fi, fo in (proj_dims(cfg, t) for t in TARGETS)) * L
    attn = 12 * cfg["head_dim"] * (T / 2) * cfg["num_attention_heads"] * L
    return 4 * frozen + lora + attn


def prefill_flops_per_token(cfg, T):
    """a forward pass over a prompt of T tokens: 2 per projection parameter
    and 4 hd (T/2) per head and layer for causal attention (QK, PV); the LM
    head runs on the last token only and is not counted"""
    L = cfg["num_hidden_layers"]
    frozen = sum(fi * fo for fi, fo in (proj_dims(cfg, t) for t in TARGETS)) * L
    return 2 * frozen + 4 * cfg["head_dim"] * (T / 2) * cfg["num_attention_heads"] * L


def decode_flops_per_token(cfg):
    """a decode step's matrix FLOPs per sequence: 2 per projection and LM-head parameter (attention over the
    cache, which grows with the position, is not counted)"""
    L, C, V = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
    return 2 * (sum(fi * fo for fi, fo in (proj_dims(cfg, t) for t in TARGETS)) * L + V * C)


def fresh_adapter(cfg, r, seed=0):
    """PEFT-keyed float64 LoRA tensors as a fresh adapter has them: A uniform
    in +-1/sqrt(in), B zero, rank r on all seven targets of every layer"""
    rng = np.random.default_rng(seed)
    adapter = {}
    for layer in range(cfg["num_hidden_layers"]):
        for t in TARGETS:
            fin, fout = proj_dims(cfg, t)
            adapter[peft_key(layer, t, "A")] = rng.uniform(-1, 1, (r, fin)) / np.sqrt(fin)
            adapter[peft_key(layer, t, "B")] = np.zeros((fout, r))
    return adapter


def run_zen_train(zen, model, data, out, recipe, env=None, prefix=()):
    """Runs `zen train` with the recipe (a dict written as the run config) and
    returns (metrics rows, stderr, /usr/bin/time's peak RSS in KiB or None).
    prefix: a command to run zen under (e.g. /usr/bin/time -f %M)."""
    path = out + ".json"
    with open(path, "w") as f:
        json.dump(recipe, f)
    p = subprocess.run(list(prefix) + [zen, "train", path, "--model", model, "--data", data, "--out", out],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"zen train failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
    rss = None
    if prefix and prefix[0].endswith("time"):
        rss = int(p.stderr.strip().splitlines()[-1])
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    return rows, p.stderr, rss


def timed_tokens_per_s(rows, tokens_per_step, warmup):
    """tokens/s over the steps after the first `warmup` ones (log_every = 1)"""
    if len(rows) <= warmup:
        sys.exit(f"need more than {warmup} logged steps, got {len(rows)}")
    seconds = rows[-1]["elapsed_s"] - rows[warmup - 1]["elapsed_s"]
    return tokens_per_step * (len(rows) - warmup) / seconds
