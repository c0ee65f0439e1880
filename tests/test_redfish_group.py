"""A group of physical servers: the instance-redfish plugin, flavor-vanilla and the group
controller, each as its own process, against the sushy-tools emulator (a pool of systems
of different sizes, on its own loopback port and state directory). Every wait polls with
a deadline."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient, InstanceClient
from infrakit.spi import GroupSpec
from tests.conftest import Cli, Plugin, StartPlugin
from tests.helpers import require_engine, stop_process, wait_until
from tests.redfish_engine import (
    PASSWORD,
    USER,
    Emulator,
    Images,
    emulator,
    image_server,
    redfish_problem,
    system,
)

NAME = "instance-redfish"
CONVERGE = 60.0  # seconds: a deadline, never a sleep
POOL = [system("small-1", 4, 16), system("small-2", 4, 16), system("mid-1", 16, 64),
        system("mid-2", 16, 64), system("mid-3", 16, 64), system("mid-4", 16, 64),
        system("big-1", 64, 512)]
"""Four systems fit the group's spec: three members, and one for a replacement."""


@pytest.fixture
def bmc() -> Iterator[Emulator]:
    require_engine(redfish_problem())
    with emulator(POOL) as running:
        yield running


@pytest.fixture
def images() -> Iterator[Images]:
    with image_server() as served:
        yield served


