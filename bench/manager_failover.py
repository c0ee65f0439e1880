"""Managers: how long after the leader is killed (SIGKILL) the next manager answers a
DescribeGroup with the group resumed, over 10 kills; and how long a commit takes through
the leader and, on etcd, through a follower. On the SQLite store (a lock file elects the
leader) or on a private etcd of ``--members`` members started for the run (a lease elects
it; ``--store etcd``)."""

from __future__ import annotations

import argparse
import itertools
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.stack import Stack, cleaning_up, destroy_groups, plugin_stack
from infrakit.rpc.client import PluginUnreachable, RPCClient
from infrakit.rpc.jsonrpc import RPCError
from infrakit.rpc.typed import GroupClient
from infrakit.spi import GroupSpec, PluginError

#: What a call to a manager that is down, or not leading yet, raises.
DOWN = (OSError, PluginUnreachable, RPCError, PluginError)


def spec(size: int) -> GroupSpec:
    return GroupSpec(id="web", properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-file", "Properties": {}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}})


def serving(sock: Path) -> bool:
    """Whether the manager on ``sock`` describes the group now (itself, or through the
    leader it forwards to)."""
    try:
        with RPCClient(sock, timeout=5) as conn:
            GroupClient(conn).describe_group("web")
        return True
    except DOWN:
        return False


def commits(sock: Path, count: int) -> list[float]:
    """Seconds each of ``count`` commits through ``sock`` took (sizes 2 and 3 in turn)."""
    with RPCClient(sock, timeout=10) as conn:
        client = GroupClient(conn)
        times = []
        for n in range(count):
            start = time.perf_counter()
            client.commit_group(spec(2 + n % 2), False)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    parser.add_argument("--members", type=int, default=1, help="etcd cluster members")
    parser.add_argument("--lease-ttl", type=int, default=2)
    args = parser.parse_args()
    with ExitStack() as resources:
        settings = {"INFRAKIT_MANAGER_STORE": args.store}
        if args.store == "etcd":
            from tests.etcd_engine import private_etcd_cluster

            cluster = resources.enter_context(private_etcd_cluster(args.members))
            settings["INFRAKIT_ETCD_ENDPOINTS"] = ",".join(cluster.urls)
            settings["INFRAKIT_LEASE_TTL"] = str(args.lease_ttl)
        run(args, resources.enter_context(plugin_stack(
            "instance-file", "flavor-vanilla", poll=1, extra_env=settings)))


def report(what: str, times: list[float], unit: str = "ms") -> None:
    scale, digits = (1e3, 1) if unit == "ms" else (1.0, 2)
    print(f"{what}: median {statistics.median(times) * scale:.{digits}f} {unit}, max "
          f"{max(times) * scale:.{digits}f} {unit} over {len(times)}", flush=True)


def run(args: argparse.Namespace, stack: Stack) -> None:
    """On SQLite managers share the name ``group`` (only the leader serves); on etcd each
    has its own name, and every one serves."""
    logs = Path(tempfile.mkdtemp(prefix=".ikm", dir=stack.home))
    names = (f"group-{n}" for n in itertools.count())
    label = args.store if args.store == "sqlite" else f"etcd x{args.members}"
    managers: list[subprocess.Popen[bytes]] = []

    def manager() -> tuple[subprocess.Popen[bytes], Path]:
        name = "group" if args.store == "sqlite" else next(names)
        with open(logs / "managers.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "infrakit", "manager", "--name", name],
                                    env=stack.env, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL)
        managers.append(proc)
        return proc, stack.socket(name)

    failovers = []
    sock: Path | None = None

    def cleanup() -> list[str]:
        try:  # the group is the managers' to destroy, through the one that led last
            return destroy_groups(stack, sock.name, "as the run ends") if sock else []
        finally:
            for proc in managers:
                stop_process(proc)
            shutil.rmtree(logs, ignore_errors=True)

    with cleaning_up(cleanup):
        leader, sock = manager()
        with RPCClient(sock, timeout=10) as conn:
            deadline = time.monotonic() + 30
            while True:
                try:
                    GroupClient(conn).commit_group(spec(2), False)
                    break
                except DOWN:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        report(f"{label}: commit through the leader", commits(sock, args.commits))
        for kill in range(args.kills):
            standby, standby_sock = manager()
            time.sleep(1.0)  # it starts, finds the lock or the leader key taken, and waits
            if kill == 0 and args.store == "etcd":
                report(f"{label}: commit through a follower", commits(standby_sock,
                                                                      args.commits))
            leader.send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            leader.wait()
            while not serving(standby_sock):
                time.sleep(0.005)
            failovers.append(time.perf_counter() - killed)
            leader, sock = standby, standby_sock
    report(f"{label}: failover, SIGKILL of the leader to the next one describing the group",
           failovers)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
