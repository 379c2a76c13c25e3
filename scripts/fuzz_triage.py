#!/usr/bin/env python3
"""scripts/fuzz_triage.py: sorts fuzzer findings by where they happen.
Replays each input with the target binary and reads the sanitizer report:
the first stack frame that is not the sanitizer's or libFuzzer's own (nor
malloc) decides. Frames in an uninstrumented library (libhdf5) make it that
library's bug; frames in zen's sources make it zen's.

usage: scripts/fuzz_triage.py BINARY INPUT...   prints 'zen|library|none PATH: line'"""
import os
import re
import subprocess
import sys

SKIP = re.compile(r" in (__interceptor_|__asan|__sanitizer|__lsan|__ubsan|fuzzer::|malloc|calloc|realloc|free|"
                  r"operator |__libc_|_start|LLVMFuzzerTestOneInput)")


def classify(binary, path):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1",
               LSAN_OPTIONS="suppressions=" + os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                                           "fuzz", "lsan_hdf5.supp"))
    p = subprocess.run([binary, "-rss_limit_mb=2560", "-timeout=20", path], capture_output=True, text=True, env=env,
                       timeout=120)
    report = p.stderr
    if p.returncode == 0:
        return "none", "no longer reproduces"
    head = next((l for l in report.splitlines() if "ERROR" in l or "SUMMARY" in l), "?").strip()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for line in report.splitlines():
        line = line.strip()
        if not re.match(r"#\d+ ", line) or SKIP.search(line):
            continue
        if root + "/" in line and re.search(r"\.(c|cpp|h|cuh):\d+", line):  # a frame of zen's own sources
            return "zen", f"{head} | {line}"
        if re.search(r"\(/\S+\.so[.\d]*\+0x", line) and "libclang_rt" not in line:
            return "library", f"{head} | {line}"
        # an interceptor or runtime frame inside the binary (strdup, memcpy, ...): look further
    return ("library" if "libhdf5" in report else "zen"), head


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    for path in sys.argv[2:]:
        kind, why = classify(sys.argv[1], path)
        print(f"{kind} {path}: {why[:300]}")


if __name__ == "__main__":
    main()