@pytest.fixture
def pool(bmc: Emulator, home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = home / "pool.yml"
    path.write_text(json.dumps({
        "BMCs": [{"Name": "rack1", "URL": bmc.url, "Username": USER, "Password": PASSWORD}],
        "UserData": {"Directory": str(home / "user-data")}}))
    os.chmod(path, 0o600)
    monkeypatch.setenv("INFRAKIT_REDFISH_POOL", str(path))
    monkeypatch.setenv("INFRAKIT_GROUP_POLL", "0.2")
    return path


def spec(image: str, size: int = 3, cpus: int = 8) -> GroupSpec:
    return GroupSpec(id="web", properties={
        "Allocation": {"Size": size},
        "Instance": {"Plugin": NAME, "Properties": {"MinCPUs": cpus, "BootImage": image,
                                                    "StopGrace": 5}},
        "Flavor": {"Plugin": "flavor-vanilla",
                   "Properties": {"Init": ["echo ready"], "Tags": {"tier": "web"}}},
    })


def members(plugin: Plugin) -> dict[str, dict[str, Any]]:
    """The group's servers as the plugin describes them: ID -> properties."""
    with RPCClient(plugin.path, timeout=60) as conn:
        found = InstanceClient(conn).describe_instances({"infrakit.group": "web"}, True)
    return {d.id: d.properties for d in found}


def converged(group: Plugin, plugin: Plugin, size: int) -> dict[str, dict[str, Any]] | None:
    with RPCClient(group.path, timeout=60) as conn:
        desc = GroupClient(conn).describe_group("web")
    now = members(plugin)
    said = {d.id for d in desc.instances or []}
    on = all(p["PowerState"] == "On" and p["Phase"] == "on" for p in now.values())
    return now if desc.converged and len(now) == size and set(now) == said and on else None


@pytest.mark.timeout(400)
def test_a_group_of_servers_converges_heals_updates_and_is_destroyed(
        pool: Path, bmc: Emulator, images: Images, start_plugin: StartPlugin,
        home: Path) -> None:
    plugin = start_plugin(NAME)
    start_plugin("flavor-vanilla")
    group = start_plugin("group")
    first, second = images.url("v1.iso"), images.url("v2.iso")
    try:
        with RPCClient(group.path, timeout=60) as conn:
            assert GroupClient(conn).commit_group(spec(first), False) == "Managing 3 instances"
        now = wait_until(lambda: converged(group, plugin, 3), CONVERGE, interval=0.1,
                         what="3 servers on") or {}
        taken = sorted(p["Name"] for p in now.values())
        mids = [f"mid-{i}" for i in (1, 2, 3, 4)]
        assert set(taken) < set(mids)  # the smallest that fit: no small, not the big one
        [spare] = set(mids) - set(taken)
        assert {bmc.power(n) for n in ("small-1", "small-2", spare, "big-1")} == {"Off"}
        assert {bmc.media(n) for n in taken} == {first}
        published = home / "user-data" / bmc.uuid(taken[0]) / "user-data"
        assert "echo ready" in published.read_text()

        victim = taken[1]
        bmc.reset(victim, "ForceOff")  # behind the group's back
        lost = next(i for i, p in now.items() if p["Name"] == victim)

        def healed() -> dict[str, dict[str, Any]] | None:
            found = converged(group, plugin, 3)
            return found if found and lost not in found else None

        after: Any = wait_until(healed, CONVERGE, interval=0.1, what=f"{victim} replaced")
        assert sorted(p["Name"] for p in after.values()) == sorted({*taken, spare} - {victim})
        assert bmc.power(victim) == "Off"  # left off, held out of the pool

        rolling_update_goes_one_at_a_time(group, plugin, bmc, second)

        with RPCClient(group.path, timeout=60) as conn:
            GroupClient(conn).destroy_group("web")
        wait_until(lambda: members(plugin) == {}, CONVERGE, interval=0.1,
                   what="every server destroyed")
        assert {bmc.power(s["name"]) for s in POOL} == {"Off"}
        assert {bmc.media(s["name"]) for s in POOL if s["name"] != victim} == {None}
        with RPCClient(plugin.path, timeout=60) as conn:  # the one powered off by hand
            inst = InstanceClient(conn)
            [ended] = inst.describe_ended({})
            assert ended.id == lost
            inst.destroy(lost)
        assert bmc.media(victim) is None
        assert json.loads((home / "instance-redfish" / NAME / "state.json").read_text())[
            "Claims"] == {}
    finally:
        stop_process(group.proc)  # first, while the plugins it calls still answer


def rolling_update_goes_one_at_a_time(group: Plugin, plugin: Plugin, bmc: Emulator,
                                      image: str) -> None:
    """A new BootImage replaces the members one by one (the group makes the new member
    before it destroys an old one, on the one spare system): never more than one server
    beyond the group's size, never fewer than two members on."""
    with RPCClient(group.path, timeout=60) as conn:
        GroupClient(conn).commit_group(spec(image), False)
    lowest, highest = 3, 3

    def updated() -> bool:
        nonlocal lowest, highest
        now = members(plugin)
        on = [p for p in now.values() if p["PowerState"] == "On" and p["Phase"] == "on"]
        lowest, highest = min(lowest, len(on)), max(highest, len(now))
        return len(on) == 3 and len(now) == 3 and all(p["BootImage"] == image for p in on)

    wait_until(updated, 3 * CONVERGE, interval=0.05, what="every server on the new image")
    assert lowest >= 2 and highest == 4, (lowest, highest)
    assert wait_until(lambda: converged(group, plugin, 3), CONVERGE, interval=0.1,
                      what="the group converged on the new image")
    on = [s["name"] for s in POOL if bmc.power(s["name"]) == "On"]
    assert {bmc.media(n) for n in on} == {image}


def test_without_a_free_system_the_group_shows_why_and_backs_off(
        pool: Path, bmc: Emulator, images: Images, start_plugin: StartPlugin) -> None:
    plugin = start_plugin(NAME)
    start_plugin("flavor-vanilla")
    group = start_plugin("group")
    try:
        with RPCClient(group.path, timeout=60) as conn:
            GroupClient(conn).commit_group(spec(images.url("v1.iso"), size=2, cpus=32), False)

        def held() -> str:
            with RPCClient(group.path, timeout=60) as conn:
                return GroupClient(conn).describe_status("web").backoff

        def failures() -> int:
            found = re.search(r"after (\d+) failures in a row", held())
            return int(found[1]) if found else 0

        wait_until(lambda: failures() >= 3, CONVERGE, interval=0.1, what="3 failed launches")
        assert "no free system matching MinCPUs ≥ 32: 6 too small, 1 claimed" in held()
        assert len(members(plugin)) == 1
        bmc.zero()
        seen = time.monotonic()
        wait_until(lambda: failures() >= 4, CONVERGE, interval=0.1, what="a 4th launch")
        assert time.monotonic() - seen > 2.5  # the 4th waits 4 s: launches back off
        changes = [k for k in bmc.counts() if not k.startswith("GET")]
        assert changes == []  # a refused launch touches no system
    finally:
        stop_process(group.proc)


def test_a_pool_file_others_may_read_stops_the_plugin_with_the_reason(
        home: Path, cli: Cli) -> None:
    path = home / "pool.yml"
    path.write_text(json.dumps({"BMCs": [{"Name": "r1", "URL": "http://127.0.0.1:9",
                                          "Password": "not-for-others"}]}))
    os.chmod(path, 0o644)
    done = cli("plugin", "run", NAME, env={"INFRAKIT_REDFISH_POOL": str(path)})
    assert done.returncode != 0
    assert "may be read or written by others (mode 644)" in done.stderr
    assert "Traceback" not in done.stderr and "not-for-others" not in done.stderr
