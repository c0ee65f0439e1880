"""Many small groups under one group plugin (by default 1,000 groups of 10 members,
``instance-file`` and ``flavor-vanilla``): how long they take to converge when committed
one after another; the CPU of a round of passes over all of them, in each of the three
processes; and, after the group plugin is stopped and started again (as a manager's
restart would), how long until every group has converged again.

Convergence is read from the group plugin's ``/metrics`` page (one scrape tells every
group's ``infrakit_group_converged``); the passes from the count of its
``infrakit_group_reconcile_seconds`` histogram.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.group_converge import spec
from bench.stack import PARENT_HELP, Stack, cpu_seconds, plugin_stack, wait
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from tests.helpers import http_request

PROCESSES = ("group", "instance-file", "flavor-vanilla")
_CONVERGED = re.compile(rb'^infrakit_group_converged\{group="[^"]*"\} 1\.0$', re.M)
_PASSES = re.compile(rb"^infrakit_group_reconcile_seconds_count (\S+)$", re.M)


def scrape(stack: Stack) -> tuple[int, int]:
    """Groups converged, and passes so far, as the group plugin's metrics say."""
    answer = http_request(stack.socket("group"), method="GET", path="/metrics", headers={})
    assert answer.status == 200, answer.body[:200]
    passes = _PASSES.search(answer.body)
    return len(_CONVERGED.findall(answer.body)), int(float(passes[1])) if passes else 0


def restart_group(stack: Stack) -> float:
    """Stop the group plugin and start it again; seconds from the start until every group
    it resumed has converged."""
    infrakit = str(Path(sys.executable).parent / "infrakit")
    subprocess.run([infrakit, "plugin", "stop", "group"], env=stack.env, check=True,
                   stdout=subprocess.DEVNULL)
    start = time.monotonic()
    subprocess.run([infrakit, "plugin", "start", "group"], env=stack.env, check=True,
                   stdout=subprocess.DEVNULL)
    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--poll", type=float, default=5.0, help="the group's poll interval")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of passes")
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    n = args.groups
    print(f"{n} groups of {args.size}, poll {args.poll:g} s; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    with plugin_stack(*reversed(PROCESSES), poll=args.poll, parent=args.parent) as stack:
        start = time.monotonic()
        with RPCClient(stack.socket("group"), timeout=600) as conn:
            group = GroupClient(conn)
            for i in range(n):
                group.commit_group(spec(f"g{i}", args.size), False)
        committed = time.monotonic() - start
        wait(lambda: scrape(stack)[0] == n, 600)
        print(f"committed one by one in {committed:.2f} s; all converged "
              f"{time.monotonic() - start:.2f} s after the first commit", flush=True)
        time.sleep(2 * args.poll)  # the passes that followed the provisions end
        pids = {name: stack.pid(name) for name in PROCESSES}
        _, passes0 = scrape(stack)
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        time.sleep(args.window)
        cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        _, passes1 = scrape(stack)
        rounds = (passes1 - passes0) / n
        print(f"steady: {passes1 - passes0} passes in {args.window:g} s ({rounds:.1f} "
              f"rounds over all groups); CPU per round: " + ", ".join(
                  f"{name} {(cpu1[name] - cpu0[name]) / rounds * 1e3:.0f} ms"
                  for name in PROCESSES), flush=True)
        start = restart_group(stack)
        wait(lambda: stack.socket("group").exists() and scrape(stack)[0] == n, 600)
        print(f"after a restart of the group plugin: every group converged in "
              f"{time.monotonic() - start:.2f} s (from 'plugin start'); load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        with RPCClient(stack.socket("group"), timeout=600) as conn:
            for i in range(n):
                GroupClient(conn).destroy_group(f"g{i}")


if __name__ == "__main__":
    main()
