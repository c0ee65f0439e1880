"""The loop of a manager sharing groups: it registers under its lease, then every round
reads who is alive and who leads what, claims the groups that prefer it and that nobody
leads, and hands over, a few per round, those it leads that prefer another manager. A
manager whose lease ends stops every controller and registers again. (Why rendezvous
hashing: :mod:`infrakit.manager.shards`; how leading a group is fenced:
:mod:`infrakit.manager.holdings`; what the manager serves: :mod:`infrakit.manager.shared`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from infrakit.manager.holdings import Holdings
from infrakit.manager.leader_info import LeaderInfo
from infrakit.manager.shards import Snapshot, plan_round, preferred, read_snapshot
from infrakit.manager.terms import Terms
from infrakit.plugins.group.plugin import GroupPlugin, Watcher
from infrakit.rpc.lookup import SocketPlugins
from infrakit.spi.errors import PluginError
from infrakit.spi.event import Publish
from infrakit.store.etcd import EtcdStore

log = logging.getLogger("infrakit.manager")
T = TypeVar("T")

MOVES_PER_ROUND = 2
"""Groups a manager hands over per round at most, when one came back or joined (or a
twentieth of those it leads, if that is more): its share arrives over a few rounds, never
all at once; and a manager that started first, and so led every group, hands most of them
over within seconds of the others' start."""


