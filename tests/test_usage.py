"""Member time, counted by a group's controller (``plugins/group/usage.py``): the
accounting on its own, and in a group plugin that runs in this process over plugin objects
(the same over real sockets and the CLI is in test_group_usage.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from infrakit.plugins.group import usage as usage_module
from infrakit.plugins.group.plan import CONFIG_TAG
from infrakit.plugins.group.plugin import GroupPlugin
from infrakit.plugins.group.storage import DAY, GroupStore, UsageBatch, day_of
from infrakit.plugins.group.usage import (
    UsageCollector,
    UsageMeter,
    spread,
    usage_of,
    with_unsent,
)
from infrakit.spi import Description
from infrakit.spi.errors import PluginError
from infrakit.spi.group import UsageRecord
from infrakit.store.sqlite import SQLiteStore
from tests.test_group_inprocess import Cloud, run, spec, until

NOON = 20_000 * DAY + DAY / 2
"""Noon (UTC) of day 20,000 since the epoch (2024-10-04)."""


def test_an_interval_is_spread_over_the_utc_days_it_touches() -> None:
    assert spread(NOON, NOON + 60) == [(20_000, 60.0)]
    midnight = 20_001 * DAY
    assert spread(midnight - 10, midnight + 30) == [(20_000, 10.0), (20_001, 30.0)]
    assert spread(NOON, NOON) == [] and spread(NOON, NOON - 5) == []


class Passes:
    """What the controller hands its meter each pass: how many members carry each config
    (as the plan counts them), and those first seen since the pass before, and when (as
    the health judge knows them)."""

    def __init__(self) -> None:
        self.meter = UsageMeter("g")
        self.first_seen: dict[str, float] = {}

    def saw(self, members: dict[str, str | None], now: float, judged: float | None = None
            ) -> dict[str, float]:
        """A pass at ``now`` saw ``members`` (ID to config), judged at ``judged``."""
        new = [(Description(id=iid, tags={CONFIG_TAG: c} if c else None), judged or now)
               for iid, c in members.items() if iid not in self.first_seen]
        self.first_seen.update({d.id: since for d, since in new})
        self.meter.observe(Counter(members.values()), new, now)
        return self.meter.totals


def test_a_member_counts_from_when_it_is_first_seen_to_the_last_pass_that_sees_it() -> None:
    p = Passes()
    assert p.saw({"a": "c1", "b": "c1"}, NOON) == {}  # the first pass has no pass before it
    # c, first seen by this pass's health check 2 s before the pass counts, has lived 2 s
    assert p.saw({"a": "c1", "b": "c1", "c": "c1"}, NOON + 10, judged=NOON + 8) == {
        "c1": 22.0}
    assert p.saw({"b": "c1", "c": "c2"}, NOON + 15) == {"c1": 27.0, "c2": 5.0}  # a gone
    p.saw({"b": "c1"}, NOON + 15)  # no time passed
    p.saw({"b": "c1"}, NOON + 12)  # the clock went back: nothing counted
    assert p.saw({"b": "c1"}, NOON + 14) == {"c1": 29.0, "c2": 5.0}
    assert sorted(p.meter.unsent()) == [(20_000, "c1", 29.0), (20_000, "c2", 5.0)]


def test_a_member_without_a_config_hash_counts_as_none() -> None:
    p = Passes()
    p.saw({"x": None}, NOON)
    assert p.saw({"x": None}, NOON + 4) == {"none": 4.0}


def test_time_across_midnight_is_kept_on_both_days() -> None:
    p = Passes()
    midnight = 20_001 * DAY
    p.saw({"a": "c1"}, midnight - 10)
    p.saw({"a": "c1", "b": "c1"}, midnight + 30, judged=midnight + 20)
    assert sorted(p.meter.unsent()) == [(20_000, "c1", 10.0), (20_001, "c1", 40.0)]


def ran(meter: UsageMeter, seconds: float, config: str = "c1", start: float = NOON) -> None:
    """One member of ``config`` seen by two passes ``seconds`` apart."""
    one: Counter[str | None] = Counter({config: 1})
    meter.observe(one, [], start)
    meter.observe(one, [], start + seconds)


class Recording:
    """A store that keeps the usage batches it is given, failing the first ``fail``."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.batches: list[UsageBatch] = []

    def add_usage(self, group: str, batch: UsageBatch) -> None:
        self.batches.append(batch)
        if self.fail:
            self.fail -= 1
            raise PluginError("etcd at http://127.0.0.1:1: connection refused")


