"""Managers sharing the groups, at a scale one machine cannot hold for real: 10 managers
(``infrakit manager --share-groups``) lead 1,000 groups of 1,000 members, 1,000,000 in
all, on a private etcd. Reports each manager's CPU per reconcile pass, then SIGKILLs one
manager and reports how long its groups take to move to the others, and how long the
groups take to spread again once it is back. The groups' specs are stored in etcd before
the managers start (as after a restart of every manager), so the first figure is how long
10 managers take to share out 1,000 stored groups; ``--commit`` commits them through the
managers instead.

What is real: the 10 manager processes and all of their code (the sharing rounds, the
owner keys and their fences, the group controllers' passes with health checks through
the real vanilla flavor plugin), etcd, the sockets and every call. What is simulated: the
members. The instance plugin is a stub (:mod:`bench.count_instance`) that keeps only a
count per group and answers DescribeInstances with that many members, seeded as already
made so that the run starts converged; and the 10 "machines" are processes sharing the
same 2 cores with the stub, the flavor and etcd, so wall-clock pass times are stretched
by the others' work, while each manager's CPU time per pass is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from bench.stack import PARENT_HELP, cpu_seconds, plugin_stack, wait
from infrakit.manager.shards import preferred
from infrakit.plugins.group.plan import CONFIG_TAG, GROUP_TAG
from infrakit.plugins.group.spec import config_sha, parse_group
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi import GroupSpec
from infrakit.store.etcd_client import EtcdClient
from tests.etcd_engine import private_etcd_cluster
from tests.helpers import answers_handshake, http_request

STUB = "instance-count"


def spec(gid: str, size: int) -> GroupSpec:
    return GroupSpec(id=gid, properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": STUB, "Properties": {}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}})


def seed_file(where: Path, groups: list[str], size: int) -> Path:
    """Every group's members, as made already, with the config the commits will give."""
    sha = config_sha(parse_group(spec("any", size)))
    path = where / "seed.json"
    path.write_text(json.dumps({g: {"Count": size, "Tags": {GROUP_TAG: g, CONFIG_TAG: sha}}
                                for g in groups}))
    return path


class Run:
    """The processes of one simulation, and what it reads of them."""

    def __init__(self, env: dict[str, str], home: Path, etcd: list[str], ttl: int) -> None:
        self.env = env
        self.home = home
        self.opts = ["--store", "etcd", "--etcd-endpoints", ",".join(etcd),
                     "--lease-ttl", str(ttl), "--share-groups"]
        self.etcd = EtcdClient(etcd)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pids: dict[str, int] = {}
        """Every process whose CPU time is read: these, and the flavor the stack started."""

    def spawn(self, name: str, argv: list[str], ready: bool = True) -> None:
        """Start ``argv`` as plugin ``name``; with ``ready``, wait until it serves."""
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        self.pids[name] = self.procs[name].pid
        if ready:
            self.ready(name)

    def ready(self, name: str) -> None:
        sock = self.home / "plugins" / name
        wait(lambda: answers_handshake(sock), 120)

    def manager(self, name: str, ready: bool = True) -> None:
        self.spawn(name, [sys.executable, "-m", "infrakit", "manager", "--name", name,
                          *self.opts], ready)

    def owners(self) -> dict[str, str]:
        return {g: v.decode() for g, v in self.etcd.get_prefix("/infrakit/owners/").items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.etcd.close()


def commit_all(run: Run, names: list[str], groups: list[str], size: int) -> float:
    """Commit every group, each through one of the managers in turn (which forwards it to
    the manager the group prefers); seconds it took."""
    start = time.monotonic()

    def commit(i: int) -> None:
        with RPCClient(run.home / "plugins" / names[i % len(names)], timeout=120) as conn:
            client = GroupClient(conn)
            for gid in groups[i::len(names)]:
                client.commit_group(spec(gid, size), False)

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(commit, range(len(names))))
    return time.monotonic() - start


def store_specs(run: Run, groups: list[str], size: int) -> None:
    """Every group's spec written where the managers keep them, as a commit would."""
    from infrakit.store.etcd import EtcdStore

    store = EtcdStore(run.etcd)
    for gid in groups:
        store.save_group(gid, msgspec.json.encode(spec(gid, size)))


def passes_of(run: Run, name: str) -> float:
    """Every reconcile pass manager ``name`` has made of any group, from its metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = http_request(run.home / "plugins" / name, method="GET", path="/metrics",
                          headers={}, timeout=120)
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            if sample.name == "infrakit_group_reconcile_seconds_count":
                return float(sample.value)
    return 0.0


def cpu_per_pass(run: Run, names: list[str], led: dict[str, int],
                 window: float) -> dict[str, tuple[float, float]]:
    """Each manager's CPU seconds per pass of its groups over ``window`` seconds (its
    passes of any group, divided by the groups it leads ``led``), and those passes; the
    stub's and the flavor's CPU per pass of every group."""
    before = {n: passes_of(run, n) for n in names}
    cpu0 = {n: cpu_seconds(run.pids[n]) for n in [*names, STUB, "flavor"]}
    time.sleep(window)
    cpu1 = {n: cpu_seconds(run.pids[n]) for n in cpu0}
    after = {n: passes_of(run, n) for n in names}
    passes = {n: (after[n] - before[n]) / led[n] for n in names}
    out = {n: ((cpu1[n] - cpu0[n]) / max(passes[n], 1e-9), passes[n]) for n in names}
    every = sum(after[n] - before[n] for n in names) / sum(led.values())
    for other in (STUB, "flavor"):
        out[other] = ((cpu1[other] - cpu0[other]) / max(every, 1e-9), every)
    return out


def failover(run: Run, victim: str) -> tuple[int, float, float]:
    """SIGKILL ``victim``: (its groups, seconds until each is led by another manager,
    seconds until the manager leading each has made a pass of it)."""
    host = os.uname().nodename
    mine = [g for g, m in run.owners().items() if m == f"{host}:{victim}"]
    run.procs[victim].send_signal(signal.SIGKILL)
    run.procs[victim].wait()
    moved = wait(lambda: all(run.owners().get(g, f"{host}:{victim}") != f"{host}:{victim}"
                             for g in mine), 120)
    passed = wait(lambda: all(_passed(run, g) for g in mine), 300)
    return len(mine), moved, moved + passed


def _passed(run: Run, gid: str) -> bool:
    """Whether the group's new leader has made a pass of it (its status says so)."""
    owner = run.owners().get(gid, "").partition(":")[2]
    if not owner:
        return False
    with RPCClient(run.home / "plugins" / owner, timeout=120) as conn:
        return GroupClient(conn).describe_status(gid).passes > 0


