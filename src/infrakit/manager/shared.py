"""Group/0.1.0 as a manager serves it when managers on etcd share the groups
(``--share-groups``): each group is led by one of them, and capacity grows with managers.

Which groups a manager leads is worked out round by round (:mod:`infrakit.manager.sharing`);
a manager that dies loses its lease after the TTL, with every group it led, and the
survivors claim them in their next round.

A call about a group goes to the manager leading it: answered here if this one does, else
forwarded; a group nobody leads yet (new, or its manager just died) is claimed by the
manager it prefers, which the call is forwarded to. ``InspectGroups`` is answered from
the store. The other duties are each manager's for its own groups: it publishes their
events and sends their alerts (Alertmanager merges the same alert sent by two managers);
``Group.Usage`` of every group sums the store and this manager's unwritten counts (the
others' are in the store after their next write, within 15 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from infrakit.manager.elected import stored_specs
from infrakit.manager.forward import Forwarder
from infrakit.manager.leader_info import LeaderInfo
from infrakit.manager.shards import Snapshot, live_managers, preferred
from infrakit.manager.sharing import Sharing
from infrakit.plugins.group.plugin import GroupPlugin
from infrakit.plugins.group.views import MetadataView
from infrakit.rpc.client import Remote
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.event import Publish
from infrakit.spi.group import GroupDescription, GroupEvent, GroupSpec, GroupStatus, UsageRecord
from infrakit.spi.methods import nonblocking

log = logging.getLogger("infrakit.manager")


class SharedGroups:
    """The object a manager sharing groups serves as its group plugin."""

    def __init__(self, sharing: Sharing, remote: Callable[[str], Remote | None]) -> None:
        """``remote`` says how to reach another manager's TCP listener, if this one may."""
        self.sharing = sharing
        self.store = sharing.store
        self.holdings = sharing.holdings
        self.wait_for_leader = self.holdings.lease.ttl * 2 + 1.0
        """Seconds a call waits for its group to have a leader: long enough for a dead
        manager's lease to expire and its groups to be claimed."""
        self._forwarder = Forwarder(remote)
        self._metadata = MetadataView(self)
        sharing.on_round = self._forget_gone

    @property
    def term(self) -> int:
        return self.sharing.term

    async def _forget_gone(self, snap: Snapshot) -> None:
        """Close the connections to managers that are gone (after each round)."""
        await self._forwarder.keep_only(list(snap.managers.values()))

    async def start(self) -> None:
        await self.sharing.start()

    async def stop(self) -> None:
        await self.sharing.stop()
        await self._forwarder.close()

    # -- Group/0.1.0 ----------------------------------------------------------------------

    async def commit_group(self, spec: GroupSpec, pretend: bool) -> str:
        return str(await self._route(spec.id, "commit_group", spec, pretend))

    async def free_group(self, id: str) -> None:
        await self._route(id, "free_group", id)

    async def describe_group(self, id: str) -> GroupDescription:
        description: GroupDescription = await self._route(id, "describe_group", id)
        return description

    async def destroy_group(self, id: str) -> None:
        await self._route(id, "destroy_group", id)

    async def inspect_groups(self) -> list[GroupSpec]:
        """What is committed: the store says, whoever leads each group."""
        return await asyncio.to_thread(stored_specs, self.store)

    async def describe_status(self, id: str) -> GroupStatus:
        status: GroupStatus = await self._route(id, "describe_status", id)
        return status

    async def destroy_instances(self, id: str, instances: list[str], shrink: bool) -> str:
        return str(await self._route(id, "destroy_instances", id, instances, shrink))

    async def pause_update(self, id: str) -> str:
        return str(await self._route(id, "pause_update", id))

    async def resume_update(self, id: str) -> str:
        return str(await self._route(id, "resume_update", id))

    async def cancel_update(self, id: str) -> str:
        return str(await self._route(id, "cancel_update", id))

    async def events(self, id: str, since: float | None, after: int | None,
                     limit: int) -> list[GroupEvent]:
        events: list[GroupEvent] = await self._route(id, "events", id, since, after, limit)
        return events

    async def usage(self, id: str, since: float | None) -> list[UsageRecord]:
        """One group's from the manager leading it; every group's (``id`` empty) from the
        store and this manager's own unwritten counts."""
        if id:
            usage: list[UsageRecord] = await self._route(id, "usage", id, since)
            return usage
        plugin = self.sharing.plugin
        if plugin is None:
            raise PluginError("this manager is not registered yet; try again")
        return await plugin.usage(id, since)

    # -- Event/0.1.0 and Metadata/0.1.0 ---------------------------------------------------

    def publish_on(self, publish: Publish) -> None:
        """Events are published where they happen: by the manager leading their group."""
        self.sharing.publish = publish

    @nonblocking
    def event_topics(self, topic: list[str]) -> list[str] | None:
        plugin = self.sharing.plugin
        if plugin is not None:
            return plugin.views.event_topics(topic)
        return [] if not topic else None

    async def metadata(self, path: list[str]) -> Any:
        return await self._metadata.metadata(path)

    # -- routing --------------------------------------------------------------------------

    async def _route(self, gid: str, attr: str, *args: Any) -> Any:
        """Answer here if this manager leads ``gid``, else forward to the one that does,
        or that should; wait, within a bound, while the group changes hands."""
        deadline = time.monotonic() + self.wait_for_leader
        while True:
            plugin = self.sharing.plugin
            if plugin is not None and gid in self.holdings.held:
                try:
                    return await self._here(plugin, gid, attr, args)
                except PluginError:
                    if gid in self.holdings.held:
                        raise
                    continue  # it changed hands under the call, which did nothing
            target, mine = await asyncio.to_thread(self._whom, gid, attr)
            if target is not None:
                return await self._forwarder.call(target, attr, args,
                                                  f"the manager leading group {gid!r}")
            if mine and plugin is not None:
                await self.sharing.take(plugin, gid)
                continue
            if time.monotonic() >= deadline:
                raise PluginError(f"no manager leads group {gid!r} at the moment (waited "
                                  f"{self.wait_for_leader:g}s); try again")
            await asyncio.sleep(0.05)

    async def _here(self, plugin: GroupPlugin, gid: str, attr: str, args: tuple[Any, ...]
                    ) -> Any:
        if attr != "commit_group":
            return await getattr(plugin, attr)(*args)
        self.sharing.committing.add(gid)
        try:
            return await plugin.commit_group(*args)
        finally:
            self.sharing.committing.discard(gid)

    def _whom(self, gid: str, attr: str) -> tuple[LeaderInfo | None, bool]:
        """The manager to forward a call about ``gid`` to: the one leading it, or, while
        none does, the one it prefers; or (None, True) when that is this one."""
        client, prefix = self.store.client, self.store.prefix
        owner, _ = client.get_value(self.holdings.owner_key(gid))
        managers = live_managers(client, prefix)
        if owner is None:
            if attr != "commit_group" and \
                    client.get_value(f"{prefix}spec/{gid}")[0] is None:
                raise NotFoundError(f"Group '{gid}' is not being watched")
            owner_name = preferred(gid, managers)
        else:
            owner_name = owner.decode()
        if owner_name == self.holdings.name:
            return None, owner is None
        return managers.get(owner_name or ""), False
