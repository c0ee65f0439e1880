"""A group whose members crash at once, for minutes: how many launches the crash-loop
backoff lets through, what the loop costs the group plugin, how many members are ever
alive at once, and how soon ``describe -v`` says why. Then a commit that fixes the
command, and the time until the group converges.

Run with the group's default poll (5 s) and backoff limit (300 s), as a user has them:
``python -m bench.crashloop --duration 300``.
"""

from __future__ import annotations

import argparse
import time

from bench.stack import cpu_seconds, plugin_stack, wait
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec
from infrakit.spi.calls import GroupAPI, InstanceAPI

GID = "crashloop"


def spec(size: int, command: str, backoff_limit: float) -> GroupSpec:
    return GroupSpec(id=GID, properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-process",
                     "Properties": {"Command": command, "StopGrace": 1}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}},
        "BackoffLimit": backoff_limit})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=300.0,
                        help="seconds the members crash-loop")
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--poll", type=float, default=5.0, help="the group's poll interval")
    parser.add_argument("--backoff-limit", type=float, default=300.0)
    args = parser.parse_args()
    with plugin_stack("instance-process", "flavor-vanilla", "group", poll=args.poll) as stack, \
            RPCClient(stack.socket("group"), timeout=300) as g, \
            RPCClient(stack.socket("instance-process"), timeout=60) as i:
        group, inst = GroupClient(g), InstanceClient(i)
        try:
            run(args, stack.pid("group"), group, inst)
        finally:
            group.destroy_group(GID)
            assert not inst.describe_instances({"infrakit.group": GID}, False), "left behind"


def run(args: argparse.Namespace, group_pid: int, g: GroupAPI, i: InstanceAPI) -> None:
    cpu0 = cpu_seconds(group_pid)
    started = time.monotonic()
    g.commit_group(spec(args.size, "echo starting; exit 2", args.backoff_limit), False)
    wait(lambda: bool(i.describe_ended({"infrakit.group": GID})), 60)
    first = min(e.started for e in i.describe_ended({"infrakit.group": GID}))
    wait(lambda: "failed launch" in g.describe_status(GID).backoff, 60)
    shown = time.time() - first
    peak = 0
    while time.monotonic() - started < args.duration:
        peak = max(peak, len(i.describe_instances({"infrakit.group": GID}, False)))
        time.sleep(0.1)
    ids = {e.id for e in i.describe_ended({})}
    launches = max(int(x.removeprefix("proc-")) for x in ids)
    cpu = cpu_seconds(group_pid) - cpu0
    status = g.describe_status(GID)
    fixed_at = time.monotonic()
    g.commit_group(spec(args.size, "sleep 3600", args.backoff_limit), False)
    converge = wait(lambda: g.describe_group(GID).converged, 120)
    elapsed = fixed_at - started
    print(f"crash loop of {args.size} members for {elapsed:.0f}s at a {args.poll:g}s poll, "
          f"backoff limit {args.backoff_limit:g}s:")
    print(f"  launches: {launches} (peak alive seen {peak}, limit {args.size + 1})")
    print(f"  group plugin CPU: {cpu:.2f}s ({100 * cpu / elapsed:.2f}% of one core)")
    print(f"  first crash to describe -v saying why: {shown:.2f}s")
    print(f"  backoff at the end: {status.backoff}")
    print(f"  a commit that fixes the command converged in {converge:.2f}s")


if __name__ == "__main__":
    main()
