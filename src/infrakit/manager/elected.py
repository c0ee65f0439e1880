"""Group/0.1.0 as a manager on etcd serves it, leading or not.

Every manager serves from the moment it starts, so a client may talk to any of them. The
leader answers with its own group plugin, whose controllers run only while it leads. A
follower answers ``InspectGroups`` from the store itself, and forwards everything else
(the writes, and the live views that need the leader's health verdicts) to the leader: to
the socket the leader recorded in the leader key when it runs on the same machine, else to
its TCP listener, over TLS with the managers' token. While no manager leads, a follower
waits for one, within a bound, instead of hanging. A manager whose term ends stops its controllers
and campaigns again, so it leads again after an etcd outage without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from infrakit.manager.etcd_leader import EtcdLeadership
from infrakit.manager.forward import Forwarder
from infrakit.manager.leader_info import LeaderInfo
from infrakit.manager.terms import Terms
from infrakit.plugins.group.plugin import GroupPlugin, Watcher
from infrakit.plugins.group.views import MetadataView
from infrakit.rpc.client import Remote
from infrakit.rpc.lookup import SocketPlugins
from infrakit.spi.errors import PluginError
from infrakit.spi.event import Publish
from infrakit.spi.group import (
    GroupDescription,
    GroupEvent,
    GroupPlan,
    GroupSpec,
    GroupStatus,
    GroupSummary,
    UsageRecord,
)
from infrakit.spi.methods import nonblocking
from infrakit.store.etcd import EtcdStore

log = logging.getLogger("infrakit.manager")

_decode_spec = msgspec.json.Decoder(GroupSpec).decode


class ElectedGroup:
    """The object a manager on etcd serves as its group plugin."""

    def __init__(self, store: EtcdStore, election: EtcdLeadership, poll: float,
                 me: LeaderInfo, remote: Callable[[str], Remote | None],
                 watcher: Watcher | None = None) -> None:
        """``me`` is what this manager records of itself when it leads; ``remote`` says
        how to reach another manager's TCP listener, if this one may; ``watcher`` watches
        the groups during each term this manager leads (its alerts)."""
        self.store = store
        self.election = election
        self.poll = poll
        self.me = me
        self.remote = remote
        self.watcher = watcher
        self.wait_for_leader = election.ttl * 2 + 1.0
        """Seconds a follower waits for a leader before it answers that there is none:
        long enough for an election after a leader died."""
        self._leading: GroupPlugin | None = None
        self._terms = Terms()
        self._forwarder = Forwarder(remote)
        """The connection to the leader that calls are forwarded to (kept alive)."""
        self._publish: Publish | None = None
        self._metadata = MetadataView(self)

    @property
    def term(self) -> int:
        """The term this manager leads in (etcd's revision of its election); 0 while it
        follows."""
        return self.election.term if self._leading is not None else 0

    # -- the server's hooks ---------------------------------------------------------------

    async def start(self) -> None:
        self._terms.start(self.election, self._serve_terms, "leadership")

    async def stop(self) -> None:
        await self._terms.stop()
        await self._forwarder.close()

    async def _serve_terms(self) -> None:
        """Campaign, lead until the term ends, and again, until the manager stops."""
        while not self._terms.stopping.is_set():
            if not await asyncio.to_thread(self.election.acquire, self.me, self._terms.stopping):
                return
            self._terms.begin()
            self.store.client.fence_on(self.election.key, self.election.term)
            plugin = GroupPlugin(self.store, SocketPlugins(), poll=self.poll,
                                 fence=self.election.fence, watcher=self.watcher)
            if self._publish is not None:
                plugin.views.publish_on(self._publish)
            try:
                await plugin.start()
            except PluginError as exc:  # etcd failed us between the election and now
                log.warning("cannot resume the groups: %s", exc)
                self._terms.lost.set()
            else:
                self._leading = plugin
                log.info("leading (term %d); store %s", self.election.term, self.me.store)
            await self._terms.lost.wait()
            self._leading = None
            # its controllers are fenced already: this only waits for their passes to end
            await plugin.stop(wait=self.election.ttl)
            await asyncio.to_thread(self.election.resign)  # if the term is not over yet

    # -- Group/0.1.0 ----------------------------------------------------------------------

    async def commit_group(self, spec: GroupSpec, pretend: bool) -> str:
        return str(await self._lead_or_forward("commit_group", spec, pretend))

    async def free_group(self, id: str) -> None:
        await self._lead_or_forward("free_group", id)

    async def describe_group(self, id: str) -> GroupDescription:
        description: GroupDescription = await self._lead_or_forward("describe_group", id)
        return description

    async def destroy_group(self, id: str) -> None:
        await self._lead_or_forward("destroy_group", id)

    async def inspect_groups(self) -> list[GroupSpec]:
        """What is committed: the store says, whoever leads."""
        if self._leading is not None:
            return await self._leading.inspect_groups()
        return await asyncio.to_thread(stored_specs, self.store)

    async def describe_status(self, id: str) -> GroupStatus:
        status: GroupStatus = await self._lead_or_forward("describe_status", id)
        return status

    async def destroy_instances(self, id: str, instances: list[str], shrink: bool) -> str:
        return str(await self._lead_or_forward("destroy_instances", id, instances, shrink))

    async def pause_update(self, id: str) -> str:
        return str(await self._lead_or_forward("pause_update", id))

    async def resume_update(self, id: str) -> str:
        return str(await self._lead_or_forward("resume_update", id))

    async def cancel_update(self, id: str) -> str:
        return str(await self._lead_or_forward("cancel_update", id))

    async def events(self, id: str, since: float | None, after: int | None,
                     limit: int) -> list[GroupEvent]:
        events: list[GroupEvent] = await self._lead_or_forward("events", id, since, after,
                                                               limit)
        return events

    async def plan_group(self, spec: GroupSpec) -> GroupPlan:
        plan: GroupPlan = await self._lead_or_forward("plan_group", spec)
        return plan

    # -- Event/0.1.0 and Metadata/0.1.0 ---------------------------------------------------

    def publish_on(self, publish: Publish) -> None:
        """The events are published where they happen: by the leader's group plugin."""
        self._publish = publish

    @nonblocking
    def event_topics(self, topic: list[str]) -> list[str] | None:
        leading = self._leading
        if leading is not None:
            return leading.views.event_topics(topic)
        return [] if not topic else None  # a follower publishes nothing

    async def metadata(self, path: list[str]) -> Any:
        return await self._metadata.metadata(path)

    async def summaries(self) -> list[GroupSummary]:
        """From the leader: what its controllers' last passes met."""
        summaries: list[GroupSummary] = await self._lead_or_forward("summaries")
        return summaries

    async def previous_spec(self, id: str) -> GroupSpec | None:
        """From the leader, as ``cancel-update`` would roll back to."""
        spec: GroupSpec | None = await self._lead_or_forward("previous_spec", id)
        return spec

    async def usage(self, id: str, since: float | None) -> list[UsageRecord]:
        """From the leader: what its controllers have counted and not yet written."""
        usage: list[UsageRecord] = await self._lead_or_forward("usage", id, since)
        return usage

    # -- following ------------------------------------------------------------------------

    async def _lead_or_forward(self, attr: str, *args: Any) -> Any:
        """Answer as the leader, or forward the call to the leader and relay its answer."""
        deadline = time.monotonic() + self.wait_for_leader
        while True:
            leading = self._leading
            if leading is not None:
                try:
                    return await getattr(leading, attr)(*args)
                except PluginError:
                    if self.election.term:
                        raise
                    # the term ended under the call, and the fence let nothing through:
                    # the call goes to whoever leads next
                    continue
            leader = await self._leader()
            if leader is not None and not leader.is_me():
                await self._forwarder.keep_only([leader])  # a new leader: the old one went
                return await self._forwarder.call(leader, attr, args)
            if time.monotonic() >= deadline:
                raise PluginError(f"no manager leads at the moment (waited "
                                  f"{self.wait_for_leader:g}s); try again")
            await asyncio.sleep(0.1)  # an election is under way, or this one is starting

    async def _leader(self) -> LeaderInfo | None:
        try:
            return await asyncio.to_thread(self.election.leader)
        except PluginError as exc:
            log.warning("cannot tell who leads: %s", exc)
            return None


def stored_specs(store: EtcdStore) -> list[GroupSpec]:
    """Every committed spec, as the store keeps them, by group ID."""
    groups = store.load_groups()
    specs = []
    for gid in sorted(groups):
        try:
            specs.append(_decode_spec(groups[gid]))
        except msgspec.DecodeError as exc:  # one damaged spec hides no other group
            log.error("group %s: its spec stored in %s cannot be read: %s", gid, store, exc)
    return specs
