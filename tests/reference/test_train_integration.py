#!/usr/bin/env python3
"""tests/reference/test_train_integration.py: `zen train` end to end.

1. A tiny model learns a repeating pattern: training loss ends far below its start.
2. The saved adapter, loaded by the float64 PyTorch reference, gives the eval
   loss that `zen eval` reports (within harness.fp32_bound), and the run's final eval_loss.
3. A run killed with SIGKILL in the middle of writing a checkpoint resumes from
   the last complete one, and the resumed run's losses and final adapter are
   bit-identical to an uninterrupted run (dropout, accumulation, shuffling and
   a held-out split all on).
4. A non-finite loss stops the run with one clear line and a non-zero exit."""
import json
import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from zen_files import read_adapter, read_batch, read_model_dir, write_model, make_config, write_tokens  # noqa: E402
from qwen3_lora_ref import Qwen3LoraReference  # noqa: E402

from harness import check, run  # noqa: E402



def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def raw_loss_fields(out):
    """the loss values exactly as written (text), by step"""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return {json.loads(l)["step"]: l.split('"loss": ')[1].split(",")[0] for l in f}


def reference_eval(model_dir, adapter_dir, data, T):
    import h5py
    cfg, weights = read_model_dir(model_dir)
    acfg, adapter = read_adapter(adapter_dir)
    ref = Qwen3LoraReference(cfg, weights, acfg, adapter)
    with h5py.File(data, "r") as f:
        n = (f["tokens"].shape[0] - 1) // T
    return ref.loss(*read_batch(data, T, n)).item()


