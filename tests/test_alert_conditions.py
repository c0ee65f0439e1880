"""Which alerts a group's state raises, and in which words: real controllers (never
started, so nothing is called), put in each condition by what a pass would leave."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrakit.manager.alerts import (
    BREAKER_OPEN,
    CRASH_LOOPING,
    NOT_CONVERGED,
    PLUGIN_DOWN,
    UPDATE_HALTED,
    Alert,
    Holds,
    group_alerts,
)
from infrakit.plugins.group.controller import GroupController
from infrakit.plugins.group.reach import Down
from infrakit.plugins.group.spec import parse_group
from infrakit.spi import GroupSpec
from infrakit.spi.calls import AsyncFlavorAPI, AsyncInstanceAPI
from infrakit.spi.errors import PluginError
from infrakit.store.sqlite import SQLiteStore

HOLDS = Holds(not_converged=600, others=60)


class NoPlugins:
    """The controllers are never started: nothing calls a plugin."""

    def instance(self, name: str) -> AsyncInstanceAPI:
        raise PluginError(f"no plugin named {name!r} is running")

    def flavor(self, name: str) -> AsyncFlavorAPI:
        raise PluginError(f"no plugin named {name!r} is running")

    async def close(self) -> None:
        return None


@pytest.fixture
def group(tmp_path: Path) -> Iterator[GroupController]:
    spec = GroupSpec(id="web", properties={
        "Allocation": {"Size": 3}, "MaxUnhealthy": 1,
        "Instance": {"Plugin": "instance-process", "Properties": {}},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}})
    c = GroupController("web", parse_group(spec), SQLiteStore(tmp_path / "groups.db"),
                        NoPlugins(), 5.0)
    c.status.converged, c.status.members = True, 3
    yield c


def raised(c: GroupController, down: dict[str, Down] | None = None) -> dict[str, Alert]:
    return {a.name: a for a in group_alerts(c, down or {}, HOLDS, time.time())}


def test_a_converged_group_raises_nothing(group: GroupController) -> None:
    assert raised(group) == {}


def test_a_group_short_of_its_members_says_by_how_much_and_what_the_pass_met(
        group: GroupController) -> None:
    s = group.status
    s.converged, s.members, s.unhealthy, s.errors = False, 2, 1, ["launch failed: quota"]
    alert = raised(group)[NOT_CONVERGED]
    assert (alert.hold, alert.label_map) == (600, {
        "alertname": NOT_CONVERGED, "group": "web", "severity": "warning"})
    assert alert.summary == "Group web has not converged"
    assert alert.description.startswith(
        "Group web has not had its desired members, all healthy or starting and of the "
        "committed config, for at least 10 minutes: it has 2 of 3, 1 unhealthy, 0 of an "
        "older config. The last pass met: launch failed: quota. Run `infrakit group "
        "describe web -v`")


def test_a_paused_update_is_no_shortfall(group: GroupController) -> None:
    group.status.converged, group.status.outdated = False, 3
    group.set_paused(True)
    assert raised(group) == {}


def test_an_open_breaker_names_the_count_and_the_limit(group: GroupController) -> None:
    group.status.breaker_open, group.status.unhealthy = True, 2
    alert = raised(group)[BREAKER_OPEN]
    assert alert.hold == 60
    assert alert.description.startswith("2 members of group web are unhealthy, more than "
                                        "its MaxUnhealthy of 1, so the group replaces none")


def test_a_halted_update_carries_its_reason_as_a_label(group: GroupController) -> None:
    group.rollout.failed(3, "proc-7 exited with status 1", 3)
    alert = raised(group)[UPDATE_HALTED]
    reason = "3 members of the new config failed (last: proc-7 exited with status 1)"
    assert alert.label_map["reason"] == reason and alert.hold == 0
    assert f"halted by itself: {reason}. The members of the old config keep serving." \
        in alert.description
    assert "`infrakit group cancel-update web`" in alert.description


def test_three_failures_in_a_row_are_a_crash_loop(group: GroupController) -> None:
    for _ in range(2):
        group.backoff.failed(time.time(), "proc-1 exited with status 2 after 0.1s")
    assert CRASH_LOOPING not in raised(group)
    group.backoff.failed(time.time(), "proc-4 exited with status 2 after 0.1s")
    alert = raised(group)[CRASH_LOOPING]
    assert "after 3 failures in a row (last: proc-4 exited with status 2" in alert.description
    group.backoff.reset("a new config was committed")
    assert CRASH_LOOPING not in raised(group)


def test_a_plugin_the_group_calls_and_cannot_reach(group: GroupController) -> None:
    down = {"flavor-vanilla": Down("no plugin named 'flavor-vanilla' is running", 0.0),
            "instance-other": Down("not this group's", 0.0)}
    [alert] = [a for a in group_alerts(group, down, HOLDS, time.time())]
    assert alert.name == PLUGIN_DOWN
    assert alert.label_map == {"alertname": PLUGIN_DOWN, "group": "web",
                               "plugin": "flavor-vanilla", "seen_by": "group",
                               "severity": "critical"}
    assert alert.summary == "Plugin flavor-vanilla is not reachable"
    assert ": no plugin named 'flavor-vanilla' is running. Run `infrakit plugin ls`" \
        in alert.description


def test_a_group_being_destroyed_raises_nothing(group: GroupController) -> None:
    group.status.converged, group.status.breaker_open = False, True
    group.destroying = True
    assert raised(group) == {}
