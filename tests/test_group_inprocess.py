"""The group plugin in one process, handed plugin objects for its instance and flavor
plugins: the lookup is all it calls, so a fault of either side of the wire can be staged
exactly, and each test runs in milliseconds. The same plugin over real sockets is in
test_group_plugin.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import msgspec.structs
import pytest

from infrakit.plugins.group.plan import GROUP_TAG
from infrakit.plugins.group.plugin import GroupPlugin
from infrakit.spi import (
    Allocation,
    Description,
    EndedInstance,
    GroupSpec,
    Health,
    HealthReport,
    Index,
    Spec,
)
from infrakit.spi.access import Principal, Role, acting_as
from infrakit.spi.calls import AsyncFlavorAPI, AsyncInstanceAPI
from infrakit.spi.errors import CallFailed, PluginError, Unreachable, Unsupported
from infrakit.spi.instance import InstanceLogs
from infrakit.spi.types import MAX_BODY
from infrakit.store.sqlite import SQLiteStore

POLL = 0.02


class Cloud:
    """An instance plugin in memory. ``fault`` stages what the next provisions meet:
    ``refused`` (the plugin answers an error per item: nothing made) or ``lost`` (the
    instances are made, but no answer comes back)."""

    def __init__(self) -> None:
        self.made: dict[str, Description] = {}
        self.fault = ""
        self._ids = itertools.count(1)

    async def validate(self, properties: Any) -> None:
        if properties == "bad":
            raise CallFailed("cloud", "Instance", "Properties: bad")

    async def provision(self, spec: Spec) -> str:
        iid = f"vm-{next(self._ids)}"
        self.made[iid] = Description(id=iid, logical_id=spec.logical_id,
                                     tags=dict(spec.tags or {}))
        return iid

    async def provision_each(self, specs: list[Spec]) -> list[str | Exception]:
        if self.fault == "refused":
            return [CallFailed("cloud", "Instance", "no capacity left")] * len(specs)
        made: list[str | Exception] = [await self.provision(s) for s in specs]
        if self.fault == "lost":
            raise Unreachable("cloud", "Instance", "no answer within 60s")
        return made

    async def label(self, instance: str, labels: dict[str, str]) -> None:
        self.made[instance].tags = {**(self.made[instance].tags or {}), **labels}

    async def destroy(self, instance: str) -> None:
        del self.made[instance]

    async def describe_instances(self, tags: dict[str, str],
                                 properties: bool) -> list[Description]:
        return [d for d in self.made.values()
                if tags.items() <= (d.tags or {}).items()]

    async def describe_ended(self, tags: dict[str, str]) -> list[EndedInstance]:
        raise Unsupported("cloud", "Instance", "Method not found", -32601)

    async def logs(self, instance: str, offset: str, tail: int | None,
                   previous: bool) -> InstanceLogs:
        raise Unsupported("cloud", "Instance", "Method not found", -32601)


class Flavor:
    """A flavor that prepares specs unchanged and finds every member healthy."""

    async def validate(self, properties: Any, allocation: Allocation) -> None:
        return None

    async def prepare(self, properties: Any, spec: Spec, allocation: Allocation,
                      index: Index) -> Spec:
        return spec

    async def prepare_each(self, properties: Any, allocation: Allocation,
                           items: list[tuple[Spec, Index]]) -> list[Spec | Exception]:
        return [spec for spec, _ in items]

    async def healthy(self, properties: Any, instance: Description) -> Health:
        return Health.HEALTHY

    async def healthy_each(self, properties: Any,
                           instances: list[Description]) -> list[HealthReport | Exception]:
        return [HealthReport(Health.HEALTHY)] * len(instances)

    async def drain(self, properties: Any, instance: Description) -> None:
        return None


class Lookup:
    """The plugins by name; any other name is not running."""

    def __init__(self, cloud: Cloud, flavor: Flavor) -> None:
        self.cloud, self.flavor_ = cloud, flavor

    def instance(self, name: str) -> AsyncInstanceAPI:
        if name != "cloud":
            raise PluginError(f"no plugin named {name!r} is running")
        return self.cloud

    def flavor(self, name: str) -> AsyncFlavorAPI:
        if name != "plain":
            raise PluginError(f"no plugin named {name!r} is running")
        return self.flavor_

    async def close(self) -> None:
        return None


def spec(size: int, instance: str = "cloud", properties: Any = None) -> GroupSpec:
    return GroupSpec(id="web", properties={
        "Allocation": {"Size": size}, "Instance": {"Plugin": instance, "Properties": properties},
        "Flavor": {"Plugin": "plain"}, "ProvisionDeadline": 60})


Scenario = Callable[[GroupPlugin, Cloud], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, flavor: Flavor | None = None) -> None:
    """Run ``scenario`` against a started group plugin on a SQLite store in ``tmp_path``
    (with ``flavor``, else a flavor that changes nothing)."""

    async def main() -> None:
        cloud = Cloud()
        plugin = GroupPlugin(SQLiteStore(tmp_path / "groups.db"),
                             Lookup(cloud, flavor or Flavor()), POLL)
        await plugin.start()
        try:
            await scenario(plugin, cloud)
        finally:
            await plugin.stop()

    asyncio.run(main())


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(POLL)


def test_a_group_converges_on_plugin_objects_in_the_same_process(tmp_path: Path) -> None:
    async def scenario(plugin: GroupPlugin, cloud: Cloud) -> None:
        assert await plugin.commit_group(spec(3), False) == "Managing 3 instances"

        async def converged() -> bool:
            return (await plugin.describe_group("web")).converged

        await until(converged)
        assert len(cloud.made) == 3
        assert all((d.tags or {})[GROUP_TAG] == "web" for d in cloud.made.values())
        del cloud.made[next(iter(cloud.made))]  # a member vanishes: it is replaced
        await until(converged)
        assert len(cloud.made) == 3

    run(tmp_path, scenario)


def test_provisions_that_got_no_answer_count_until_their_deadline(tmp_path: Path) -> None:
    """The instances were made but the answer was lost: the group must not make more, as
    the reference did with a slow provider; it waits for the deadline instead."""

    async def scenario(plugin: GroupPlugin, cloud: Cloud) -> None:
        cloud.fault = "lost"
        await plugin.commit_group(spec(3), False)

        async def in_flight() -> bool:
            return len((await plugin.describe_status("web")).in_flight) == 3

        await until(in_flight)
        passes = (await plugin.describe_status("web")).passes
        await until(lambda: _passed(plugin, passes + 5))
        status = await plugin.describe_status("web")
        assert len(cloud.made) == 3, "provisioned again while the first ones were in flight"
        assert len(status.in_flight) == 3
        assert not status.converged

    run(tmp_path, scenario)


def test_provisions_the_plugin_refused_are_forgotten_and_named(tmp_path: Path) -> None:
    async def scenario(plugin: GroupPlugin, cloud: Cloud) -> None:
        cloud.fault = "refused"
        await plugin.commit_group(spec(2), False)

        async def failing() -> bool:
            return "after 2 failures in a row" in (await plugin.describe_status("web")).backoff

        await until(failing)
        status = await plugin.describe_status("web")
        assert status.in_flight == []  # nothing was made: nothing is waited for
        assert "(last: launch failed: Instance plugin 'cloud': no capacity left)" in \
            status.backoff
        # each error once, however many members met it
        assert status.errors == ["Instance plugin 'cloud': no capacity left (2 times)"]
        cloud.fault = ""

        async def converged() -> bool:
            return (await plugin.describe_group("web")).converged

        await until(converged, timeout=10)  # the backoff is short at this poll
        assert len(cloud.made) == 2

    run(tmp_path, scenario)


def test_a_commit_the_plugins_refuse_changes_nothing(tmp_path: Path) -> None:
    async def scenario(plugin: GroupPlugin, cloud: Cloud) -> None:
        for bad, said in ((spec(2, instance="nope"), "no plugin named 'nope' is running"),
                          (spec(2, properties="bad"), "Instance plugin 'cloud': Properties")):
            try:
                await plugin.commit_group(bad, False)
            except PluginError as exc:
                assert said in str(exc)
            else:
                raise AssertionError("committed")
        assert await plugin.inspect_groups() == []
        assert plugin.store.load_groups() == {}
        assert cloud.made == {}

    run(tmp_path, scenario)


async def _passed(plugin: GroupPlugin, passes: int) -> bool:
    return (await plugin.describe_status("web")).passes >= passes


def test_a_commit_that_changes_only_tunables_says_what_it_changes(tmp_path: Path) -> None:
    async def scenario(plugin: GroupPlugin, cloud: Cloud) -> None:
        await plugin.commit_group(spec(2), False)
        tuned = GroupSpec(id="web", properties={**spec(2).properties, "HealthGrace": 5,
                                                "StartupGrace": 2.5})
        assert await plugin.commit_group(tuned, True) == (
            "Noop\nChanging HealthGrace from 60 to 5, StartupGrace from 0 to 2.5")
        bigger = GroupSpec(id="web", properties={**tuned.properties,
                                                 "Allocation": {"Size": 3}})
        assert await plugin.commit_group(bigger, False) == (
            "Adding 1 instances to increase the group size to 3\nChanging HealthGrace from 60 "
            "to 5, StartupGrace from 0 to 2.5")
        assert await plugin.commit_group(bigger, False) == "Noop"

    run(tmp_path, scenario)


def test_a_freed_group_committed_again_says_which_members_it_adopts(tmp_path: Path) -> None:
    async def scenario(plugin: GroupPlugin, cloud: Cloud) -> None:
        await plugin.commit_group(spec(2), False)

        async def converged() -> bool:
            return (await plugin.describe_group("web")).converged

        await until(converged)
        await plugin.free_group("web")
        assert await plugin.commit_group(spec(2, properties={"v": 2}), True) == (
            "Managing 2 instances\nAdopting 2 existing members; 2 of them have another "
            "config and will be replaced by a rolling update")
        assert await plugin.commit_group(spec(2), False) == (
            "Managing 2 instances\nAdopting 2 existing members")

    run(tmp_path, scenario)


# -- what one call carries -------------------------------------------------------------------


class Sizes(Cloud):
    """Records how many bytes each ProvisionEach call carried."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    async def provision_each(self, specs: list[Spec]) -> list[str | Exception]:
        self.calls.append(len(msgspec.json.encode(specs)))
        return await super().provision_each(specs)


