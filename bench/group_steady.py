"""What a steady-state reconcile pass costs the group process, in CPU time, once a large
group has converged: describing the members, asking the flavor about their health (one
batch call per 500), planning. Also how long the group took to converge, how long
DescribeGroup takes at that size, and the resident memory of each process (now, and its
peak).

The CPU time is read from ``/proc/PID/stat`` of the group plugin over a window of several
passes; the passes are counted by ``DescribeStatus`` before and after the window (those
calls fall outside it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench.group_converge import spec
from bench.stack import PARENT_HELP, cpu_seconds, plugin_stack
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--poll", type=float, default=1.0, help="the group's poll interval")
    parser.add_argument("--window", type=float, default=15.0, help="seconds of passes")
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    with plugin_stack("instance-file", "flavor-vanilla", "group", poll=args.poll,
                      parent=args.parent) as stack, \
            RPCClient(stack.socket("group"), timeout=600) as conn:
        pid = stack.pid("group")
        group = GroupClient(conn)
        start = time.perf_counter()
        group.commit_group(spec("steady", args.size, 500), False)
        while not group.describe_group("steady").converged:
            time.sleep(0.2)
        print(f"size {args.size}: converged in {time.perf_counter() - start:.2f} s "
              f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        time.sleep(2 * args.poll)  # let the passes that resolved the provisions end
        before = group.describe_status("steady").passes
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.window)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        after = group.describe_status("steady").passes
        passes = after - before
        times = []
        for _ in range(10):
            start = time.perf_counter()
            members = group.describe_group("steady").instances or []
            times.append(time.perf_counter() - start)
        print(f"size {args.size}: {passes} passes in {t1 - t0:.1f} s (poll {args.poll:g} s); "
              f"group process CPU {cpu1 - cpu0:.2f} s, {(cpu1 - cpu0) / passes * 1e3:.0f} ms "
              f"per pass")
        print(f"DescribeGroup of {len(members)} members: median "
              f"{statistics.median(times) * 1e3:.0f} ms, min {min(times) * 1e3:.0f} ms, "
              f"max {max(times) * 1e3:.0f} ms (10 calls)")
        for name in ("group", "instance-file", "flavor-vanilla"):
            rss, peak = resident(stack.pid(name))
            print(f"{name}: resident {rss / 1024:.1f} MB, peak {peak / 1024:.1f} MB")
        start = time.perf_counter()
        group.destroy_group("steady")
        print(f"destroyed in {time.perf_counter() - start:.2f} s", flush=True)


def resident(pid: int) -> tuple[int, int]:
    """The resident memory of a process now and at its peak, in KiB."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


if __name__ == "__main__":
    main()
