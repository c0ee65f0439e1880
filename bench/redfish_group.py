"""The redfish instance plugin against the sushy-tools emulator (the tests' launcher, which
counts the requests it serves): the Redfish calls of one Provision and of one Destroy,
how long a group of N servers takes to converge, and the calls of a steady reconcile pass,
with the service's ``$expand`` and without it."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stack import PARENT_HELP, plugin_stack
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec, Spec
from tests.redfish_engine import PASSWORD, USER, Emulator, emulator, image_server, system

CONVERGE = 600.0


def spec(size: int, image: str) -> GroupSpec:
    return GroupSpec(id="bench", properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-redfish",
                     "Properties": {"MinCPUs": 8, "BootImage": image, "StopGrace": 15}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {"Init": ["echo hello"]}},
        "MaxParallel": size,
    })


def total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def one_by_one(bmc: Emulator, socket: Path, image: str, times: int) -> None:
    """Provision and destroy one server at a time, counting the calls of each."""
    made, gone = [], []
    with RPCClient(socket, timeout=300) as conn:
        inst = InstanceClient(conn)
        for _ in range(times):
            bmc.zero()
            start = time.perf_counter()
            iid = inst.provision(Spec(properties={"MinCPUs": 8, "BootImage": image}))
            made.append((time.perf_counter() - start, bmc.counts()))
            bmc.zero()
            start = time.perf_counter()
            inst.destroy(iid)
            gone.append((time.perf_counter() - start, bmc.counts()))
    for verb, runs in (("Provision", made), ("Destroy", gone)):
        calls = [total(c) for _, c in runs]
        print(f"{verb}: {statistics.mean(t for t, _ in runs):.1f} s, "
              f"{statistics.mean(calls):.1f} Redfish calls (min {min(calls)}, max "
              f"{max(calls)}); the last: {runs[-1][1]}")


def converge_and_steady(bmc: Emulator, socket: Path, image: str,
                        args: argparse.Namespace) -> None:
    with RPCClient(socket, timeout=300) as conn:
        group = GroupClient(conn)
        bmc.zero()
        start = time.perf_counter()
        group.commit_group(spec(args.size, image), False)
        while True:
            desc = group.describe_group("bench")
            if desc.converged and len(desc.instances or []) == args.size:
                break
            if time.perf_counter() - start > CONVERGE:
                raise SystemExit(f"not converged in {CONVERGE:g} s: "
                                 f"{group.describe_status('bench')}")
            time.sleep(0.05)
        converged = time.perf_counter() - start
        print(f"size {args.size}: converged in {converged:.1f} s (group poll {args.poll:g} "
              f"s); Redfish calls meanwhile: {total(bmc.counts())}")
        first = group.describe_status("bench").passes
        bmc.zero()
        time.sleep(args.window)  # steady: the controller's own passes only
        steady = bmc.counts()
        passes = group.describe_status("bench").passes - first
        print(f"steady {args.window:g} s ({passes} passes): Redfish calls {steady}; "
              f"{total(steady) / max(passes, 1):.2f} per pass")
        group.destroy_group("bench")  # returns once every member is destroyed


def pool_file(directory: Path, bmc: Emulator) -> Path:
    path = directory / "pool.yml"
    path.write_text(json.dumps({"BMCs": [{"Name": "bench", "URL": bmc.url,
                                          "Username": USER, "Password": PASSWORD}],
                                "UserData": {"Directory": str(directory / "user-data")}}))
    os.chmod(path, 0o600)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--poll", type=float, default=1.0, help="the group's poll, seconds")
    parser.add_argument("--window", type=float, default=10.0,
                        help="seconds of steady state over which calls are counted")
    parser.add_argument("--single", type=int, default=3,
                        help="single provisions and destroys to count")
    parser.add_argument("--delay", type=float, nargs=2, default=(1.0, 11.0),
                        metavar=("LOW", "HIGH"),
                        help="seconds a power change takes in the emulator, at random "
                             "(its fake driver's own: 1 to 11)")
    parser.add_argument("--no-expand", action="store_true",
                        help="an emulator without $expand: one read per member")
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    systems: list[dict[str, Any]] = [system(f"s{i:02d}", 16, 64)
                                     for i in range(args.size + 1)]
    with emulator(systems, expand=not args.no_expand, power_delay=tuple(args.delay)) as bmc, \
            image_server() as images, tempfile.TemporaryDirectory() as scratch:
        env = {"INFRAKIT_REDFISH_POOL": str(pool_file(Path(scratch), bmc))}
        image = images.url("bench.iso")
        with plugin_stack("instance-redfish", "flavor-vanilla", "group", poll=args.poll,
                          parent=args.parent, extra_env=env) as stack:
            one_by_one(bmc, stack.socket("instance-redfish"), image, args.single)
            converge_and_steady(bmc, stack.socket("group"), image, args)


if __name__ == "__main__":
    main()