class Sharing:
    """One manager's part of the groups, kept up to date with etcd round by round."""

    def __init__(self, store: EtcdStore, holdings: Holdings, poll: float, me: LeaderInfo,
                 watcher: Watcher | None = None) -> None:
        """``me`` is what this manager records of itself; ``watcher`` watches the groups
        it leads (their alerts)."""
        self.store = store
        self.holdings = holdings
        store.group_fence = holdings.write_fence
        self.poll = poll
        self.me = me
        self.watcher = watcher
        ttl = holdings.lease.ttl
        self.interval = min(0.25, ttl / 8)
        """Seconds between two rounds."""
        self.patience = 4.0 * ttl
        """Seconds a group may go unled before any manager, not only its preferred one,
        claims it: long enough that a preferred manager that is only slow (a loaded
        machine) gets it, rather than the group going back and forth."""
        self.plugin: GroupPlugin | None = None
        """The group plugin running the groups this manager leads, while it is registered."""
        self.publish: Publish | None = None
        self.on_round: Callable[[Snapshot], Awaitable[None]] | None = None
        """Called after each round, with what etcd said."""
        self.committing: set[str] = set()
        """Groups being committed here: one that is new has no spec yet, and stays led."""
        self._terms = Terms()
        self._locks: dict[str, asyncio.Lock] = {}
        self._said = ""
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="sharing")

    @property
    def term(self) -> int:
        """The revision of this manager's registration while it runs groups; 0 before."""
        return self.holdings.lease.term if self.plugin is not None else 0

    def _lock(self, gid: str) -> asyncio.Lock:
        return self._locks.setdefault(gid, asyncio.Lock())

    async def start(self) -> None:
        self._terms.start(self.holdings.lease, self._serve_terms, "sharing")

    async def stop(self) -> None:
        await self._terms.stop()
        self._threads.shutdown(wait=False)

    async def _serve_terms(self) -> None:
        """Register, lead groups until the lease ends, and again, until the manager stops."""
        while not self._terms.stopping.is_set():
            if not await asyncio.to_thread(self.holdings.lease.acquire, self.me,
                                           self._terms.stopping):
                return
            self._terms.begin()
            plugin = GroupPlugin(self.store, SocketPlugins(), poll=self.poll,
                                 watcher=self.watcher, group_fence=self.holdings.fence)
            if self.publish is not None:
                plugin.views.publish_on(self.publish)
            await plugin.start(resume=False)
            self.plugin = plugin
            log.info("sharing the groups as %s (registered at revision %d)",
                     self.holdings.name, self.holdings.lease.term)
            await self._rounds(plugin)
            self.plugin = None
            # the passes under way end (after a lost lease their fences fail already)
            await plugin.stop(wait=self.holdings.lease.ttl)
            self.holdings.forget_all()
            await asyncio.to_thread(self.holdings.lease.resign)  # a clean stop: at once

    async def _rounds(self, plugin: GroupPlugin) -> None:
        unowned: dict[str, float] = {}
        while not self._terms.lost.is_set():
            taken = time.monotonic()
            try:
                snap = await self._io(read_snapshot, self.store.client, self.store.prefix)
            except PluginError as exc:
                self._say(f"cannot read who leads which group: {exc}", logging.WARNING)
            else:
                await self._round(plugin, snap, taken, unowned)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._terms.lost.wait(), self.interval)

    async def _round(self, plugin: GroupPlugin, snap: Snapshot, taken: float,
                     unowned: dict[str, float]) -> None:
        if snap.single_leader:
            self._say("not leading any group: a manager without --share-groups leads every "
                      f"group under {self.store.prefix}; start every manager of it with "
                      "--share-groups, or none", logging.WARNING)
            return
        me = self.holdings.name
        for gid, revision in list(self.holdings.held.items()):
            owner = snap.owners.get(gid)
            mine = owner is not None and owner.manager == me and owner.revision == revision
            if not mine and self.holdings.claimed_at.get(gid, taken) < taken:
                log.warning("group %s: another manager leads it now", gid)
                await self._let_go(plugin, gid, "lost")
        plan = plan_round(me, snap, unowned, time.monotonic(), self.patience,
                          max(MOVES_PER_ROUND, len(self.holdings.held) // 20))
        for gid in plan.hand_over:
            log.info("group %s: handing it over to %s, whom it prefers", gid,
                     preferred(gid, snap.managers))
        await asyncio.gather(*(self._let_go(plugin, gid, "drop") for gid in plan.drop),
                             *(self._let_go(plugin, gid, "hand over")
                               for gid in plan.hand_over))
        await self.take(plugin, *plan.claim)
        if self.on_round is not None:
            await self.on_round(snap)

    async def take(self, plugin: GroupPlugin, *gids: str) -> None:
        """Claim those of ``gids`` that nobody leads (in one transaction per 100: a dead
        manager's many at once), and resume each from the store."""
        wanted = [g for g in gids if g not in self.holdings.held]
        try:
            won = await self._io(self.holdings.claim, *wanted) if wanted else []
            specs = await self._io(self._specs, won) if won else {}
        except PluginError as exc:
            log.warning("cannot take over groups %s: %s", ", ".join(wanted), exc)
            return
        for gid in won:
            async with self._lock(gid):
                if gid in self.holdings.held and gid not in plugin.controllers \
                        and (raw := specs.get(gid)) is not None:
                    await plugin.resume(gid, raw)
            log.info("group %s: leading it (revision %d)", gid, self.holdings.held.get(gid, 0))

    def _specs(self, gids: list[str]) -> dict[str, bytes]:
        """The stored specs of ``gids``: one read each, or of all when they are many."""
        if len(gids) > 3:
            return self.store.load_groups()
        found = {g: self.store.client.get_value(f"{self.store.prefix}spec/{g}")[0]
                 for g in gids}
        return {g: raw for g, raw in found.items() if raw is not None}

    async def _io(self, call: Callable[..., T], *args: Any) -> T:
        """``call`` in this manager's own threads for etcd: rounds and claims never wait
        behind the controllers' store calls in the default pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(call, *args))

    async def _let_go(self, plugin: GroupPlugin, gid: str, why: str) -> None:
        """Stop ``gid``'s controller after its pass, then give its owner key up (unless it
        was ``lost``: then it is another's already)."""
        async with self._lock(gid):
            if gid not in self.holdings.held:
                return
            if why == "drop" and (gid in plugin.controllers or gid in self.committing):
                return  # committed since the snapshot: it stays
            await plugin.release(gid, wait=self.holdings.lease.ttl)
            try:
                if why == "lost":
                    self.holdings.held.pop(gid, None)
                else:
                    await self._io(self.holdings.give_up, gid)
            except PluginError as exc:  # the lease will take the key with it
                log.warning("group %s: cannot give it up in etcd: %s", gid, exc)

    def _say(self, news: str, level: int) -> None:
        if news != self._said:
            log.log(level, "%s", news)
        self._said = news
