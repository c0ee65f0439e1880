"""Managers: how long after the leader is killed (SIGKILL) the waiting manager answers as
``group`` with every group resumed, over 10 kills; and how long a commit through the leader
takes. On the SQLite store (a lock file elects the leader) or on a private etcd started for
the run (a lease elects it; ``--store etcd``)."""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.stack import Stack, plugin_stack
from infrakit.rpc.client import PluginUnreachable, RPCClient
from infrakit.rpc.jsonrpc import RPCError
from infrakit.rpc.typed import GroupClient
from infrakit.spi import GroupSpec


def spec(size: int) -> GroupSpec:
    return GroupSpec(id="web", properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "instance-file", "Properties": {}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}})


def serving(sock: Path) -> list[str] | None:
    """The groups the manager on ``sock`` serves; None while none answers."""
    try:
        with RPCClient(sock, timeout=2) as conn:
            return [g.id for g in GroupClient(conn).inspect_groups()]
    except (OSError, PluginUnreachable, RPCError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    parser.add_argument("--lease-ttl", type=int, default=2)
    args = parser.parse_args()
    with ExitStack() as resources:
        settings = {"INFRAKIT_MANAGER_STORE": args.store}
        if args.store == "etcd":
            from tests.etcd_engine import private_etcd

            settings["INFRAKIT_ETCD_ENDPOINTS"] = resources.enter_context(private_etcd())
            settings["INFRAKIT_LEASE_TTL"] = str(args.lease_ttl)
        run(args, resources.enter_context(plugin_stack(
            "instance-file", "flavor-vanilla", poll=1, extra_env=settings)))


def run(args: argparse.Namespace, stack: Stack) -> None:
    sock = stack.socket("group")
    logs = Path(tempfile.mkdtemp(prefix=".ikm", dir=stack.home))

    def manager() -> subprocess.Popen[bytes]:
        with open(logs / "managers.log", "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "infrakit", "manager"],
                                    env=stack.env, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL)

    leader = manager()
    while serving(sock) is None:
        time.sleep(0.05)
    with RPCClient(sock, timeout=5) as conn:
        client = GroupClient(conn)
        times = []
        for n in range(args.commits):
            start = time.perf_counter()
            client.commit_group(spec(2 + n % 2), False)
            times.append(time.perf_counter() - start)
    median = statistics.median(times) * 1e3
    print(f"{args.store}: commit through the leader: median {median:.1f} ms, max "
          f"{max(times) * 1e3:.1f} ms over {args.commits} commits (sizes 2 and 3)")
    failovers = []
    try:
        for _ in range(args.kills):
            standby = manager()
            time.sleep(1.0)  # it starts, finds the lock taken and waits
            leader.send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            leader.wait()
            while serving(sock) != ["web"]:
                time.sleep(0.005)
            failovers.append(time.perf_counter() - killed)
            leader = standby
    finally:
        leader.send_signal(signal.SIGTERM)
        leader.wait(10)
        shutil.rmtree(logs, ignore_errors=True)
    median = statistics.median(failovers) * 1e3
    print(f"{args.store}: failover, SIGKILL of the leader to the next one serving every "
          f"group: median {median:.0f} ms, max {max(failovers) * 1e3:.0f} ms over "
          f"{args.kills} kills")


if __name__ == "__main__":
    main()
