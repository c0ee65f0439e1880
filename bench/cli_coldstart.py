"""Cold start of the CLI: wall time of `infrakit plugin ls` and
`infrakit instance --name instance-file describe` with 3 plugins running.

Each run is a fresh process started from the installed console script, as a user runs it,
with bytecode caching on (some sandboxes set PYTHONDONTWRITEBYTECODE, which would make every
run compile the sources again).
Prints the median, p90 and minimum over N runs of each command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def _time(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - t0)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    infrakit = str(VENV_BIN / "infrakit")
    home = tempfile.mkdtemp(prefix="ikb", dir="/tmp")
    env = {**os.environ, "INFRAKIT_HOME": home}
    env.pop("INFRAKIT_PLUGINS_DIR", None)
    # As on a user's machine: bytecode is cached after the first run (the warm-up runs).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    try:  # a plugin that fails to start must not leave those started before it
        subprocess.run([infrakit, "plugin", "start", "instance-file", "flavor-vanilla",
                        "instance-file:spare"], env=env, check=True, stdout=subprocess.DEVNULL)
        for i in range(10):
            subprocess.run([infrakit, "instance", "--name", "instance-file", "provision", "-"],
                           input=f'{{"Tags": {{"n": "{i}"}}}}'.encode(), env=env, check=True,
                           stdout=subprocess.DEVNULL)
        # What the start-up is made of: the interpreter, then each library on the CLI's path.
        for code in ("pass", "import click", "import http.client", "import msgspec",
                     "import click, http.client, msgspec"):
            s = _time([sys.executable, "-c", code], env, args.runs)
            print(f"python -c {code!r:38s} median {statistics.median(s)*1e3:6.1f} ms")
        for cmd in (["plugin", "ls"], ["instance", "--name", "instance-file", "describe"]):
            _time([infrakit, *cmd], env, 3)  # warm the page cache
            s = sorted(_time([infrakit, *cmd], env, args.runs))
            print(f"infrakit {' '.join(cmd):40s} median {statistics.median(s)*1e3:6.1f} ms"
                  f"  p90 {s[int(len(s)*0.9)]*1e3:6.1f} ms  min {s[0]*1e3:6.1f} ms"
                  f"  (n={len(s)})")
    finally:
        subprocess.run([infrakit, "plugin", "stop", "--force", "instance-file",
                        "flavor-vanilla", "spare"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
