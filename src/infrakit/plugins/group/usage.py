"""Member time, for usage and chargeback: how long each group's members existed, per
config hash, counted by the group's controller and kept in its store by the (UTC) day.

What counts: a member counts from when the group's controller first sees it (the pass
whose health check first meets it) to the last pass that sees it. Each pass adds, to each
config hash (the ``infrakit.config_sha`` tag the members carry as this pass describes
them), the time since the pass before for every member carrying it, and for a member first
seen since then, the time since it was first seen. So each member may count up to one poll
interval less than it lived, at its end (and at its start, the time it took to be
described). The pass does no work per member for it: the plan sorts the members by config
hash already, and the health judge knows which are new. The time no controller of the
group runs is not counted: a controller begins with no pass before its first (it cannot
know which members lived through the gap), so a restart, or a new leader, never counts a
second time what its predecessor counted. A long gap between two passes of the same
controller (the instance plugin did not answer) counts for the members seen at both ends.

What is kept: the controller adds up the seconds in memory and writes them in one store
write at most every :data:`WRITE_EVERY` seconds, and when it stops (a stop, a free, a
destroy, a lost leadership). A ``kill -9`` loses what was not yet written: at most
``WRITE_EVERY`` seconds of each member. A write names itself (:class:`UsageBatch`), so a
retry of one that failed is never added twice.

The same seconds, counted since this process began watching each group, are the counter
``infrakit_group_member_seconds_total{group,config}`` (Prometheus' ``increase`` and
``rate`` read through the resets of a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import msgspec
import msgspec.structs

from infrakit.plugins.group.plan import CONFIG_TAG
from infrakit.plugins.group.storage import (
    DAY,
    GroupStore,
    UsageBatch,
    UsageRow,
    day_name,
    day_of,
    usage_record,
)
from infrakit.spi.group import UsageRecord
from infrakit.spi.types import Description

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("infrakit.group")

WRITE_EVERY = 15.0
"""Seconds between two writes of a group's usage to its store, at most one per pass."""
NO_CONFIG = "none"
"""The config of a member that carries no config hash."""


def spread(start: float, end: float) -> list[tuple[int, float]]:
    """The seconds from ``start`` to ``end`` on each UTC day they touch."""
    days = []
    while start < end:
        day = day_of(start)
        cut = min(end, (day + 1) * DAY)
        days.append((day, cut - start))
        start = cut
    return days


class UsageMeter:
    """One group's member time: counted by its controller's passes, written to its store."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.totals: dict[str, float] = {}
        """Member-seconds per config since this meter began: the Prometheus counter."""
        self._writer = secrets.token_hex(8)
        self._seq = 0
        self._last: float | None = None
        """When the last pass saw the members; None before the first pass."""
        self._unsent: dict[tuple[int, str], float] = {}
        """Member-seconds per (day, config) not yet written."""
        self._sending: UsageBatch | None = None
        """The write under way, or that failed: retried as it is, so that the store can
        tell it from a new one."""
        self._written = time.monotonic()
        self._instances: dict[str, bytes] = {}
        self._writing = asyncio.Lock()
        """Held while a write is under way, so that a reader of the store and of the
        meter sees each write in one of the two, never both or neither."""

    def know(self, config: str, instance: bytes) -> None:
        """The Instance block (JSON) of ``config``: written beside its usage, for prices."""
        self._instances[config] = instance

    def open(self) -> None:
        """Its controller runs: export its counts."""
        COLLECTOR.meters.add(self)

    async def close(self, store: GroupStore) -> None:
        """Its controller stopped: write what is counted, and export it no longer."""
        COLLECTOR.meters.discard(self)
        await self.write(store, force=True)

    def instance_of(self, config: str) -> bytes | None:
        return self._instances.get(config)

    def observe(self, configs: Mapping[str | None, int],
                new: list[tuple[Description, float]], now: float) -> None:
        """A pass saw ``configs`` (how many members carry each config hash) at ``now``,
        of which ``new`` were first seen by this controller, and when: count each member
        from the pass before, or from when it was first seen if that is later. (No work
        per member, but per new one: the pass sorted the members by config already.)"""
        last, self._last = self._last, now
        if last is None or now <= last:
            return
        fresh: Counter[tuple[str, float]] = Counter(
            ((desc.tags or {}).get(CONFIG_TAG, NO_CONFIG), since) for desc, since in new
            if since > last)
        whole = Counter({NO_CONFIG if c is None else c: n for c, n in configs.items() if n})
        for (config, since), count in fresh.items():
            whole[config] -= count
            self._add(config, count, min(since, now), now)
        for config, count in whole.items():
            if count > 0:
                self._add(config, count, last, now)

    def _add(self, config: str, count: int, start: float, end: float) -> None:
        for day, seconds in spread(start, end):
            key = (day, config)
            self._unsent[key] = self._unsent.get(key, 0.0) + count * seconds
        self.totals[config] = self.totals.get(config, 0.0) + count * (end - start)

    def unsent(self) -> Iterator[tuple[int, str, float]]:
        """What is counted and not yet in the store: (day, config, seconds)."""
        if self._sending is not None:
            yield from ((r.day, r.config, r.seconds) for r in self._sending.rows)
        yield from ((day, config, s) for (day, config), s in self._unsent.items())

    async def write(self, store: GroupStore, force: bool = False) -> None:
        """Write what is counted, if :data:`WRITE_EVERY` seconds have passed since the
        last write (or ``force``). A store that fails keeps it here, said in the log, for
        the next write: the group's work does not wait on its usage."""
        now = time.monotonic()
        if not force and now - self._written < WRITE_EVERY:
            return
        if self._sending is None:
            if not self._unsent:
                return
            self._seq += 1
            self._sending = UsageBatch(writer=self._writer, seq=self._seq, rows=[
                UsageRow(day=day, config=config, seconds=seconds,
                         instance=self._instances.get(config))
                for (day, config), seconds in self._unsent.items()])
            self._unsent = {}
        self._written = now
        async with self._writing:
            try:
                await asyncio.to_thread(store.add_usage, self.group, self._sending)
            except Exception as exc:  # the store's own errors, whichever store
                log.warning("group %s: usage not written yet (kept to write again): %s",
                            self.group, exc)
                return
            self._sending = None


