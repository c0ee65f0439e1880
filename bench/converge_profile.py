"""Where a new group's convergence spends its time, in each of the three processes (the
group, ``instance-file`` and ``flavor-vanilla``): ``py-spy`` samples each process from
just before the commit until the group is converged, over several runs, and the
functions are ranked by the samples in which they were running (self) and on the stack
(total). Samples of a thread that waits (a pool thread for work, the loop in ``select``)
are left out: py-spy's own test of idleness does not work in every container. In the
group process that leaves out uvloop's own C code too, which a sample cannot tell from
its waiting.

``py-spy`` attaches with ptrace: as root, or where ``kernel.yama.ptrace_scope`` is 0.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.group_converge import spec
from bench.stack import PARENT_HELP, plugin_stack
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient

PROCESSES = ("group", "instance-file", "flavor-vanilla")
WAITING = {"_worker (thread.py)", "EpollSelector.select (selectors.py)",
           "Runner.run (runners.py)", "Condition.wait (threading.py)",
           "Event.wait (threading.py)"}
"""Frames that, running, are waiting: a pool thread for work, an event loop for events
(uvloop's loop runs in C under ``Runner.run``)."""


def pyspy() -> str:
    found = Path(sys.executable).parent / "py-spy"
    if not found.exists():
        raise SystemExit("py-spy is not installed here: pip install py-spy (the dev extra)")
    return str(found)


def start_sampling(pid: int, out: Path, rate: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([pyspy(), "record", "--pid", str(pid), "--rate", str(rate),
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_sampling(sampler: subprocess.Popen[bytes]) -> None:
    sampler.send_signal(signal.SIGINT)
    sampler.wait(30)


def tally(paths: list[Path]) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """Samples per function (its name and file), as the running one and on the stack, from
    ``py-spy``'s collapsed stacks; and the samples in all."""
    running: collections.Counter[str] = collections.Counter()
    on_stack: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = [_short(f) for f in stack.split(";")[1:]]  # the first is the thread
            if not frames or frames[-1] in WAITING:
                continue
            total += n
            running[frames[-1]] += n
            for frame in set(frames):
                on_stack[frame] += n
    return running, on_stack, total


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` as ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({os.path.basename(where.split(':')[0])})"


def report(samples: dict[str, list[Path]], rate: int, runs: int, top: int) -> None:
    for name in PROCESSES:
        running, on_stack, total = tally(samples[name])
        print(f"\n{name}: {total / rate / runs * 1e3:.0f} ms of CPU samples per run")
        print("  self:  " + "; ".join(f"{f} {n / rate / runs * 1e3:.0f} ms"
                                      for f, n in running.most_common(top)))
        print("  total: " + "; ".join(f"{f} {n / rate / runs * 1e3:.0f} ms"
                                      for f, n in on_stack.most_common(top * 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=int, default=1000, help="samples per second")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--max-parallel", type=int, default=500)
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="converge-profile."))
    samples: dict[str, list[Path]] = {name: [] for name in PROCESSES}
    with plugin_stack(*reversed(PROCESSES), poll=5, parent=args.parent) as stack, \
            RPCClient(stack.socket("group"), timeout=300) as conn:
        group = GroupClient(conn)
        for run in range(args.runs):
            samplers = []
            for name in PROCESSES:
                samples[name].append(out / f"{name}.{run}.txt")
                samplers.append(start_sampling(stack.pid(name), samples[name][-1], args.rate))
            time.sleep(1.0)  # py-spy attaches
            start = time.perf_counter()
            group.commit_group(spec(f"p{run}", args.size, args.max_parallel), False)
            while not group.describe_group(f"p{run}").converged:
                time.sleep(0.01)
            took = time.perf_counter() - start
            for sampler in samplers:
                stop_sampling(sampler)
            print(f"run {run}: {args.size} converged in {took:.2f} s (sampled)")
            group.destroy_group(f"p{run}")
    report(samples, args.rate, args.runs, args.top)


if __name__ == "__main__":
    main()