def rejoin(run: Run, victim: str, spread: dict[str, str]) -> tuple[float, int]:
    """Start ``victim`` again: (seconds until every group is led by the manager it
    prefers, the most groups that had no leader at one moment meanwhile)."""
    start = time.monotonic()
    run.manager(victim)
    most = 0
    while (owners := run.owners()) != spread:
        most = max(most, len(set(spread) - set(owners)))
        if time.monotonic() - start > 300:
            raise SystemExit("the groups did not spread again within 300 s")
        time.sleep(0.02)
    return time.monotonic() - start, most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--managers", type=int, default=10)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1000, help="members per group")
    parser.add_argument("--poll", type=float, default=20.0, help="the groups' poll")
    parser.add_argument("--ttl", type=int, default=5, help="the managers' lease TTL")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of passes")
    parser.add_argument("--etcd-members", type=int, default=1)
    parser.add_argument("--commit", action="store_true",
                        help="commit the groups through the managers (slow: each commit "
                        "prepares a member and describes the group) instead of storing "
                        "their specs before the managers start")
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    # a run in the background ignores SIGINT: SIGTERM stops it, and everything it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    groups = [f"g{n:04d}" for n in range(args.groups)]
    names = [f"m{n}" for n in range(args.managers)]
    host = os.uname().nodename
    spread = {g: preferred(g, [f"{host}:{n}" for n in names]) or "" for g in groups}
    with private_etcd_cluster(args.etcd_members) as cluster, \
            plugin_stack("flavor-vanilla", poll=args.poll, parent=args.parent,
                         supervise=False) as stack:
        run = Run(stack.env, stack.home, cluster.urls, args.ttl)
        try:
            simulate(run, args, groups, names, spread)
        finally:
            run.stop()
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def simulate(run: Run, args: argparse.Namespace, groups: list[str], names: list[str],
             spread: dict[str, str]) -> None:
    seed = seed_file(Path(tempfile.mkdtemp(dir=run.home)), groups, args.size)
    run.spawn(STUB, [sys.executable, "-m", "bench.count_instance", STUB, "--seed", str(seed)])
    run.pids["flavor"] = int((run.home / "plugins" / "flavor-vanilla.pid").read_text())
    if args.commit:
        for name in names:
            run.manager(name)
        took = commit_all(run, names, groups, args.size)
        print(f"{len(groups)} groups of {args.size} ({len(groups) * args.size:,} members) "
              f"committed through {len(names)} managers in {took:.1f} s")
        wait(lambda: run.owners() == spread, 300)
    else:
        store_specs(run, groups, args.size)
        start = time.monotonic()
        for name in names:  # all at once, as after a restart of every machine
            run.manager(name, ready=False)
        for name in names:
            run.ready(name)
        took = wait(lambda: run.owners() == spread, 600) + time.monotonic() - start
        print(f"{len(groups)} groups of {args.size} ({len(groups) * args.size:,} members) "
              f"stored: {len(names)} managers started at once, every group led by the "
              f"manager it prefers {took:.1f} s later")
    time.sleep(2 * args.poll)  # the first passes, which judge every member, are over
    load = os.getloadavg()[0]
    counts = {n: sum(1 for m in spread.values() if m.endswith(f":{n}")) for n in names}
    per = cpu_per_pass(run, names, counts, args.window)
    for name in names:
        cpu, passes = per[name]
        print(f"{name}: {counts[name]} groups, {counts[name] * args.size:,} members: "
              f"{cpu * 1e3:.0f} ms CPU per pass ({passes:.2f} passes of each group)")
    manager_cpu = [per[n][0] for n in names]
    print(f"per manager: median {statistics.median(manager_cpu) * 1e3:.0f} ms, max "
          f"{max(manager_cpu) * 1e3:.0f} ms CPU per pass; the stub instance plugin "
          f"{per[STUB][0] * 1e3:.0f} ms, the flavor {per['flavor'][0] * 1e3:.0f} ms per "
          f"pass of every group (load average {load:.1f} at the start of the window)")
    victim = max(names, key=lambda n: counts[n])
    moved, led, passed = failover(run, victim)
    print(f"{victim} killed (SIGKILL) with {moved} groups: led by the others after "
          f"{led:.2f} s (TTL {args.ttl} s); each had a pass by its new leader after "
          f"{passed:.2f} s")
    back, most = rejoin(run, victim, spread)
    print(f"{victim} back: every group led by the manager it prefers after {back:.1f} s "
          f"(the start of the manager included); at most {most} groups without a leader "
          f"at one moment meanwhile")


if __name__ == "__main__":
    main()
