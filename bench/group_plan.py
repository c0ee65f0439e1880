"""What a plan costs on a large group: ``infrakit group diff`` (and so ``group commit
--pretend``, which asks the same ``Group.PlanGroup``) against a converged group of
instance-file members, for each kind of change; the group plugin's CPU time per plan; and
the rehearsal of the controller's decision alone, in this process, at 10,000 and 100,000
members.

A plan describes the members once (as DescribeGroup does), diffs the specs, and runs the
controller's ``plan()`` pass after pass over a pretend group until it is idle (rounds of a
rolling update that repeat are counted, not run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.group_converge import spec
from bench.stack import PARENT_HELP, cpu_seconds, plugin_stack
from infrakit.plugins.group.plan import CONFIG_TAG, Desired, Member
from infrakit.plugins.group.rehearse import rehearse
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi.group import GroupSpec
from infrakit.spi.types import Description


def changed(base: GroupSpec, **props: object) -> dict[str, object]:
    return {"ID": base.id, "Properties": {**base.properties, **props}}


def cases(base: GroupSpec, size: int) -> dict[str, dict[str, object]]:
    instance = {**base.properties["Instance"], "Properties": {"Note": "bench v2"}}
    return {
        "no change": changed(base),
        "a tunable (HealthGrace)": changed(base, HealthGrace=5),
        "add 2": changed(base, Allocation={"Size": size + 2}),
        "remove 3 (which ones)": changed(base, Allocation={"Size": size - 3}),
        "roll every member (MaxSurge 1)": changed(base, Instance=instance),
        "roll every member (MaxSurge 50)": changed(base, Instance=instance, MaxSurge=50),
    }


def timed_cli(env: dict[str, str], path: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "infrakit", "group", "diff", str(path),
                               "-o", "json"], env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode not in (0, 4):
            raise SystemExit(f"group diff failed: {done.stderr}")
    return times


def in_process(size: int, surge: int) -> float:
    members = [Member(Description(id=f"m{i}", tags={CONFIG_TAG: "old"}), since=float(i))
               for i in range(size)]
    start = time.perf_counter()
    done = rehearse(Desired(size=size, logical_ids=(), config_sha="new", max_surge=surge),
                    members, 1e9)
    took = time.perf_counter() - start
    assert done.tally["rolled"] == size, done.tally
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for size in (10_000, 100_000):
        for surge in (1, 50):
            best = min(in_process(size, surge) for _ in range(3))
            print(f"rehearsal alone, {size} members, MaxSurge {surge}: {best * 1e3:.0f} ms "
                  "(best of 3)")
    with plugin_stack("instance-file", "flavor-vanilla", "group", poll=1.0,
                      parent=args.parent) as stack, \
            RPCClient(stack.socket("group"), timeout=300) as conn:
        group, pid = GroupClient(conn), stack.pid("group")
        base = spec("big", args.size, 500)
        group.commit_group(base, False)
        while not group.describe_group("big").converged:
            time.sleep(1)
        print(f"group of {args.size} members converged")
        for name, doc in cases(base, args.size).items():
            path = stack.home / "plan.json"
            path.write_text(json.dumps(doc))
            cpu0 = cpu_seconds(pid)
            rpc = []
            for _ in range(args.runs):
                start = time.perf_counter()
                plan = group.plan_group(GroupSpec(id="big", properties=doc["Properties"]))
                rpc.append(time.perf_counter() - start)
            cpu = (cpu_seconds(pid) - cpu0) / args.runs  # the passes run meanwhile too
            cli = timed_cli(stack.env, path, args.runs)
            print(f"{name}: PlanGroup median {statistics.median(rpc) * 1e3:.0f} ms "
                  f"(group process CPU {cpu * 1e3:.0f} ms per call, passes included); "
                  f"`group diff -o json` median {statistics.median(cli) * 1e3:.0f} ms; "
                  f"steps: {plan.steps}")
        group.destroy_group("big")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