def main():
    zen, work, w = harness.setup()
    rng = np.random.default_rng(11)

    # ---- 1 + 2: a learnable pattern, then the adapter through the reference ----
    run([zen, "init", "--preset", "tiny", "--seed", "3", "--out", w("model")])
    pattern = rng.integers(0, 256, 7)
    write_tokens(w("pattern.h5"), np.tile(pattern, 400), 256)
    val_tokens = np.tile(pattern, 40)[3:]
    write_tokens(w("val.h5"), val_tokens, 256, loss_mask=(np.arange(len(val_tokens)) % 4 != 0))
    cfg = {"seq_len": 32, "batch_size": 4, "max_steps": 50, "lr": 1e-2, "warmup_steps": 5, "log_every": 1,
           "eval_every": 25, "save_every": 25, "val_data": w("val.h5"), "lora": {"r": 8, "alpha": 16}, "dtype": "f32"}
    with open(w("pattern.json"), "w") as f:
        json.dump(cfg, f)
    run([zen, "train", w("pattern.json"), "--model", w("model"), "--data", w("pattern.h5"), "--out", w("run1")])
    m = metrics(w("run1"))
    first, last = m[0]["loss"], m[-1]["loss"]
    check("pattern: loss falls", last < 0.1 * first, f"(step 1: {first:.4f}, step {m[-1]['step']}: {last:.4f})")
    check("pattern: checkpoints and final adapter", all(os.path.exists(w("run1", p)) for p in [
        "checkpoint-25/optimizer.safetensors", "checkpoint-50/trainer_state.json", "adapter_model.safetensors",
        "adapter_config.json", "train_config.json"]))
    # the base model as typed relative to the working directory comes out absolute, so that PEFT finds it anywhere
    with open(w("one.json"), "w") as f:
        json.dump(dict(cfg, max_steps=1, eval_every=0, save_every=0), f)
    run([os.path.abspath(zen), "train", "one.json", "--model", "model", "--data", "pattern.h5", "--out", "run-rel"],
        cwd=work)
    with open(w("run-rel", "adapter_config.json")) as f:
        base = json.load(f)["base_model_name_or_path"]
    check("adapter_config: base_model_name_or_path absolute for a local model", base == os.path.realpath(w("model")),
          f"({base})")
    # transformers' Qwen3 code assumes a 4096 sliding window unless config.json says there is none
    with open(w("model", "config.json")) as f:
        hf = json.load(f)
    check("zen init: config.json says there is no sliding window", hf.get("use_sliding_window") is False and
          "sliding_window" in hf and hf["sliding_window"] is None and hf.get("max_window_layers") == 2, f"({ {k: hf.get(k) for k in ('use_sliding_window', 'sliding_window', 'max_window_layers')} })")
    plot = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts",
                        "plot_metrics")
    run(["/usr/bin/python3", plot, w("run1", "metrics.jsonl"), w("loss.png")])
    with open(w("loss.png"), "rb") as f:
        check("plot_metrics: writes a PNG", f.read(8) == b"\x89PNG\r\n\x1a\n")
    out = run([zen, "eval", "--model", w("model"), "--adapter", w("run1"), "--data", w("val.h5"), "--seq-len", "32",
               "--batch", "3", "--dtype", "f32"]).stdout.split()
    zen_eval, zen_ppl = float(out[1]), float(out[3])
    ref = reference_eval(w("model"), w("run1"), w("val.h5"), 32)
    mcfg, _ = read_model_dir(w("model"))
    harness.check_fp32("eval: zen eval vs float64 reference with the saved adapter", abs(zen_eval - ref), abs(ref),
                       harness.model_length(mcfg, 32), what=f"(zen {zen_eval:.8f}, reference {ref:.8f})")
    check("eval: ppl = exp(loss)", abs(zen_ppl - np.exp(zen_eval)) <= 1e-6 * zen_ppl)
    final_eval = m[-1].get("eval_loss")
    check("eval: the run's final eval_loss equals zen eval's", final_eval is not None and
          abs(final_eval - zen_eval) <= 1e-6 * abs(zen_eval), f"({final_eval} vs {zen_eval})")

    # ---- 3: SIGKILL in the middle of a checkpoint, then --resume ----
    write_tokens(w("text.h5"), rng.integers(0, 256, 3000), 256, loss_mask=rng.integers(0, 2, 3000))
    cfg = {"seq_len": 16, "batch_size": 3, "grad_accum": 2, "max_steps": 9, "lr": 5e-3, "warmup_steps": 2,
           "val_fraction": 0.1, "eval_every": 4, "save_every": 3, "keep_checkpoints": 0, "log_every": 1,
           "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "targets": ["q", "v", "o", "down"]}, "dtype": "f32"}
    with open(w("resume.json"), "w") as f:
        json.dump(cfg, f)
    base = [zen, "train", w("resume.json"), "--model", w("model"), "--data", w("text.h5")]
    run(base + ["--out", w("full")])
    env = dict(os.environ, ZEN_FAULT_KILL_IN_CHECKPOINT="6")
    p = run(base + ["--out", w("killed")], env=env, expect=None)
    check("kill: process died by SIGKILL while saving checkpoint-6", p.returncode == -signal.SIGKILL,
          f"(exit {p.returncode})")
    check("kill: checkpoint-3 complete, checkpoint-6 absent", os.path.exists(w("killed", "checkpoint-3",
          "trainer_state.json")) and not os.path.exists(w("killed", "checkpoint-6")))
    p = run(base + ["--out", w("killed")], expect=2)
    check("kill: a fresh run into the same directory is refused", "--resume" in p.stderr)
    p = run(base + ["--out", w("killed"), "--resume"])
    check("resume: continued from checkpoint-3, not from scratch", "resuming at step 3" in p.stderr and
          "step 3/9" not in p.stderr and "step 4/9" in p.stderr)
    full, resumed = raw_loss_fields(w("full")), raw_loss_fields(w("killed"))
    check("resume: the same steps logged once each", sorted(resumed) == list(range(1, 10)))
    check("resume: losses bit-identical to the uninterrupted run", full == resumed,
          f"({sum(full[s] == resumed.get(s) for s in full)}/{len(full)} equal)")
    same_adapter = open(w("full", "adapter_model.safetensors"), "rb").read() == \
        open(w("killed", "adapter_model.safetensors"), "rb").read()
    check("resume: final adapter byte-identical", same_adapter)
    full_m = {r["step"]: r.get("eval_loss") for r in metrics(w("full"))}
    res_m = {r["step"]: r.get("eval_loss") for r in metrics(w("killed"))}
    check("resume: eval losses identical", full_m == res_m)
    p = run(base + ["--out", w("killed"), "--resume", "--set", "lr=1e-3"], expect=2)
    check("resume: a changed recipe is refused, naming the key", "'lr'" in p.stderr and
          len(p.stderr.strip().splitlines()) == 1, p.stderr.strip())

    # the same in bf16 compute, where the CPU has native bf16 (else said and skipped)
    p = run(base + ["--out", w("full16"), "--set", "dtype=bf16"], expect=None)
    if p.returncode == 2 and "native bf16" in p.stderr:
        print(f"SKIP resume in bf16: {p.stderr.strip()}")
    elif p.returncode != 0:
        check("resume bf16: the uninterrupted run", False, p.stderr.strip()[-300:])
    else:
        p = run(base + ["--out", w("killed16"), "--set", "dtype=bf16"], env=env, expect=None)
        p = run(base + ["--out", w("killed16"), "--set", "dtype=bf16", "--resume"])
        same = open(w("full16", "adapter_model.safetensors"), "rb").read() == \
            open(w("killed16", "adapter_model.safetensors"), "rb").read()
        check("resume bf16: killed in checkpoint-6, resumed: losses and adapter bit-identical",
              "resuming at step 3" in p.stderr and raw_loss_fields(w("full16")) == raw_loss_fields(w("killed16"))
              and same)
        p = run(base + ["--out", w("killed"), "--resume", "--set", "dtype=bf16"], expect=2)
        check("resume: an f32 run resumed in bf16 is refused, naming dtype", "'dtype' (f32, now bf16)" in p.stderr,
              p.stderr.strip())

    # ---- accumulation through zen train: batch 4 x accum 1 == batch 1 x accum 4 ----
    # (same sequences per step by construction; no dropout)
    acc = {"seq_len": 16, "max_steps": 3, "lr": 5e-3, "log_every": 1, "lora": {"r": 4, "alpha": 8}, "dtype": "f32"}
    for name, b, a in (("acc_b4", 4, 1), ("acc_a4", 1, 4)):
        with open(w(name + ".json"), "w") as f:
            json.dump(dict(acc, batch_size=b, grad_accum=a), f)
        run([zen, "train", w(name + ".json"), "--model", w("model"), "--data", w("text.h5"), "--out", w(name)])
    l4, a4 = metrics(w("acc_b4")), metrics(w("acc_a4"))
    # two fp32 computations (another summation order), three steps each moving the adapter: the losses
    # against the bound of a step's 4 x 16 rows, three times over
    err = max(abs(x["loss"] - y["loss"]) for x, y in zip(l4, a4))
    harness.check_fp32("accumulation: batch 4 x 1 and batch 1 x 4 give the same losses", err,
                       max(abs(x["loss"]) for x in l4), harness.model_length(mcfg, 16, 4 * 16), results=2 * 3,
                       what="largest difference")

    # ---- 4: a non-finite loss ----
    mcfg = make_config(hidden=16, inter=24, layers=1, heads=2, kv_heads=1, head_dim=8, vocab=256, tied=True)
    write_model(w("nan_model"), mcfg, rng)
    from zen_files import read_safetensors, write_safetensors
    st = w("nan_model", "model.safetensors")
    weights, _ = read_safetensors(st)
    weights["model.layers.0.mlp.down_proj.weight"][3, 5] = np.nan
    write_safetensors(st, weights)
    p = run([zen, "train", w("resume.json"), "--model", w("nan_model"), "--data", w("text.h5"), "--out", w("nan")],
            expect=None)
    lines = p.stderr.strip().splitlines()
    check("non-finite: NaN weights are the input's fault: exit 2 naming the tensor and element",
          p.returncode == 2 and "model.layers.0.mlp.down_proj.weight" in lines[-1] and "[3, 5]" in lines[-1] and
          lines[-1].startswith("zen train: error:"), lines[-1] if lines else "")
    # finite weights whose products overflow: exit 1 (not the input's NaN), non-finite
    weights["model.layers.0.mlp.down_proj.weight"][3, 5] = 0.0
    weights["model.norm.weight"][:] = 3e38  # finite, but the final norm's output overflows
    write_safetensors(st, weights)
    p = run([zen, "train", w("resume.json"), "--model", w("nan_model"), "--data", w("text.h5"), "--out", w("overflow")],
            expect=None)
    lines = p.stderr.strip().splitlines()
    check("non-finite: an overflow with finite weights exits 1 with one line",
          p.returncode == 1 and "non-finite" in lines[-1] and "finite weights" in lines[-1], lines[-1] if lines else "")

    harness.finish()


if __name__ == "__main__":
    main()
