"""What a steady-state reconcile pass costs the group process, in CPU time, once a large
group has converged: describing the members, asking the flavor about their health (one
batch call per 500), planning. Also how long DescribeGroup takes at that size.

The CPU time is read from ``/proc/PID/stat`` of the group plugin over a window of several
passes; the passes are counted by ``DescribeStatus`` before and after the window (those
calls fall outside it).
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

from bench.group_converge import spec
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--poll", type=float, default=1.0, help="the group's poll interval")
    parser.add_argument("--window", type=float, default=15.0, help="seconds of passes")
    parser.add_argument("--parent", default=str(Path.home()),
                        help="where INFRAKIT_HOME is made (by default, as ~/.infrakit is, in "
                             "the home directory): the file plugin's speed is that of this "
                             "file system")
    args = parser.parse_args()
    infrakit = str(Path(sys.executable).parent / "infrakit")
    home = tempfile.mkdtemp(prefix=".ikb", dir=args.parent)
    env = {**os.environ, "INFRAKIT_HOME": home, "INFRAKIT_GROUP_POLL": str(args.poll)}
    env.pop("INFRAKIT_PLUGINS_DIR", None)
    subprocess.run([infrakit, "plugin", "start", "instance-file", "flavor-vanilla", "group"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    pid = int(Path(home, "plugins", "group.pid").read_text())
    try:
        with RPCClient(Path(home, "plugins", "group"), timeout=300) as conn:
            group = GroupClient(conn)
            group.commit_group(spec("steady", args.size, 500), False)
            while not group.describe_group("steady").converged:
                time.sleep(1)
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
            group.destroy_group("steady")
    finally:
        subprocess.run([infrakit, "plugin", "stop", "group", "instance-file",
                        "flavor-vanilla"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
