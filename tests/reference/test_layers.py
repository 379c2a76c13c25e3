#!/usr/bin/env python3
"""tests/reference/test_layers.py: scripts/check_layers passes on this tree,
and fails, naming the file and the include, on copies of it with
- an upward include planted (model/lora.c including train/dist.h);
- an include of a file that does not exist;
- a circle planted inside a room (data/pairs.h including data/pack.h, which
  reaches pairs.h back through a planted include)."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(ROOT, "scripts", "check_layers")


def copy_tree(dest):
    rooms = [r for r in open(CHECK).read().split("ROOMS = [", 1)[1].split("]", 1)[0].replace('"', "").split(", ")]
    for r in rooms:
        shutil.copytree(os.path.join(ROOT, r), os.path.join(dest, r))
    return rooms


def plant(path, line):
    text = open(path).read()
    first = text.index("#include")
    open(path, "w").write(text[:first] + line + "\n" + text[first:])


def main():
    zen, work, w = harness.setup()
    p = subprocess.run(["/usr/bin/python3", CHECK, ROOT], capture_output=True, text=True)
    harness.check("check_layers passes on the tree", p.returncode == 0, p.stdout.strip().splitlines()[-1:])
    cases = [("an upward include", "model/lora.c", '#include "../train/dist.h"',
              "model/lora.c: #include \"../train/dist.h\": model/ reaches up to train/"),
             ("a missing header", "formats/gguf.c", '#include "nowhere.h"', "formats/gguf.c: #include \"nowhere.h\": no such file"),
             ("a circle inside a room", "data/pack.h", '#include "pairs.h"', "a circle of includes inside data/")]
    for i, (what, f, line, want) in enumerate(cases):
        tree = w(f"tree{i}")
        copy_tree(tree)
        plant(os.path.join(tree, f), line)
        if what.startswith("a circle"):
            plant(os.path.join(tree, "data/pairs.c"), '#include "pack.h"')
        p = subprocess.run(["/usr/bin/python3", CHECK, tree], capture_output=True, text=True)
        harness.check(f"check_layers fails on {what}, naming it", p.returncode == 1 and want in p.stdout,
                      p.stdout.strip().splitlines()[:2])
    harness.finish()


if __name__ == "__main__":
    main()