async def usage_of(store: GroupStore, group: str | None, since_day: int,
                   meters: list[UsageMeter]) -> list[UsageRecord]:
    """What ``store`` keeps of ``group`` (every group's when None) on the days from
    ``since_day``, with what ``meters`` counted since their last write. No meter writes
    meanwhile, so that no write is counted twice or missed. (A write that failed counts as
    not written until its retry; where etcd had applied it after all, an answer given
    before the retry counts it twice. The store itself adds it once.)"""
    async with contextlib.AsyncExitStack() as holding:
        for meter in meters:
            await holding.enter_async_context(meter._writing)
        stored = await asyncio.to_thread(store.usage, group, since_day)
        return with_unsent(stored, meters, since_day)


def with_unsent(stored: list[UsageRecord], meters: Iterable[UsageMeter],
                since_day: int) -> list[UsageRecord]:
    """``stored`` (summed by group and config) with what ``meters`` have not yet
    written, on the days from ``since_day``, in the same order."""
    records = {(r.group, r.config): r for r in stored}
    for meter in meters:
        for day, config, seconds in meter.unsent():
            if day < since_day:
                continue
            record = records.get((meter.group, config))
            if record is None or not record.plugin:
                known = usage_record(meter.group, config, 0.0, day, day,
                                     meter.instance_of(config))
                record = records[(meter.group, config)] = msgspec.structs.replace(
                    record, plugin=known.plugin, properties=known.properties) if record \
                    else known
            record.seconds += seconds
            record.first = min(record.first, day_name(day))
            record.last = max(record.last, day_name(day))
    return [records[key] for key in sorted(records)]


class UsageCollector:
    """``infrakit_group_member_seconds_total{group,config}`` for Prometheus' registry, from
    the meters of the groups this process watches."""

    NAME = "infrakit_group_member_seconds"
    HELP = ("Seconds the group's members existed, by config hash (usage), since this "
            "process began watching the group")

    def __init__(self) -> None:
        self.meters: set[UsageMeter] = set()

    def describe(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily(self.NAME, self.HELP, labels=["group", "config"])

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.NAME, self.HELP, labels=["group", "config"])
        sums: dict[tuple[str, str], float] = {}
        for meter in list(self.meters):  # copies: the event loop may change them meanwhile
            for config, seconds in dict(meter.totals).items():
                key = (meter.group, config)
                sums[key] = sums.get(key, 0.0) + seconds
        for (group, config), seconds in sorted(sums.items()):
            family.add_metric([group, config], seconds)
        yield family


COLLECTOR = UsageCollector()
"""The one collector of this process, whichever group plugins it runs."""
_registered = False


def register_collector() -> None:
    """Put :data:`COLLECTOR` on ``prometheus_client``'s default registry, once (the
    ``/metrics`` page of the process serves that registry)."""
    global _registered
    if not _registered:
        from prometheus_client import REGISTRY

        REGISTRY.register(COLLECTOR)
        _registered = True

