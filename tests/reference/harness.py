"""tests/reference/harness.py: the command line every integration test takes
(--zen BINARY --work DIR), a fresh work directory, named checks, and the one
rule for how far an fp32 result may lie from the float64 reference.

The rule (fp32_bound): a result that fp32 arithmetic built from terms whose
sizes add up to `terms` (for a vector: the norm of the whole of it), through
sums of at most `length` terms, may differ from the exact value by

    FP32_K * u * sqrt(length) * terms,        u = 2^-24, fp32's unit roundoff,

per fp32 computation compared (2 when zen is compared with zen, or with
llama.cpp, summed in another order). Rounding errors of a sum of n terms grow
like a random walk, sqrt(n) u; FP32_K covers the depth of the network that
feeds the sums (a gradient passes every layer twice) and keeps a 10x margin
over the worst ratio seen at every kernel level, thread count and OpenBLAS
core (README, How it is checked: Tolerances; scripts/tolerance_sweep
measures it). The length is the longest fp32 sum behind the result
(model_length): a dot product over the hidden size, the FFN, the heads or the
vocabulary (the softmax), attention over the sequence, and for a gradient the
rows it sums over; zen adds token losses and log-probabilities in double, so
a loss's or a summed log-probability's length is not its token count. Each
check says what its terms are:
- a loss (a mean of token losses): the loss itself;
- a gradient tensor: the norm of the whole gradient (every tensor);
- a result of summed log-probabilities (a DPO reward beta (log pi -
  log pi_ref), a loss): terms_of, the size of the sums it is made of, not of
  the difference;
- logits: the norm of the logit vector; probabilities: 1.
With ZEN_TOL_LOG=FILE every bounded check appends {"test", "check", "err",
"bound"} to FILE (scripts/tolerance_sweep gathers the worst over runs)."""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys

results = []

U32 = 2.0 ** -24   # fp32's unit roundoff (half an ulp of 1.0)
FP32_K = 64        # the rule above: the worst err / (u sqrt(length) terms) measured is 5.5 (README, Tolerances)


# mpirun as every test runs it. In the sanitizer build, ranks check memory errors but not leaks: Open MPI's
# own allocations (and those of its dlopen'ed plugins, which no suppression can name) are never freed. zen's
# own leaks are checked by the one-process runs.
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]
if "ASAN_OPTIONS" in os.environ:
    MPIRUN += ["-x", "ASAN_OPTIONS=" + os.environ["ASAN_OPTIONS"] + ":detect_leaks=0"]


def mpi_missing(zen):
    """why 2-rank checks cannot run here (mpirun absent, or zen built without MPI), printed as a skip; or None"""
    why = None
    if not shutil.which("mpirun"):
        why = "mpirun not found (apt-get install -y openmpi-bin)"
    elif "built without MPI" in subprocess.run(MPIRUN + ["-np", "2", zen, "info", "/nonexistent"], capture_output=True,
                                                text=True, env=dict(os.environ, OMP_NUM_THREADS="1")).stderr:
        why = "zen was built without MPI"
    if why:
        print(f"SKIP ranks: {why}")
    return why


def model_length(cfg, seq=1, rows=0):
    """the longest fp32 sum behind a result of the model of config.json cfg: a dot product over the hidden size,
    the FFN, the attention heads or the vocabulary, attention over seq positions, or the rows a gradient sums over"""
    return max(cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"],
               cfg["num_attention_heads"] * cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"]),
               seq, rows)


def check(name, ok, detail=""):
    """records and prints one named check"""
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")


def finish():
    """prints the closing line and exits with the outcome"""
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


def fp32_bound(terms, length, results=1):
    """the most fp32 rounding may move a result built from `terms` through sums of `length` (the rule above)"""
    return FP32_K * U32 * math.sqrt(max(length, 1)) * abs(terms) * results


def _log(name, err, bound):
    path = os.environ.get("ZEN_TOL_LOG")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"test": os.path.basename(sys.argv[0]), "check": name, "err": float(err),
                            "bound": float(bound)}) + "\n")


def fp32_close(name, err, terms, length, results=1):
    """err (an absolute difference, or a norm of differences) against fp32_bound: (ok, "err (bound ..., the share
    of it)"); logged under name"""
    bound = fp32_bound(terms, length, results)
    ok = bool(err <= bound)  # a NaN fails
    _log(name, err, bound)
    return ok, _bound_text(err, bound)


def _bound_text(err, bound):
    return f"{err:.1e} (bound {bound:.1e}, {err / bound if bound else float('inf'):.3f} of it)"


def check_fp32(name, err, terms, length, results=1, what=""):
    """one named check of err against fp32_bound(terms, length)"""
    ok, _ = fp32_close(name, err, terms, length, results)
    check(name, ok, f"{what} {_bound_text(err, fp32_bound(terms, length, results))}".strip())
    return ok