class BigInit(Flavor):
    """Gives every member an Init of ``size`` bytes, and the logical ID ``huge`` one of
    5 MiB; records how many bytes each PrepareEach call carried."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: list[int] = []

    def _init(self, spec: Spec) -> Spec:
        size = 5 * 2**20 if spec.logical_id == "huge" else self.size
        return msgspec.structs.replace(spec, init="x" * size)

    async def prepare(self, properties: Any, spec: Spec, allocation: Allocation,
                      index: Index) -> Spec:
        return self._init(spec)

    async def prepare_each(self, properties: Any, allocation: Allocation,
                           items: list[tuple[Spec, Index]]) -> list[Spec | Exception]:
        self.calls.append(len(msgspec.json.encode([properties, allocation, items])))
        return [self._init(spec) for spec, _ in items]


def run_sized(tmp_path: Path, scenario: Callable[[GroupPlugin, Sizes], Awaitable[None]],
              flavor: BigInit) -> None:
    async def main() -> None:
        cloud = Sizes()
        plugin = GroupPlugin(SQLiteStore(tmp_path / "groups.db"), Lookup(cloud, flavor), POLL)
        await plugin.start()
        try:
            await scenario(plugin, cloud)
        finally:
            await plugin.stop()

    asyncio.run(main())


def sized_spec(allocation: dict[str, Any]) -> GroupSpec:
    return GroupSpec(id="web", properties={
        "Allocation": allocation, "Instance": {"Plugin": "cloud", "Properties": {
            "Blob": "p" * 300_000}}, "Flavor": {"Plugin": "plain"}})


def test_batches_are_split_to_fit_what_a_plugin_accepts(tmp_path: Path) -> None:
    """16 members of 600 kB each: one ProvisionEach call would carry 9.6 MB, and the
    plugin would refuse it (HTTP 413) on every pass, forever."""
    flavor = BigInit(300_000)

    async def scenario(plugin: GroupPlugin, cloud: Sizes) -> None:
        await plugin.commit_group(sized_spec({"Size": 16}), False)

        async def converged() -> bool:
            return (await plugin.describe_group("web")).converged

        await until(converged)
        assert len(cloud.made) == 16
        assert len(cloud.calls) >= 2 and max(cloud.calls) <= MAX_BODY, cloud.calls
        assert len(flavor.calls) >= 2 and max(flavor.calls) <= MAX_BODY, flavor.calls

    run_sized(tmp_path, scenario, flavor)


def test_a_member_whose_spec_could_never_fit_is_refused_saying_why(tmp_path: Path) -> None:
    async def scenario(plugin: GroupPlugin, cloud: Sizes) -> None:
        await plugin.commit_group(sized_spec({"LogicalIDs": ["a", "huge", "b"]}), False)

        async def failing() -> bool:
            return bool((await plugin.describe_status("web")).backoff)

        await until(failing)
        status = await plugin.describe_status("web")
        assert sorted(d.logical_id or "" for d in cloud.made.values()) == ["a", "b"]
        assert max(cloud.calls) <= MAX_BODY
        assert "launch failed: the spec of an instance is 5.3 MiB with its Init of 5 " \
               "MiB, more than the 4 MiB a plugin accepts in one call; not sent" in \
               status.backoff, status.backoff
        for said in (status.backoff, *status.errors):
            assert said.count("plugin 'cloud'") <= 1, said

    run_sized(tmp_path, scenario, BigInit(1000))


def test_a_commit_whose_members_could_never_fit_is_refused(tmp_path: Path) -> None:
    async def scenario(plugin: GroupPlugin, cloud: Sizes) -> None:
        with pytest.raises(PluginError) as refused:
            await plugin.commit_group(sized_spec({"LogicalIDs": ["huge", "a"]}), True)
        assert str(refused.value) == (
            "Init: as flavor 'plain' prepares it, the spec of an instance is 5.3 MiB "
            "with its Init of 5 MiB, more than the 4 MiB a plugin accepts in one call; no "
            "member could be provisioned")
        assert await plugin.inspect_groups() == []
        assert cloud.made == {} and cloud.calls == []

    run_sized(tmp_path, scenario, BigInit(1000))


def test_the_group_keeps_what_it_did_and_why_as_events(tmp_path: Path) -> None:
    async def scenario(plugin: GroupPlugin, cloud: Cloud) -> None:
        async def events() -> list[tuple[str, str, str, str]]:
            return [(e.kind, e.member, e.reason, e.verb)
                    for e in await plugin.events("web", None, None, 0)]

        async def converged() -> bool:
            return (await plugin.describe_group("web")).converged

        await plugin.commit_group(spec(3), False)
        await until(converged)
        await until(lambda: _has(events, "provisioned", 3))
        assert (await events())[0] == ("committed", "", "Managing 3 instances", "commit")
        assert [e.actor for e in await plugin.events("web", None, None, 0)][:1] == [""]
        made = sorted(cloud.made)
        assert sorted(m for k, m, r, _ in await events() if k == "provisioned"
                      and r == "scale-out: to reach 3 members") == made
        # idle passes write nothing
        count = len(await events())
        passes = (await plugin.describe_status("web")).passes
        await until(lambda: _passed(plugin, passes + 5))
        assert len(await events()) == count

        await plugin.commit_group(spec(2), False)
        await until(lambda: _has(events, "destroyed", 1))
        assert [r for k, _, r, _ in await events() if k == "destroyed"] == ["scale-in"]
        assert (await events())[count][:2] == ("committed", "")

        victim = sorted(cloud.made)[0]
        await plugin.destroy_instances("web", [victim], False)
        assert ("destroyed", victim, "by request", "destroy-instances") in await events()
        with acting_as(Principal("alice", Role.OPERATOR)):  # as the runtime runs a call
            await plugin.pause_update("web")
        history = await plugin.events("web", None, None, 0)
        assert [(e.kind, e.verb, e.actor) for e in history if e.verb][-1] == (
            "update paused", "pause-update", "alice")
        for _ in range(2):  # back to 3, then to 2: paused the first time only
            with acting_as(Principal("bob", Role.OPERATOR)):
                await plugin.cancel_update("web")
        history = await plugin.events("web", None, None, 0)
        assert [(e.kind, e.verb, e.actor) for e in history if e.verb][-3:] == [
            ("committed", "cancel-update", "bob"), ("update resumed", "cancel-update", "bob"),
            ("committed", "cancel-update", "bob")]

        cloud.fault = "refused"
        await plugin.commit_group(spec(3), False)
        await until(lambda: _has(events, "launch failed", 1))
        failed = next(e for e in await plugin.events("web", None, None, 0)
                  if e.kind == "launch failed")
        assert "no capacity left" in failed.reason and failed.details
        await until(lambda: _has(events, "backoff started", 1))
        last = (await plugin.events("web", None, None, 1))[0]
        assert [e.seq for e in await plugin.events("web", None, last.seq - 1, 0)] == [last.seq]
        cloud.fault = ""
        await plugin.free_group("web")
        assert plugin.store.events("web") == []

    run(tmp_path, scenario)


async def _has(events: Callable[[], Awaitable[list[tuple[str, str, str, str]]]], kind: str,
               n: int) -> bool:
    return sum(e[0] == kind for e in await events()) >= n


class Sick(Flavor):
    """A flavor that finds the members in ``sick`` unhealthy."""

    def __init__(self) -> None:
        self.sick: set[str] = set()

    async def healthy_each(self, properties: Any,
                           instances: list[Description]) -> list[HealthReport | Exception]:
        return [HealthReport(Health.UNHEALTHY, "HTTP 503") if d.id in self.sick
                else HealthReport(Health.HEALTHY) for d in instances]


def test_events_say_health_replacements_the_breaker_and_the_rolling_update(
        tmp_path: Path) -> None:
    flavor = Sick()

    async def main() -> None:
        cloud = Cloud()
        plugin = GroupPlugin(SQLiteStore(tmp_path / "groups.db"), Lookup(cloud, flavor), POLL)
        await plugin.start()
        try:
            await scenario(plugin, cloud)
        finally:
            await plugin.stop()

    async def scenario(plugin: GroupPlugin, cloud: Cloud) -> None:
        async def events() -> list[tuple[str, str, str, str]]:
            return [(e.kind, e.member, e.reason, e.verb)
                    for e in await plugin.events("web", None, None, 0)]

        async def converged() -> bool:
            return (await plugin.describe_group("web")).converged

        def tuned(properties: Any = None, **extra: Any) -> GroupSpec:
            s = spec(3, properties=properties)
            s.properties.update(HealthGrace=0.05, MaxUnhealthy=1, **extra)
            return s

        await plugin.commit_group(tuned(), False)
        await until(converged)
        sick = sorted(cloud.made)[0]
        flavor.sick.add(sick)
        await until(lambda: _has(events, "destroyed", 1))
        [(_, member, reason, _)] = [e for e in await events() if e[0] == "destroyed"]
        assert member == sick and reason.startswith("unhealthy for ")
        assert reason.endswith("s: HTTP 503")
        await until(lambda: _has(events, "provisioned", 4))
        assert (await events())[-1][2] == "replacement: back to 3 members"
        await until(converged)

        flavor.sick.update(cloud.made)
        await until(lambda: _has(events, "breaker opened", 1))
        flavor.sick.clear()
        await until(lambda: _has(events, "breaker closed", 1))

        await plugin.commit_group(tuned("v2", MaxUnavailable=1), False)
        await until(lambda: _has(events, "update finished", 1), timeout=10)
        kinds = [e[0] for e in await events()]
        assert kinds.index("update started") < kinds.index("update finished")
        assert sum(e[0] == "destroyed" and e[2] == "rolling update"
                   for e in await events()) == 3

    asyncio.run(main())
