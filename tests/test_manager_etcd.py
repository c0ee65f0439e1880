"""Managers on etcd: a lease elects the leader; when it dies another takes over within the
lease's TTL, with every group; a leader frozen past its TTL stops at once when it runs
again, and never acts on a provider after it lost its term."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec
from tests.conftest import Cli, Processes, StartPlugin
from tests.etcd_engine import etcd_problem, private_etcd_cluster
from tests.helpers import PY, answers_handshake, require_engine, wait_until

TTL = 2


def test_leader_killed_then_frozen_successors_take_over_without_over_provisioning(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path,
        etcd_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_ETCD_PREFIX", f"/t{time.monotonic_ns()}/")
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    instance = start_plugin("instance-file").path
    start_plugin("flavor-vanilla")
    plugins = home / "plugins"
    opts = ["--store", "etcd", "--etcd-endpoints", etcd_url, "--lease-ttl", str(TTL)]

    def manager(name: str) -> subprocess.Popen[bytes]:
        return procs.spawn([PY, "-m", "infrakit", "manager", "--name", name, *opts],
                           home / "test-logs" / f"{name}.log")

    def leader_pid() -> int:
        out = cli("manager", *opts, "status", "-o", "json").stdout
        return int(json.loads(out)["PID"])

    peak = 0

    def members() -> int:
        nonlocal peak
        with RPCClient(instance) as conn:
            count = len(InstanceClient(conn).describe_instances(
                {"infrakit.group": "web"}, False))
        peak = max(peak, count)
        return count

    a = manager("group-a")
    wait_until(lambda: answers_handshake(plugins / "group-a"), 15, what="a to lead")
    b = manager("group-b")
    wait_until(lambda: "waiting to lead" in (home / "test-logs" / "group-b.log").read_text(),
               15, what="b to wait")
    assert leader_pid() == a.pid
    props = {"Allocation": {"Size": 3},
             "Instance": {"Plugin": "instance-file", "Properties": {}},
             "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}
    with RPCClient(plugins / "group-a") as conn:
        GroupClient(conn).commit_group(GroupSpec(id="web", properties=props), False)
    wait_until(lambda: members() == 3, 15, what="3 members")

    a.send_signal(signal.SIGKILL)  # killed: b leads within the TTL
    killed = time.monotonic()
    wait_until(lambda: answers_handshake(plugins / "group-b"), 15, what="b to lead")
    assert time.monotonic() - killed < TTL + 2.5
    assert leader_pid() == b.pid
    with RPCClient(plugins / "group-b") as conn:
        assert [g.id for g in GroupClient(conn).inspect_groups()] == ["web"]

    c = manager("group-c")
    wait_until(lambda: "waiting to lead" in (home / "test-logs" / "group-c.log").read_text(),
               15, what="c to wait")
    b.send_signal(signal.SIGSTOP)  # frozen past its TTL: c leads
    wait_until(lambda: answers_handshake(plugins / "group-c"), 15, what="c to lead")
    with RPCClient(plugins / "group-c") as conn:  # c changes the group while b sleeps
        GroupClient(conn).commit_group(GroupSpec(id="web", properties={
            **props, "Allocation": {"Size": 2}}), False)
    wait_until(lambda: members() == 2, 15, what="c to scale the group to 2")
    b.send_signal(signal.SIGCONT)  # b wakes up believing it leads a group of 3
    assert b.wait(10) == 3  # it ends itself, lease lost
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # and it never added the member it thought missing
        assert members() == 2
        time.sleep(0.05)
    assert peak <= 3
    assert leader_pid() == c.pid
    with RPCClient(plugins / "group-c") as conn:  # b left no record that c would wait on
        wait_until(lambda: GroupClient(conn).describe_group("web").converged, 5,
                   what="c to converge")


def test_on_a_3_member_cluster_the_leader_killed_mid_update_loses_nothing(
        procs: Processes, start_plugin: StartPlugin, home: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader is killed during a rolling update of 10 members: the next one finishes it,
    never beyond Size + MaxSurge and never destroying a member twice; then an etcd member
    is killed and the managers go on."""
    require_engine(etcd_problem())
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.1")
    instance = start_plugin("instance-file").path
    start_plugin("flavor-vanilla")
    plugins = home / "plugins"
    with private_etcd_cluster(3) as cluster:
        opts = ["--store", "etcd", "--etcd-endpoints", ",".join(cluster.urls),
                "--lease-ttl", str(TTL)]

        def manager(name: str) -> subprocess.Popen[bytes]:
            return procs.spawn([PY, "-m", "infrakit", "manager", "--name", name, *opts],
                               home / "test-logs" / f"{name}.log")

        seen: dict[str, str] = {}  # every member ever seen, and its config
        limit = [11]  # Size + MaxSurge

        def members() -> dict[str, str]:
            with RPCClient(instance) as conn:
                now = {d.id: (d.tags or {}).get("infrakit.config_sha", "")
                       for d in InstanceClient(conn).describe_instances(
                           {"infrakit.group": "web"}, False)}
            assert len(now) <= limit[0], f"{len(now)} members: beyond Size + MaxSurge"
            seen.update(now)
            return now

        def spec(note: str, size: int = 10) -> GroupSpec:
            return GroupSpec(id="web", properties={
                "Allocation": {"Size": size},
                "Instance": {"Plugin": "instance-file", "Properties": {"Note": note}},
                "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}},
                "UpdatePause": 0.3})  # slow enough to be killed in the middle

        a = manager("group-a")
        wait_until(lambda: answers_handshake(plugins / "group-a"), 15, what="a to lead")
        b = manager("group-b")
        with RPCClient(plugins / "group-a") as conn:
            GroupClient(conn).commit_group(spec("v1"), False)
        wait_until(lambda: len(members()) == 10, 20, what="10 members")
        old = set(members())
        with RPCClient(plugins / "group-a") as conn:
            GroupClient(conn).commit_group(spec("v2"), False)
        wait_until(lambda: 3 <= len(old - set(members())) < 10, 20, what="the update under way")
        a.send_signal(signal.SIGKILL)
        wait_until(lambda: answers_handshake(plugins / "group-b"), 15, interval=0.02,
                   what="b to lead")

        def done() -> bool:
            now = members()
            return len(now) == 10 and not set(now) & old
        wait_until(done, 60, interval=0.02, what="b to finish the update")
        assert len(set(members().values())) == 1  # every member has the new config
        cluster.stop(0)  # an etcd member dies: the managers go on
        limit[0] = 12
        with RPCClient(plugins / "group-b") as conn:
            GroupClient(conn).commit_group(spec("v2", size=12), False)
        wait_until(lambda: len(members()) == 12, 20, what="the group to grow to 12")
        for log in ("group-a", "group-b"):  # a member destroyed twice would be refused
            text = (home / "test-logs" / f"{log}.log").read_text()
            assert "no instance" not in text, text[-2000:]
        b.send_signal(signal.SIGTERM)
        b.wait(15)
