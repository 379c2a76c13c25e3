#!/usr/bin/env python3
"""tests/reference/test_usage.py: the usage text comes from the option tables
that parse the options, and README's command-line synopsis agrees with it.

- every option README's "Command line" block names for a command is in
  `zen CMD --help` and in `zen --help`, and every option the tables hold is
  in README (so neither drifts);
- `zen CMD --help` exits 0 with a line per option, also after other options;
- an unknown option is one line naming it, exit 2;
- `zen --version` names the version, the commit, the build type, the CUDA
  and MPI status and the kernel levels."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")


def readme_options():
    """{command: set of --options} from README's Command line code block"""
    text = open(README).read()
    block = text.split("## Command line", 1)[1].split("```", 2)[1]
    opts, cmd = {}, None
    for line in block.splitlines():
        if line.startswith("zen "):  # a new command ("zen --help" is none)
            m = re.match(r"zen (\w+)", line)
            cmd = m.group(1) if m else None
        if cmd:
            opts.setdefault(cmd, set()).update(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line))
    return opts


def main():
    zen, work, w = harness.setup()
    want = readme_options()
    top = subprocess.run([zen, "--help"], capture_output=True, text=True)
    harness.check("zen --help exits 0", top.returncode == 0, top.stderr.strip())
    commands, synopsis, cur = [], {}, None  # each command's synopsis: its line and the indented ones after it
    for line in top.stdout.splitlines():
        m = re.match(r"^  zen (\w+) ", line)
        if m:
            cur = m.group(1)
            commands.append(cur)
            synopsis[cur] = line
        elif cur and line.startswith(" " * 15):
            synopsis[cur] += line
        else:
            cur = None
    harness.check("zen --help lists the commands README lists", set(commands) == set(want),
                  f"help {sorted(commands)}, README {sorted(want)}")
    for cmd in sorted(set(want) | set(commands)):
        p = subprocess.run([zen, cmd, "--help"], capture_output=True, text=True)
        have = set(re.findall(r"^  (--[a-z][a-z0-9-]*)", p.stdout, re.M))
        in_top = set(re.findall(r"\[(--[a-z][a-z0-9-]*)", synopsis.get(cmd, "")))
        missing_help = want.get(cmd, set()) - have
        missing_top = want.get(cmd, set()) - in_top
        missing_readme = have - want.get(cmd, set())
        harness.check(f"zen {cmd}: every option README names is in `zen {cmd} --help` and in `zen --help`, and "
                      "every option the table holds is in README",
                      p.returncode == 0 and not missing_help and not missing_top and not missing_readme,
                      f"not in {cmd} --help: {sorted(missing_help)}; not in zen --help: {sorted(missing_top)}; "
                      f"not in README: {sorted(missing_readme)}")
    p = subprocess.run([zen, "grad", "--seq-len", "8", "--help"], capture_output=True, text=True)
    harness.check("--help after other options prints the help", p.returncode == 0 and "--seq-len" in p.stdout)
    p = subprocess.run([zen, "eval", "--model", "--help"], capture_output=True, text=True)
    harness.check("--help as an option's value is that value, not a request for help (one line, exit 2)",
                  p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr.strip())
    p = subprocess.run([zen, "grad", "--no-such-option"], capture_output=True, text=True)
    harness.check("an unknown option: one line naming it, exit 2", p.returncode == 2 and
                  "--no-such-option" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr.strip())
    p = subprocess.run([zen, "--version"], capture_output=True, text=True)
    lines = p.stdout.splitlines()
    ok = p.returncode == 0 and re.match(r"zen \d+\.\d+\.\d+ \(commit \S+", lines[0] if lines else "") and \
        re.search(r"^build: (Release|Debug|RelWithDebInfo|MinSizeRel)", p.stdout, re.M) and \
        re.search(r"^CUDA backend: (built|not built)", p.stdout, re.M) and re.search(r"^MPI: (on|off)", p.stdout, re.M) \
        and re.search(r"^kernel levels: generic", p.stdout, re.M) and "oneDNN" in p.stdout and "OpenBLAS" in p.stdout
    harness.check("zen --version: version and commit, build type, CUDA, MPI, oneDNN, OpenBLAS, kernel levels", ok,
                  p.stdout.strip().replace("\n", " | "))
    harness.finish()


if __name__ == "__main__":
    main()
