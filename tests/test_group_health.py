"""Health-based healing end to end: a flavor that calls the members listed in a file
unhealthy, a fast-polling group plugin, and the file instance plugin."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from infrakit.plugins.group.spec import GroupProperties, config_sha
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec
from infrakit.spi.properties import decode_properties
from tests.conftest import Plugin, StartPlugin, StartScript
from tests.helpers import wait_until

JUDGE = """
import json, sys
from pathlib import Path
from infrakit.rpc.server import serve
from infrakit.spi import Health, PluginError
from infrakit.plugins.flavor.vanilla import VanillaFlavor

HOME = Path(sys.argv[1]).parent

class Judge(VanillaFlavor):
    def healthy(self, properties, instance):
        verdicts = json.loads((HOME / "verdicts.json").read_text() or "{}")
        config = (instance.tags or {}).get("infrakit.config_sha")
        answer = verdicts.get(instance.id, verdicts.get(config, verdicts.get("*", "healthy")))
        if answer == "error":
            raise PluginError("the health check itself is broken")
        return Health.UNHEALTHY if answer == "unhealthy" else Health.HEALTHY

    def drain(self, properties, instance):
        with open(HOME / "drained.log", "a") as log:
            log.write(instance.id + "\\n")

serve("flavor-judge", flavor=Judge(), directory=Path(sys.argv[1]))
"""


class Judged:
    def __init__(self, home: Path, group: Plugin, instance: Plugin) -> None:
        self.home, self.group, self.instance = home, group.path, instance.path
        self.verdicts({})

    def verdicts(self, verdicts: dict[str, str]) -> None:
        (self.home / "verdicts.json").write_text(json.dumps(verdicts))

    def drained(self) -> list[str]:
        log = self.home / "drained.log"
        return log.read_text().split() if log.exists() else []

    @staticmethod
    def props(size: int, **extra: Any) -> dict[str, Any]:
        return {"Allocation": {"Size": size},
                "Instance": {"Plugin": "instance-file", "Properties": {}},
                "Flavor": {"Plugin": "flavor-judge", "Properties": {}},
                "HealthGrace": 0.5, **extra}

    def commit(self, size: int, **extra: Any) -> str:
        props = self.props(size, **extra)
        with RPCClient(self.group) as conn:
            return GroupClient(conn).commit_group(GroupSpec(id="web", properties=props), False)

    def members(self) -> set[str]:
        with RPCClient(self.instance) as conn:
            return {d.id for d in InstanceClient(conn).describe_instances(
                {"infrakit.group": "web"}, False)}

    def converged(self) -> bool:
        with RPCClient(self.group) as conn:
            return GroupClient(conn).describe_group("web").converged

    def status(self) -> Any:
        with RPCClient(self.group) as conn:
            return GroupClient(conn).describe_status("web")


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch, home: Path, start_plugin: StartPlugin,
           start_script: StartScript) -> Judged:
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.1")
    (home / "verdicts.json").write_text("{}")
    instance = start_plugin("instance-file")
    start_script(JUDGE, "flavor-judge")
    group = start_plugin("group")
    return Judged(home, group, instance)


def test_a_member_unhealthy_past_its_grace_is_drained_destroyed_and_replaced(
        judged: Judged) -> None:
    judged.commit(3)
    wait_until(judged.converged, 15, what="the group to converge")
    first = judged.members()
    sick = sorted(first)[0]
    judged.verdicts({sick: "unhealthy"})
    wait_until(lambda: sick not in judged.members() and len(judged.members()) == 3, 15,
               what="the unhealthy member to be replaced")
    assert judged.drained() == [sick]  # drained before it was destroyed, and alone
    assert len(first & judged.members()) == 2
    wait_until(judged.converged, 15, what="the group to converge again")


def test_a_broken_health_check_never_destroys_members(judged: Judged) -> None:
    judged.commit(3)
    wait_until(judged.converged, 15, what="the group to converge")
    before = judged.members()
    judged.verdicts({"*": "error"})
    deadline = time.monotonic() + 1.5  # 15 passes of the controller
    while time.monotonic() < deadline:
        assert judged.members() == before
        time.sleep(0.05)
    assert judged.drained() == []


def test_the_circuit_breaker_stops_replacing_when_too_many_are_unhealthy(
        judged: Judged) -> None:
    judged.commit(3, MaxUnhealthy=1)
    wait_until(judged.converged, 15, what="the group to converge")
    before = judged.members()
    judged.verdicts({"*": "unhealthy"})
    wait_until(lambda: judged.status().breaker_open, 10, what="the breaker to open")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert judged.members() == before
        time.sleep(0.05)
    status = judged.status()
    assert status.unhealthy == 3 and status.max_unhealthy == 1
    assert not status.converged
    assert {m.health for m in status.members} == {"failed"}
    judged.verdicts({})  # the check recovers: the breaker closes, nothing was lost
    wait_until(judged.converged, 10, what="the group to converge again")
    assert judged.members() == before


def test_a_rolling_update_whose_new_members_keep_failing_halts(judged: Judged) -> None:
    judged.commit(3)
    wait_until(judged.converged, 15, what="the group to converge")
    old = judged.members()
    broken = {"Instance": {"Plugin": "instance-file", "Properties": {"Version": 2}}}
    sha = config_sha(decode_properties(judged.props(3, **broken), GroupProperties))
    judged.verdicts({sha: "unhealthy"})  # every member of the new config is unhealthy
    judged.commit(3, UpdateFailureLimit=2, **broken)
    peak = 0

    def halted() -> bool:
        nonlocal peak
        peak = max(peak, len(judged.members()))
        return bool(judged.status().update_halted)

    wait_until(halted, 20, what="the update to halt")
    status = judged.status()
    assert status.update_halted.startswith("2 members of the new config failed (last: ")
    assert status.update_halted.endswith(" failed its health checks: never healthy in 0.5s: "
                                         "unhealthy)")
    assert status.outdated == 3 and not status.converged
    assert peak <= 4 and old <= judged.members()  # never beyond MaxSurge; the old ones kept
    # the halt is decided in the pass that replaces the last failing member; its destroy
    # may still be under way
    wait_until(lambda: judged.members() == old, 5, what="the last failing member to go")
    drained = len(judged.drained())
    deadline = time.monotonic() + 2  # 20 passes: no third new member is tried
    while time.monotonic() < deadline:
        assert judged.members() == old
        time.sleep(0.1)
    assert len(judged.drained()) == drained == 2
    judged.verdicts({})  # the config is fixed behind the group's back; an operator resumes
    with RPCClient(judged.group) as conn:
        GroupClient(conn).resume_update("web")
    wait_until(lambda: judged.converged() and not judged.members() & old, 20,
               what="the update to finish after the resume")


def test_members_are_described_with_properties_only_for_a_check_that_refers_to_them() -> None:
    """Properties may hold a member's whole spec: a pass reads them only when a check is
    aimed by them, and keeps reading them while members of such a config remain."""
    from infrakit.plugins.group.health import HealthJudge, aims_by_properties
    from infrakit.plugins.group.spec import PluginSpec

    plain = PluginSpec(plugin="flavor-vanilla", properties={"Init": ["echo hi"]})
    aimed = PluginSpec(plugin="flavor-vanilla",
                       properties={"Health": {"TCP": "127.0.0.1:{{ .Properties.Ports.http }}"}})
    assert not aims_by_properties(plain) and aims_by_properties(aimed)
    judge = HealthJudge("g")
    judge.remember("old", aimed)
    judge.remember("new", plain)
    assert judge.wants_properties()
    fresh = HealthJudge("g")
    fresh.remember("new", plain)
    assert not fresh.wants_properties()
