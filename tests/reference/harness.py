"""tests/reference/harness.py: the command line every integration test takes
(--zen BINARY --work DIR) and a fresh work directory."""
import argparse
import os
import shutil


def setup():
    """Returns (zen binary, work dir, join) with the work dir emptied."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--zen", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    return args.zen, args.work, lambda *p: os.path.join(args.work, *p)
