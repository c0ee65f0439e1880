"""How fast the group plugin brings up a group of containers through the docker instance
plugin, and how fast it replaces a container that is killed, against a private Docker
engine started for the run (as the tests start it: root, ``dockerd`` and busybox-static)."""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from bench.stack import plugin_stack
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec
from infrakit.spi.calls import InstanceAPI
from tests.docker_engine import IMAGE, Engine, engine_problem, private_engine

GID = "bench"
PLUGINS = ("instance-docker", "flavor-vanilla", "group")


def spec(size: int, max_parallel: int) -> GroupSpec:
    return GroupSpec(id=GID, properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-docker", "Properties": {
            "Image": IMAGE, "NetworkMode": "none", "StopTimeout": 5,
            "Command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {"Init": ["echo hello"]}},
        "MaxParallel": max_parallel,
    })


def members(instance: InstanceAPI) -> set[str]:
    return {d.id for d in instance.describe_instances({"infrakit.group": GID}, False)}


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def run(engine: Engine, args: argparse.Namespace) -> None:
    with plugin_stack(*PLUGINS, poll=args.poll, extra_env={"DOCKER_HOST": engine.host}) \
            as stack, \
            RPCClient(stack.socket("group"), timeout=300) as g, \
            RPCClient(stack.socket("instance-docker"), timeout=60) as i:
        group, instance = GroupClient(g), InstanceClient(i)
        size = args.size

        start = time.perf_counter()
        group.commit_group(spec(size, args.max_parallel), False)
        wait_for(f"{size} running members", lambda: len(members(instance)) == size)
        up = time.perf_counter() - start
        wait_for("convergence", lambda: group.describe_group(GID).converged)
        print(f"{size} containers (MaxParallel {args.max_parallel}, poll {args.poll:g} s): "
              f"all running and described {up:.2f} s after the commit; converged "
              f"{time.perf_counter() - start:.2f} s")

        heal = []
        for _ in range(args.kills):
            before = members(instance)
            victim = sorted(before)[0]
            # at a random point of the poll interval: right after a convergence, the
            # group's next pass is always almost a full poll away
            time.sleep(random.uniform(0, args.poll))
            start = time.perf_counter()
            engine.api.kill(victim)

            def replaced(victim: str = victim, before: set[str] = before) -> bool:
                now = members(instance)
                return victim not in now and len(now) == size and bool(now - before)

            wait_for("a replacement", replaced)
            heal.append(time.perf_counter() - start)
            wait_for("convergence", lambda: group.describe_group(GID).converged)
        print(f"docker kill -> a new running member, {args.kills} kills: median "
              f"{statistics.median(heal):.2f} s, min {min(heal):.2f} s, "
              f"max {max(heal):.2f} s (poll {args.poll:g} s)")

        start = time.perf_counter()
        group.destroy_group(GID)
        left = engine.api.containers(all=True)
        print(f"DestroyGroup of {size}: {time.perf_counter() - start:.2f} s; "
              f"containers left: {len(left)}")
        if left:  # the engine removes them as it stops; the group should have
            raise SystemExit(f"the group's destroy left {len(left)} containers: "
                             f"{sorted(c['Names'][0] for c in left)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--poll", type=float, default=1.0,
                        help="the group plugin's poll interval, in seconds")
    parser.add_argument("--max-parallel", type=int, default=16,
                        help="the group's MaxParallel: provisions at once")
    args = parser.parse_args()
    problem = engine_problem()
    if problem is not None:
        raise SystemExit(f"cannot run a private Docker engine: {problem}")
    with private_engine() as engine:
        run(engine, args)


if __name__ == "__main__":
    main()
