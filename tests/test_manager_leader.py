"""Managers on one machine: one leads, behind a lock file, and serves as `group`; a second
waits, and takes over with every group when the first dies."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from infrakit.manager.leader_info import LeaderInfo
from infrakit.manager.lock_leader import LockLeadership
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi import GroupSpec
from infrakit.spi.errors import PluginError
from tests.conftest import Cli, Processes, StartPlugin
from tests.helpers import PY, answers_handshake, wait_until


def test_a_second_manager_waits_then_takes_over_with_every_group(
        procs: Processes, start_plugin: StartPlugin, cli: Cli, home: Path) -> None:
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    sock = home / "plugins" / "group"
    first = procs.spawn([PY, "-m", "infrakit", "manager"], home / "test-logs" / "m1.log")
    wait_until(lambda: answers_handshake(sock), 15, what="the first manager to lead")
    second = procs.spawn([PY, "-m", "infrakit", "manager"], home / "test-logs" / "m2.log")
    wait_until(lambda: "waiting to lead" in (home / "test-logs" / "m2.log").read_text(), 15,
               what="the second manager to wait")
    status = json.loads(cli("manager", "status", "-o", "json").stdout)
    assert status["PID"] == first.pid and status["Store"].startswith("sqlite:")
    assert status["Since"].endswith("Z")  # ISO 8601, as every time in JSON
    headers = cli("manager", "status").stdout.split("\n")[0].split()
    assert headers == ["LEADER", "HOST", "AGE", "STORE", "SERVES"]
    props = {"Allocation": {"Size": 2},
             "Instance": {"Plugin": "instance-file", "Properties": {}},
             "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}
    with RPCClient(sock) as conn:
        GroupClient(conn).commit_group(GroupSpec(id="web", properties=props), False)
        wait_until(lambda: GroupClient(conn).describe_group("web").converged, 15)
    [born] = json.loads(cli("group", "ls", "-o", "json").stdout)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed = time.monotonic()
    wait_until(lambda: answers_handshake(sock), 15, what="the second manager to lead")
    took = time.monotonic() - killed
    assert took < 5, f"the takeover took {took:.1f}s"
    assert json.loads(cli("manager", "status", "-o", "json").stdout)["PID"] == second.pid
    with RPCClient(sock) as conn:  # resumed from the store, with no new commit
        client = GroupClient(conn)
        assert [g.id for g in client.inspect_groups()] == ["web"]
        wait_until(lambda: client.describe_group("web").converged, 15)
        assert len(client.describe_group("web").instances or []) == 2
    [listed] = json.loads(cli("group", "ls", "-o", "json").stdout)
    assert listed["Created"] == born["Created"]  # the group's age outlives its manager
    second.send_signal(signal.SIGTERM)
    assert second.wait(10) == 0
    none = cli("manager", "status")
    assert none.returncode == 1 and "no manager leads" in none.stderr


def test_plugin_start_manager_serves_as_group(cli: Cli, home: Path) -> None:
    started = cli("plugin", "start", "manager")
    assert started.returncode == 0, started.stderr
    assert answers_handshake(home / "plugins" / "group")
    assert "group" in cli("plugin", "ls").stdout
    assert cli("plugin", "stop", "group").returncode == 0


def test_the_lock_fence_holds_only_while_the_lock_file_is_the_one_held(
        tmp_path: Path) -> None:
    leadership = LockLeadership(tmp_path / "manager")
    with pytest.raises(PluginError, match="does not hold"):
        leadership.fence()
    assert leadership.acquire(LeaderInfo.me("sqlite:test"), threading.Event())
    leadership.fence()
    assert leadership.leader() is not None
    leadership.lock_path.unlink()  # another manager may now lock a new file
    leadership.lock_path.touch()
    with pytest.raises(PluginError, match="does not hold"):
        leadership.fence()
