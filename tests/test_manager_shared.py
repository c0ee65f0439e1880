"""Managers sharing the groups (--share-groups) on a 3-member etcd cluster: each group is
led by one manager, the groups spread, a killed manager's groups move to the others within
the lease's TTL + 1 s, and one that comes back takes its share again a few groups at a
time. At no moment does any group have two leaders: each group has one member, and every
member that ever existed is counted, so a second leader acting would show as a second
member or a replacement too many."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infrakit.manager.holdings import Holdings
from infrakit.manager.leader_info import LeaderInfo
from infrakit.manager.shards import Owner, Snapshot, plan_round, preferred
from infrakit.manager.sharing import MOVES_PER_ROUND
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import InstanceClient
from infrakit.spi import GroupSpec
from infrakit.spi.errors import PluginError
from infrakit.store.etcd import EtcdStore
from infrakit.store.etcd_client import EtcdClient, b64
from tests.conftest import Cli, Processes, StartPlugin
from tests.etcd_engine import etcd_problem, private_etcd_cluster
from tests.helpers import require_engine, wait_until
from tests.test_manager_etcd import group, logged, spawner

TTL = 2
GROUPS = [f"g{n:02d}" for n in range(30)]


def _info() -> LeaderInfo:
    return LeaderInfo.me("etcd:test")


def test_a_round_claims_what_prefers_this_manager_and_hands_over_a_few_at_a_time() -> None:
    managers = {name: _info() for name in ("a", "b", "c")}
    groups = frozenset(GROUPS)
    nobody = Snapshot(managers, {}, groups)
    claims = {m: plan_round(m, nobody, {}, 0.0, 5.0, 2).claim for m in managers}
    assert sorted(g for c in claims.values() for g in c) == GROUPS  # each by exactly one
    assert all(len(c) >= 3 for c in claims.values()), claims  # and they spread
    assert len(plan_round("a", Snapshot({"a": _info()}, {}, groups), {}, 0.0, 5.0, 2,
                          claims=7).claim) == 7  # alone, it takes a few at a time
    # a, alone, led them all; b and c came back: a hands over 2 per round, claims none
    all_a = Snapshot(managers, {g: Owner("a", 1) for g in GROUPS}, groups)
    plan = plan_round("a", all_a, {}, 0.0, 5.0, 2)
    assert len(plan.hand_over) == 2 and not plan.claim
    assert all(preferred(g, managers) != "a" for g in plan.hand_over)
    assert plan_round("b", all_a, {}, 0.0, 5.0, 2).claim == []
    # a group nobody leads whose preferred manager does not claim it: anyone, after patience
    lonely = next(g for g in GROUPS if preferred(g, managers) == "c")
    snap = Snapshot(managers, {g: Owner("a", 1) for g in GROUPS if g != lonely}, groups)
    seen: dict[str, float] = {}
    assert lonely not in plan_round("b", snap, seen, 10.0, 5.0, 0).claim
    assert lonely in plan_round("b", snap, seen, 15.0, 5.0, 0).claim
    # a group freed or destroyed: its leader drops it; an unregistered manager does nothing
    gone = Snapshot(managers, {"old": Owner("a", 1)}, frozenset())
    assert plan_round("a", gone, {}, 0.0, 5.0, 2).drop == ["old"]
    assert plan_round("z", nobody, {}, 0.0, 5.0, 2) == plan_round("z", gone, {}, 0.0, 5.0, 2)


def test_a_group_is_fenced_by_its_owner_key(etcd_url: str) -> None:
    """Once another client deletes the owner key (as etcd does when the lease expires),
    the manager's actions and writes for that group are refused; others' are not."""
    prefix = f"/fence{time.monotonic_ns()}/"
    client = EtcdClient([etcd_url])
    holdings = Holdings(client, prefix, TTL, "m1")
    store = EtcdStore(client, prefix)
    store.group_fence = holdings.write_fence
    assert holdings.lease.acquire(_info(), threading.Event())
    try:
        with pytest.raises(PluginError, match="does not lead group 'web'"):
            store.set_paused("web", True)  # not claimed yet
        assert holdings.claim("web") == ["web"]
        assert holdings.claim("web", "db") == ["db"]  # a batch with one taken: one by one
        assert holdings.claim("db") == []
        holdings.fence("web")()
        store.set_paused("web", True)
        other = EtcdClient([etcd_url])
        assert Holdings(other, prefix, TTL, "m2").claim("web") == []  # not registered
        other.call("/kv/deleterange", {"key": b64(holdings.owner_key("web"))})
        other.close()
        with pytest.raises(PluginError, match="another manager leads group 'web'"):
            holdings.fence("web")()
        with pytest.raises(PluginError, match="no longer leads; nothing was written"):
            store.set_paused("web", False)
        assert store.paused("web")
        store.set_paused("db", True)  # the other group is still this manager's
        holdings.fence("db")()
    finally:
        holdings.lease.resign()
        client.close()


class Watch:
    """Samples, every few milliseconds, each group's members (through the instance plugin)
    and who leads each group (etcd's owner keys)."""

    def __init__(self, instance: Path, endpoints: list[str], prefix: str) -> None:
        self.instance = instance
        self.client = EtcdClient(endpoints)
        self.prefix = prefix
        self.ever: dict[str, set[str]] = {g: set() for g in GROUPS}
        """Every member each group ever had."""
        self.peak: Counter[str] = Counter()
        self.owners: dict[str, str] = {}
        self.most_unled = 0
        """The most groups that had no leader at one moment, since :meth:`reset_unled`."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.03):
            with RPCClient(self.instance) as conn:
                described = InstanceClient(conn).describe_instances({}, False)
            now: Counter[str] = Counter()
            for d in described:
                gid = (d.tags or {}).get("infrakit.group", "")
                if gid in self.ever:
                    now[gid] += 1
                    self.ever[gid].add(d.id)
            for gid, count in now.items():
                self.peak[gid] = max(self.peak[gid], count)
            try:
                owners = self.client.get_prefix(f"{self.prefix}owners/")
            except PluginError:
                continue  # a member of the cluster is down: the next sample
            self.owners = {g: v.decode() for g, v in owners.items()}
            self.most_unled = max(self.most_unled, len(set(GROUPS) - set(self.owners)))

    def members(self) -> int:
        return sum(len(v) for v in self.ever.values())

    @contextmanager
    def running(self) -> Iterator[Watch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
            self.client.close()


def test_three_managers_share_30_groups_hand_a_dead_ones_over_and_take_them_back_gradually(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    require_engine(etcd_problem())
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    instance = start_plugin("instance-file").path
    start_plugin("flavor-vanilla")
    plugins = home / "plugins"
    prefix = "/infrakit/"
    with private_etcd_cluster(3) as cluster:
        opts = ["--store", "etcd", "--etcd-endpoints", ",".join(cluster.urls),
                "--lease-ttl", str(TTL), "--share-groups"]
        manager = spawner(procs, home, opts)
        host = socket.gethostname()
        names = {m: f"{host}:group-{m}" for m in "abc"}
        procs_by = {m: manager(f"group-{m}") for m in "abc"}
        props = {"Allocation": {"Size": 1},
                 "Instance": {"Plugin": "instance-file", "Properties": {}},
                 "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}
        entry = group(plugins / "group-a")
        for gid in GROUPS:  # every commit through one manager: it forwards the others'
            assert entry.commit_group(GroupSpec(id=gid, properties=props), False) == \
                "Managing 1 instances"
        everyone = list(names.values())
        spread = {g: preferred(g, everyone) for g in GROUPS}
        with Watch(instance, cluster.urls, prefix).running() as watch:
            wait_until(lambda: watch.owners == spread and watch.members() == 30, 30,
                       what="every group led by the manager it prefers, with its member")
            status = json.loads(cli("manager", *opts, "status", "-o", "json").stdout)
            assert status["Groups"] == spread
            assert {m["Name"]: len(m["Groups"]) for m in status["Managers"]} == \
                dict(Counter(spread.values()))
            table = cli("manager", *opts, "status").stdout
            assert "GROUPS" in table and any(line.split() == ["g00", spread["g00"]]
                                             for line in table.splitlines())

            # the manager leading the most groups (10 or more) is killed, and at once its
            # groups lose their members: whoever leads them next must replace each, once
            b = max("abc", key=lambda m: list(spread.values()).count(names[m]))
            moving = sorted(g for g, m in spread.items() if m == names[b])
            procs_by[b].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            with RPCClient(instance) as conn:
                client = InstanceClient(conn)
                for d in client.describe_instances({}, False):
                    if (d.tags or {}).get("infrakit.group") in moving:
                        client.destroy(d.id)
            survivors = [names[m] for m in "abc" if m != b]
            wait_until(lambda: all(watch.owners.get(g) in survivors for g in moving), 15,
                       interval=0.01, what="b's groups to move")
            took = time.monotonic() - killed
            assert took <= TTL + 1, f"b's groups took {took:.2f}s to move (TTL {TTL}s)"
            wait_until(lambda: watch.members() == 30 + len(moving), 20,
                       what="every member of b's groups replaced")

            # it comes back: its groups prefer it again, and move back a few at a time
            watch.most_unled = 0
            procs_by[b] = manager(f"group-{b}")
            wait_until(lambda: watch.owners == spread, 30, what="the groups to spread again")
            # each of the two others lets go of at most MOVES_PER_ROUND per round; b claims
            # them in its next round: a herd would show all of b's groups unled at once
            assert watch.most_unled <= 2 * 2 * MOVES_PER_ROUND < len(moving), \
                f"{watch.most_unled} groups had no leader at one moment"
            time.sleep(4 * 0.2)  # a few more passes of every group: nothing is doubled
        assert watch.members() == 30 + len(moving), {
            g: sorted(ids) for g, ids in watch.ever.items() if len(ids) > 1}
        assert max(watch.peak.values()) == 1, watch.peak.most_common(3)
        for proc in procs_by.values():
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        assert json.loads(cli("manager", *opts, "status", "-o", "json").stdout) is None


def test_managers_that_share_and_a_single_leader_never_run_at_once(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path, etcd_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Started on one prefix by mistake, a manager without --share-groups waits while
    managers that share run, and one that shares leads nothing while a single leader
    does; each says why in its log."""
    monkeypatch.setenv("INFRAKIT_ETCD_PREFIX", f"/mixed{time.monotonic_ns()}/")
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    opts = ["--store", "etcd", "--etcd-endpoints", etcd_url, "--lease-ttl", str(TTL)]
    manager = spawner(procs, home, opts)
    shared_one = spawner(procs, home, [*opts, "--share-groups"])
    sharing = shared_one("group-s1")
    single = manager("group-one")
    wait_until(lambda: logged(home, "group-one", "started with --share-groups run under"),
               10, what="the single leader to wait")
    assert json.loads(cli("manager", *opts, "status", "-o", "json").stdout)["Managers"]
    sharing.send_signal(signal.SIGTERM)
    assert sharing.wait(10) == 0
    wait_until(lambda: logged(home, "group-one", "leading (term"), 10,
               what="the single leader to lead once the sharing manager is gone")
    late = shared_one("group-s2")
    wait_until(lambda: logged(home, "group-s2", "a manager without --share-groups leads"),
               10, what="the sharing manager to lead nothing")
    for proc in (late, single):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
