"""The process instance plugin under the group controller: how long 100 new process
instances take until the plugin describes them all, and how long a member killed with
SIGKILL takes to be replaced by a healthy one (a web server behind an HTTP health check),
over 10 kills."""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time

from bench.stack import plugin_stack, wait
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec

SLEEPER: dict[str, object] = {"Command": "sleep 3600", "StopGrace": 1}
WEB: dict[str, object] = {
    "Command": f"{sys.executable} -m http.server --bind 127.0.0.1 $PORT_HTTP",
    "Ports": ["http"], "StopGrace": 1}
PROBE: dict[str, object] = {
    "Health": {"HTTP": "http://127.0.0.1:{{ .Properties.Ports.http }}/", "Timeout": 1}}


def spec(gid: str, size: int, instance: dict[str, object], flavor: dict[str, object],
         max_parallel: int) -> GroupSpec:
    return GroupSpec(id=gid, properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-process", "Properties": instance},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": flavor},
        "MaxParallel": max_parallel, "StartupGrace": 10, "HealthGrace": 2})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.5, help="the group's poll interval")
    parser.add_argument("--max-parallel", type=int, default=16)
    args = parser.parse_args()
    with plugin_stack("instance-process", "flavor-vanilla", "group", poll=args.poll) as stack, \
            RPCClient(stack.socket("group"), timeout=300) as g, \
            RPCClient(stack.socket("instance-process"), timeout=60) as i:
        group, inst = GroupClient(g), InstanceClient(i)

        def described(gid: str) -> dict[str, int]:
            return {d.id: int(d.properties["PID"]) for d in
                    inst.describe_instances({"infrakit.group": gid}, True)}

        start = time.perf_counter()
        group.commit_group(spec("many", args.size, SLEEPER, {}, args.max_parallel), False)
        wait(lambda: len(described("many")) == args.size)
        made = time.perf_counter() - start
        print(f"{args.size} process instances described {made:.2f} s after the commit "
              f"(MaxParallel {args.max_parallel}, poll {args.poll:g} s)")
        group.destroy_group("many")

        group.commit_group(spec("web", 3, WEB, PROBE, args.max_parallel), False)
        wait(lambda: group.describe_group("web").converged)
        times = []
        for _ in range(args.kills):
            before = described("web")
            victim = sorted(before)[0]
            os.kill(before[victim], signal.SIGKILL)
            killed = time.perf_counter()
            wait(lambda: victim not in described("web")  # noqa: B023
                 and group.describe_group("web").converged)
            times.append(time.perf_counter() - killed)
        print(f"a killed member replaced by a healthy one: median "
              f"{statistics.median(times):.2f} s, min {min(times):.2f} s, max "
              f"{max(times):.2f} s over {args.kills} kills (poll {args.poll:g} s)")
        group.destroy_group("web")

if __name__ == "__main__":
    main()
