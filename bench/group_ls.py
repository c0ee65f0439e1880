"""What ``infrakit group ls`` costs with many groups: one ``Group.Summaries`` call for all
of them, against what a line per group read one call at a time (``Group.DescribeStatus``,
which asks the instance plugin) would cost, side by side on the same groups.

Groups of one file instance each (the vanilla flavor), a slow poll so that the passes
load the machine little; the figures are wall times on the client, with the machine's
load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.group_converge import spec
from bench.stack import PARENT_HELP, plugin_stack, wait
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient


def _timed(call: Callable[[], object], times: int) -> list[float]:
    """Wall seconds of each of ``times`` calls of ``call``."""
    out = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1e3:.1f} ms (min {min(values) * 1e3:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--poll", type=float, default=10.0, help="the groups' poll interval")
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with plugin_stack("instance-file", "flavor-vanilla", "group", poll=args.poll,
                      parent=args.parent) as stack, \
            RPCClient(stack.socket("group"), timeout=600) as conn:
        group = GroupClient(conn)
        ids = [f"g{n:04d}" for n in range(args.groups)]
        started = time.monotonic()
        for gid in ids:
            group.commit_group(spec(gid, 1, 500), False)
        print(f"{args.groups} groups committed in {time.monotonic() - started:.1f} s")
        wait(lambda: all(s.status == "converged" for s in group.summaries()), 600)
        summaries = _timed(group.summaries, 10)
        one_by_one = _timed(lambda: [group.describe_status(gid) for gid in ids], 1)
        cli = str(Path(sys.executable).parent / "infrakit")

        def ls() -> None:
            done = subprocess.run([cli, "group", "ls"], env=stack.env, capture_output=True,
                                  text=True, check=True)
            assert done.stdout.count("converged") == args.groups

        listing = _timed(ls, 5)
        traced = subprocess.run([cli, "--log", "5", "group", "ls"], env=stack.env,
                                capture_output=True, text=True, check=True).stderr
        calls = sum(line.startswith("-> ") for line in traced.splitlines())
        print(f"Group.Summaries of {args.groups} groups: {_ms(summaries)} (10 calls)")
        print(f"DescribeStatus of each group, one call after another: "
              f"{one_by_one[0] * 1e3:.0f} ms for {args.groups} calls")
        print(f"infrakit group ls: {_ms(listing)} (5 runs), {calls} call(s) to the plugin")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        for gid in ids:
            group.destroy_group(gid)


if __name__ == "__main__":
    main()