def test_writes_come_at_most_every_write_every_and_a_failed_one_is_retried_as_it_was(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        recording = Recording(fail=1)
        store = cast(GroupStore, recording)
        meter = UsageMeter("g")
        meter.know("c1", b'{"Plugin":"cloud","Properties":null}')
        ran(meter, 10)
        await meter.write(store)
        assert recording.batches == []  # too soon after the meter began
        monkeypatch.setattr(usage_module, "WRITE_EVERY", 0.0)
        await meter.write(store)
        first = recording.batches[-1]
        assert (first.seq, [(r.day, r.config, r.seconds, r.instance) for r in first.rows]) == (
            1, [(20_000, "c1", 10.0, b'{"Plugin":"cloud","Properties":null}')])
        assert sum(s for _, _, s in meter.unsent()) == 10.0  # failed: still to write
        meter.observe({"c1": 1}, [], NOON + 15)
        await meter.write(store)
        assert recording.batches[-1] is first  # the same write again, not one with more in it
        await meter.write(store)
        second = recording.batches[-1]
        assert (second.writer, second.seq, [r.seconds for r in second.rows]) == (
            first.writer, 2, [5.0])
        assert list(meter.unsent()) == []
        await meter.write(store, force=True)  # nothing counted: nothing written
        assert len(recording.batches) == 3

    asyncio.run(scenario())


def test_what_is_not_yet_written_is_added_to_what_is_stored() -> None:
    meter = UsageMeter("g")
    both: dict[str | None, int] = {"c1": 1, "c2": 1}
    meter.observe(both, [], NOON)
    meter.observe(both, [], NOON + 30)
    stored = [UsageRecord(group="g", config="c1", plugin="cloud", seconds=100.0,
                          first="2024-10-01", last="2024-10-03"),
              UsageRecord(group="old", config="c0", seconds=7.0, first="2024-10-01",
                          last="2024-10-01")]
    merged = with_unsent(stored, [meter], 0)
    assert [(r.group, r.config, r.plugin, r.seconds, r.first, r.last) for r in merged] == [
        ("g", "c1", "cloud", 130.0, "2024-10-01", "2024-10-04"),
        ("g", "c2", "", 30.0, "2024-10-04", "2024-10-04"),
        ("old", "c0", "", 7.0, "2024-10-01", "2024-10-01")]
    assert with_unsent([], [meter], 20_001) == []  # counted before the day asked for


def test_the_counter_sums_each_group_and_config_of_the_meters() -> None:
    collector = UsageCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    for group in ("web", "web", "db"):  # two plugins of one process may watch one group
        meter = UsageMeter(group)
        ran(meter, 2.5)
        collector.meters.add(meter)
    text = generate_latest(registry).decode()
    assert "# TYPE infrakit_group_member_seconds_total counter" in text
    assert 'infrakit_group_member_seconds_total{config="c1",group="db"} 2.5' in text
    assert 'infrakit_group_member_seconds_total{config="c1",group="web"} 5.0' in text


# -- in a group plugin, over plugin objects --------------------------------------------------


class Counting(SQLiteStore):
    """Counts the usage writes."""

    writes = 0

    def add_usage(self, group: str, batch: UsageBatch) -> None:
        Counting.writes += 1
        super().add_usage(group, batch)


def test_a_group_counts_its_members_time_writes_it_on_stop_and_exports_it(
        tmp_path: Path) -> None:
    async def scenario(plugin: GroupPlugin, cloud: Cloud) -> None:
        await plugin.commit_group(spec(2), False)

        async def counted() -> bool:
            return sum(r.seconds for r in await plugin.usage("web", None)) >= 0.5

        await until(counted)
        [record] = await plugin.usage("", None)
        assert (record.group, record.plugin) == ("web", "cloud")
        assert plugin.store.usage("web") == []  # within WRITE_EVERY: not written yet
        sha = record.config
        text = generate_latest(REGISTRY).decode()
        assert f'infrakit_group_member_seconds_total{{config="{sha}",group="web"}}' in text

    run(tmp_path, scenario)
    store = SQLiteStore(tmp_path / "groups.db")  # written when the plugin stopped
    [kept] = store.usage("web")
    assert kept.seconds >= 0.5 and kept.plugin == "cloud"
    assert 'group="web"' not in generate_latest(REGISTRY).decode()  # no longer watched


def test_passes_write_no_usage_until_write_every_and_then_one_write_a_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        cloud = Cloud()
        from tests.test_group_inprocess import Flavor, Lookup

        Counting.writes = 0
        plugin = GroupPlugin(Counting(tmp_path / "groups.db"), Lookup(cloud, Flavor()), 0.02)
        await plugin.start()
        try:
            await plugin.commit_group(spec(3), False)
            status = await plugin.describe_status("web")
            await until(lambda: _passed(plugin, status.passes + 10))
            assert Counting.writes == 0
            monkeypatch.setattr(usage_module, "WRITE_EVERY", 0.0)
            start = (await plugin.describe_status("web")).passes
            await until(lambda: _passed(plugin, start + 5))
            writes = Counting.writes
            passes = (await plugin.describe_status("web")).passes - start
            assert 1 <= writes <= passes + 1
        finally:
            await plugin.stop()

    asyncio.run(main())


async def _passed(plugin: GroupPlugin, passes: int) -> bool:
    return (await plugin.describe_status("web")).passes >= passes


class Lingering(SQLiteStore):
    """Applies a usage write, then waits for ``go`` before it answers."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.applied, self.go = threading.Event(), threading.Event()

    def add_usage(self, group: str, batch: UsageBatch) -> None:
        super().add_usage(group, batch)
        self.applied.set()
        self.go.wait(10)


def test_a_reader_sees_a_write_under_way_once_in_the_store_or_in_the_meter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        store = Lingering(tmp_path / "groups.db")
        meter = UsageMeter("g")
        ran(meter, 10, start=day_of(time.time()) * DAY)  # a day the store keeps
        monkeypatch.setattr(usage_module, "WRITE_EVERY", 0.0)
        writing = asyncio.create_task(meter.write(store))
        await asyncio.to_thread(store.applied.wait, 10)  # in the store, not yet answered
        reading = asyncio.create_task(usage_of(store, "g", 0, [meter]))
        await asyncio.sleep(0)
        store.go.set()
        await writing
        assert [r.seconds for r in await reading] == [10.0]

    asyncio.run(scenario())
