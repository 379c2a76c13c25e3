"""tests/reference/harness.py: the command line every integration test takes
(--zen BINARY --work DIR) and a fresh work directory."""
import argparse
import os
import shutil
import subprocess

results = []


def check(name, ok, detail=""):
    """records and prints one named check"""
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")


def finish():
    """prints the closing line and exits with the outcome"""
    import sys
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


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