def grads_close(name, grads, ref_grads, length, results=1):
    """Every tensor of a gradient file against the reference (or another run): ||g - ref|| of each tensor
    against the bound whose terms are the norm of the whole reference gradient. (ok, text), the worst
    tensor named; a missing or extra tensor fails."""
    import numpy as np
    if set(grads) != set(ref_grads):
        return False, f"tensors differ: {sorted(set(grads) ^ set(ref_grads))[:3]}"
    whole = math.sqrt(sum(float(np.sum(np.square(g))) for g in ref_grads.values()))
    worst, key = -1.0, ""
    for k, g in ref_grads.items():
        e = float(np.linalg.norm(np.asarray(grads[k]) - g))
        if not e <= worst:
            worst, key = e, k
    ok, text = fp32_close(name, worst, whole, length, results)
    return ok, f"{text} [{key.split('layers.')[-1].replace('.weight', '')}]"


def loss_close(name, loss, ref_loss, length, results=1, terms=None):
    """a loss against the reference: terms = the loss itself unless the caller names others"""
    return fp32_close(name, abs(loss - ref_loss), abs(ref_loss) if terms is None else terms, length, results)


def check_against_reference(name, loss, ref_loss, grads, ref_grads, cfg, seq, rows, results=1, loss_terms=None,
                            extra_ok=True, extra=""):
    """the usual pair, one check: the loss of a zen grad (terms: the loss, or loss_terms; length: the model's
    and the sequence's) and every gradient tensor (length: and the rows)"""
    ok1, t1 = loss_close(f"{name}: loss", loss, ref_loss, model_length(cfg, seq), results, loss_terms)
    ok2, t2 = grads_close(f"{name}: gradients", grads, ref_grads, model_length(cfg, seq, rows), results)
    check(name, ok1 and ok2 and extra_ok, f"loss {t1}; gradients {t2}{'; ' + extra if extra else ''}")
    return ok1 and ok2


def check_resume(name, train, run_dir, last):
    """A finished run resumed from its checkpoint before `last` (a copy of run_dir without checkpoint-`last`
    and the finished adapter) by `train + ["--out", copy, "--resume"]`: one check that the adapter is the
    uninterrupted run's, byte for byte"""
    copy = run_dir + "-resumed"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy)
    for x in (f"checkpoint-{last}", "adapter_model.safetensors", "adapter_config.json"):
        y = os.path.join(copy, x)
        shutil.rmtree(y) if os.path.isdir(y) else os.remove(y)
    p = subprocess.run(train + ["--out", copy, "--resume"], capture_output=True, text=True)
    adapter = lambda d: open(os.path.join(d, "adapter_model.safetensors"), "rb").read()
    check(name, p.returncode == 0 and adapter(run_dir) == adapter(copy), p.stderr[-300:])


def run(cmd, expect=0, cwd=None, env=None):
    """runs a command; a different exit code (unless expect is None) stops the test"""
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    if expect is not None and p.returncode != expect:
        raise SystemExit(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p


zen_emu = None  # --zen-emu: zen with the emulated CUDA backend (tests/emu), where the build has it


def setup():
    """Returns (zen binary, work dir, join) with the work dir emptied; an
    optional --zen-emu BINARY lands in harness.zen_emu."""
    global zen_emu
    ap = argparse.ArgumentParser()
    ap.add_argument("--zen", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--zen-emu", default=None)
    args = ap.parse_args()
    zen_emu = args.zen_emu
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    return args.zen, args.work, lambda *p: os.path.join(args.work, *p)


def terms_of(fn, sums):
    """The size of the terms behind y = fn(sums) for a result computed from sums that each carry their own
    rounding (summed log-probabilities, say): |y| + sum_i |dy/ds_i| |s_i|, the first-order propagation of a
    relative error in every s_i. For a DPO reward beta (s_pi - s_ref) it is |y| + beta (|s_pi| + |s_ref|)."""
    import torch
    x = torch.tensor([float(s) for s in sums], dtype=torch.float64, requires_grad=True)
    y = fn(x)
    if not y.requires_grad:  # a count or an indicator: no rounding to carry
        return abs(float(y))
    (g,) = torch.autograd.grad(y, x, allow_unused=True)
    return abs(float(y)) + (float((g.abs() * x.detach().abs()).sum()) if g is not None else 0.0)


def check_grad_file(name, path, ref_loss, ref_grads, cfg, seq, rows, results=1, proc=None):
    """a `zen grad` output (its loss in __metadata__) against the reference, one check; proc: the process that
    wrote it, whose stderr is shown when it failed"""
    from zen_files import read_safetensors
    if proc is not None and proc.returncode:
        check(name, False, proc.stderr.strip()[-300:])
        return False
    grads, meta = read_safetensors(path)
    return check_against_reference(name, float(meta["loss"]), ref_loss, grads, ref_grads, cfg, seq, rows, results)
