"""Cold start of the CLI: wall time of `infrakit plugin ls`, `infrakit instance --name
instance-file describe` and `infrakit group describe web`, with 4 plugins running and a
converged group of 3.

Each run is a fresh process started from an installed console script, as a user runs it,
with bytecode caching on (some sandboxes set PYTHONDONTWRITEBYTECODE, which would make every
run compile the sources again). With `--infrakit PATH` given more than once the scripts are
run in turn, run after run, so that a busy machine slows each of them alike and they can be
compared (say, this checkout's against another's).
Prints the median, p90 and minimum wall time over N runs of each command, and the median CPU
time (user + system) of its process, which a busy machine inflates much less than the wall
time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
GROUP = {"ID": "web", "Properties": {
    "Allocation": {"Size": 3},
    "Instance": {"Plugin": "instance-file", "Properties": {}},
    "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}}
COMMANDS = (["plugin", "ls"], ["instance", "--name", "instance-file", "describe"],
            ["group", "describe", "web"])
LIBRARIES = ("pass", "import click", "import msgspec", "import http.client",
             "import click, msgspec")


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """The wall time and the CPU time of one run of ``cmd``."""
    c0, t0 = _cpu(), time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, _cpu() - c0


def _line(label: str, runs: list[tuple[float, float]]) -> str:
    s = sorted(wall for wall, _ in runs)
    cpu = statistics.median(c for _, c in runs)
    return (f"{label:58s} median {statistics.median(s)*1e3:6.1f} ms"
            f"  p90 {s[int(len(s)*0.9)]*1e3:6.1f} ms  min {s[0]*1e3:6.1f} ms"
            f"  cpu {cpu*1e3:6.1f} ms  (n={len(s)})")


def _setup(infrakit: str, env: dict[str, str]) -> None:
    """The plugins, 10 instances of their own, and a group of 3, converged."""
    subprocess.run([infrakit, "plugin", "start", "instance-file", "flavor-vanilla", "group",
                    "instance-file:spare"], env=env, check=True, stdout=subprocess.DEVNULL)
    for i in range(10):
        subprocess.run([infrakit, "instance", "--name", "spare", "provision", "-"],
                       input=f'{{"Tags": {{"n": "{i}"}}}}'.encode(), env=env, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run([infrakit, "group", "commit", "--wait", "--wait-timeout", "60", "-"],
                   input=json.dumps(GROUP).encode(), env=env, check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--infrakit", action="append", metavar="PATH",
                        help="a console script to time (default: this venv's); repeatable")
    args = parser.parse_args()
    scripts = args.infrakit or [str(VENV_BIN / "infrakit")]
    home = tempfile.mkdtemp(prefix="ikb", dir="/tmp")
    env = {**os.environ, "INFRAKIT_HOME": home}
    env.pop("INFRAKIT_PLUGINS_DIR", None)
    # As on a user's machine: bytecode is cached after the first run (the warm-up runs).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    try:  # a plugin that fails to start must not leave those started before it
        _setup(scripts[0], env)
        # What the start-up is made of: the interpreter, then each library it may load.
        for code in LIBRARIES:
            s = [_once([sys.executable, "-c", code], env) for _ in range(args.runs)]
            print(_line(f"python -c {code!r}", s))
        samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for script in scripts:  # warm the page cache and the bytecode
            for cmd in COMMANDS:
                for _ in range(3):
                    _once([script, *cmd], env)
        for _ in range(args.runs):
            for script in scripts:
                for c, cmd in enumerate(COMMANDS):
                    samples.setdefault((script, c), []).append(_once([script, *cmd], env))
        for script in scripts:
            for c, cmd in enumerate(COMMANDS):
                label = f"infrakit {' '.join(cmd)}"
                print(_line(label if len(scripts) == 1 else f"{script}: {' '.join(cmd)}",
                            samples[(script, c)]))
    finally:
        infrakit = scripts[0]
        subprocess.run([infrakit, "group", "destroy", "web"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run([infrakit, "plugin", "stop", "--force", "instance-file", "flavor-vanilla",
                        "group", "spare"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
