"""The default group plugin: Group/0.1.0 over durable specs and one controller per group.

It is a thin front: it keeps the committed specs in the store and one
:class:`~infrakit.plugins.group.controller.GroupController` per group, which does the rest.
It calls other plugins only through the lookup it is handed, so it runs the same over
sockets and, in tests, over plugin objects in the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Protocol

import msgspec

from infrakit.plugins.group.actuator import Fence
from infrakit.plugins.group.controller import STOP_WAIT, GroupController
from infrakit.plugins.group.metrics import COLLECTOR
from infrakit.plugins.group.plan import CONFIG_TAG, GROUP_TAG
from infrakit.plugins.group.reach import Reachability
from infrakit.plugins.group.report import adoption, commit_details, report
from infrakit.plugins.group.shielded import ToTheEnd
from infrakit.plugins.group.sizing import size_of, too_large
from infrakit.plugins.group.spec import GroupProperties, config_sha, parse_group, resized
from infrakit.plugins.group.storage import GroupStore, day_of
from infrakit.plugins.group.summary import summary_of
from infrakit.plugins.group.usage import register_collector, usage_of
from infrakit.plugins.group.views import GroupViews
from infrakit.spi.access import actor_name
from infrakit.spi.calls import PluginLookup
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.group import (
    GroupDescription,
    GroupEvent,
    GroupSpec,
    GroupStatus,
    GroupSummary,
    UsageRecord,
)
from infrakit.spi.types import Index, Spec

log = logging.getLogger("infrakit.group")

_decode_spec = msgspec.json.Decoder(GroupSpec).decode

PREPARE_WAIT = 10.0
"""Seconds a commit waits for the flavor to prepare a member's spec, to measure it."""


class Watcher(Protocol):
    """Something that watches the groups for as long as a group plugin runs them (a
    manager's alerts): started once every stored group is resumed, stopped before the
    controllers stop."""

    async def start(self, groups: GroupPlugin) -> None: ...

    async def stop(self) -> None: ...


class GroupPlugin:
    """Group/0.1.0: commit, describe, free, destroy and inspect groups.

    Committed specs live in ``store``, so a restart resumes every group; the server calls
    :meth:`start` before it accepts calls and :meth:`stop` after the last one.
    """

    def __init__(self, store: GroupStore, plugins: PluginLookup, poll: float,
                 fence: Fence | None = None, watcher: Watcher | None = None) -> None:
        self.store = store
        self.reach = Reachability(plugins)
        """Which plugins the groups' calls did not reach, and why."""
        self.plugins: PluginLookup = self.reach
        self.poll = poll
        self.fence = fence
        """Raises unless this process may act on providers (a manager's leadership)."""
        self.watcher = watcher
        self._specs: dict[str, GroupSpec] = {}
        self._controllers: dict[str, GroupController] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        """One per group: the verbs that change a group take turns, so that the spec a
        controller runs is always the one stored last, whatever the callers' timing."""
        self._unloaded: dict[str, str] = {}
        """Stored groups that could not be resumed, and why."""
        self._endings = ToTheEnd()
        """Destroys and frees under way: they run to their end even when their caller
        gives up."""
        self.views = GroupViews(self, lambda: list(self._specs))
        """Its events and state as the reference's tools read them."""

    def _lock(self, gid: str) -> asyncio.Lock:
        return self._locks.setdefault(gid, asyncio.Lock())

    @property
    def controllers(self) -> Mapping[str, GroupController]:
        """The controller of each group being watched, by group ID (read-only)."""
        return MappingProxyType(self._controllers)

    async def start(self) -> None:
        COLLECTOR.watched[id(self)] = self._controllers
        register_collector()
        for gid, raw in (await asyncio.to_thread(self.store.load_groups)).items():
            try:
                spec = _decode_spec(raw)
                props = parse_group(spec)
            except (msgspec.DecodeError, PluginError) as exc:  # the others resume
                self._unloaded[gid] = (f"its spec stored in {self.store} cannot be read or "
                                       f"is no longer valid, so it was not resumed: {exc}")
                log.error("group %s: %s", gid, self._unloaded[gid])
                continue
            destroying = await asyncio.to_thread(self.store.destroying, gid)
            self._watch(spec, props, destroying, resumed=True)
            await self._remember_previous(gid)
            log.info("group %s: %s", gid, "being destroyed: 'infrakit group destroy' "
                     "finishes it" if destroying else "resumed")
        if self.watcher is not None:
            await self.watcher.start(self)

    async def _remember_previous(self, gid: str) -> None:
        """The health check of the spec before the current one: members made from it
        during an update that a restart interrupted are judged by it still (and their
        usage is priced by its Instance block)."""
        raw = await asyncio.to_thread(self.store.previous_spec, gid)
        if raw is None:
            return
        with contextlib.suppress(PluginError, msgspec.DecodeError):
            old = parse_group(_decode_spec(raw))
            controller = self._controllers[gid]
            controller.health.remember(config_sha(old), old.flavor)
            controller.usage.know(config_sha(old), msgspec.json.encode(old.instance))

    async def stop(self, wait: float = STOP_WAIT) -> None:
        """Stop every controller once the pass it is in has ended (or after ``wait``), and
        let the destroys and frees under way end first."""
        if self.watcher is not None:
            await self.watcher.stop()
        if under_way := self._endings.under_way():
            await asyncio.wait(under_way, timeout=wait)
        await asyncio.gather(*(c.stop(wait) for c in self._controllers.values()))
        COLLECTOR.watched.pop(id(self), None)
        await self.plugins.close()

    def _watch(self, spec: GroupSpec, props: GroupProperties, destroying: bool = False,
               resumed: bool = False) -> None:
        self._specs[spec.id] = spec
        controller = self._controllers.get(spec.id)
        if controller is None:
            paused = self.store.paused(spec.id)
            controller = GroupController(spec.id, props, self.store, self.plugins, self.poll,
                                         paused, self.fence, resumed)
            controller.destroying = destroying
            controller.created = self.store.created(spec.id)
            controller.events.publish = self.views.published
            self._controllers[spec.id] = controller
            controller.start()
        else:
            controller.update(props)

    def _forget(self, gid: str) -> None:
        del self._controllers[gid], self._specs[gid]

    def _controller(self, gid: str) -> GroupController:
        controller = self._controllers.get(gid)
        if controller is None:
            why = self._unloaded.get(gid)
            raise NotFoundError(f"Group '{gid}' is not being watched" + (f": {why}" if why
                                                                         else ""))
        return controller

    async def _validate(self, props: GroupProperties) -> None:
        """The flavor's and the instance plugin's own Validate, in the reference's order."""
        await self.plugins.flavor(props.flavor.plugin).validate(props.flavor.properties,
                                                                props.allocation)
        await self.plugins.instance(props.instance.plugin).validate(props.instance.properties)

    async def commit_group(self, spec: GroupSpec, pretend: bool) -> str:
        async with self._lock(spec.id):
            return await self._commit(spec, pretend)

    async def _commit(self, spec: GroupSpec, pretend: bool, verb: str = "commit") -> str:
        props = parse_group(spec)
        controller = self._controllers.get(spec.id)
        if controller is not None and controller.destroying:
            raise PluginError(f"Group '{spec.id}' is being destroyed; run 'infrakit group "
                              f"destroy {spec.id}' to finish, then commit it anew")
        await self._validate(props)
        await _members_fit(self.plugins, spec.id, props)
        details = (await commit_details(controller, props) if controller is not None
                   else f"Managing {props.target()} instances"
                   + await adoption(self.plugins, spec.id, props))
        if not pretend:
            await asyncio.to_thread(self.store.save_group, spec.id, msgspec.json.encode(spec))
            self._unloaded.pop(spec.id, None)
            self._watch(spec, props)
            events = self._controllers[spec.id].events
            events.add("committed", details.splitlines()[0], verb=verb,
                       details={"changes": details})
            await events.flush()
        return details

    async def describe_group(self, id: str) -> GroupDescription:
        # as the reference answers: members without their properties
        members, _, decision = await self._controller(id).observe(judge=False)
        return GroupDescription(instances=[m.desc for m in members],
                                converged=decision.converged)

    async def describe_status(self, id: str) -> GroupStatus:
        return await report(self._controller(id))

    async def destroy_instances(self, id: str, instances: list[str], shrink: bool) -> str:
        async with self._lock(id):
            controller = self._controller(id)
            size = controller.props.allocation.size - len(set(instances))
            if shrink and controller.props.allocation.logical_ids:
                raise PluginError(f"Shrink: group '{id}' is allocated by LogicalIDs; commit a "
                                  "spec without the IDs to remove them")

            async def commit_smaller() -> None:
                await self._commit(resized(self._specs[id], size), False, "destroy-instances")

            await _destroy_members(controller, instances, commit_smaller if shrink else None)
        what = f"reducing the group size to {size}" if shrink else "to be replaced"
        return f"Destroyed {len(set(instances))} instances, {what}"

    async def pause_update(self, id: str) -> str:
        await _pause(self._controller(id), self.store, True, "pause-update")
        return f"Paused the rolling update of group '{id}'"

    async def resume_update(self, id: str) -> str:
        await _pause(self._controller(id), self.store, False, "resume-update")
        return f"Resumed the rolling update of group '{id}'"

    async def cancel_update(self, id: str) -> str:
        """Roll back: commit again the spec that was committed before the current one."""
        async with self._lock(id):
            self._controller(id)
            raw = await asyncio.to_thread(self.store.previous_spec, id)
            if raw is None:
                raise PluginError(f"Group '{id}' has no earlier spec to go back to")
            details = await self._commit(_decode_spec(raw), False, "cancel-update")
        if self._controller(id).rollout.paused:  # the rollback is not held back
            await _pause(self._controller(id), self.store, False, "cancel-update")
        return f"Rolled back to the previous spec: {details}"

    async def free_group(self, id: str) -> None:
        # the group's history goes with it: the log keeps who ended it
        log.info("group %s: freed at the request of %s", id, actor_name() or "the plugin")
        await self._endings.run("free", id, self._free)

    async def destroy_group(self, id: str) -> None:
        log.info("group %s: destroyed at the request of %s", id, actor_name() or "the plugin")
        await self._endings.run("destroy", id, self._destroy)

    async def _free(self, gid: str) -> None:
        async with self._lock(gid):
            await self._controller(gid).stop()
            self._forget(gid)
            await asyncio.to_thread(self.store.delete_group, gid)

    async def _destroy(self, gid: str) -> None:
        """Mark the group destroyed (durably: it never provisions again), stop its loop,
        then destroy every member; what is left is named, and destroying again retries."""
        async with self._lock(gid):
            controller = self._controller(gid)
            if not controller.destroying:
                await asyncio.to_thread(self.store.set_destroying, gid)
                controller.destroying = True
            await controller.stop()  # after the pass under way: its provisions answered
            again = f"the group provisions no more; run 'infrakit group destroy {gid}' again"
            try:
                left = await controller.actuator.destroy_all()
            except PluginError as exc:
                raise PluginError(f"Group '{gid}': cannot list its members ({exc}); "
                                  f"{again}") from None
            if left:
                controller.status.errors = [f"{iid}: {why}" for iid, why in left.items()]
                raise PluginError(
                    f"Group '{gid}': {len(left)} members are left; {again} to finish: "
                    + "; ".join(f"{iid}: {why}" for iid, why in sorted(left.items())))
            self._forget(gid)
            await asyncio.to_thread(self.store.delete_group, gid)

    async def inspect_groups(self) -> list[GroupSpec]:
        return [self._specs[gid] for gid in sorted(self._specs)]

    async def summaries(self) -> list[GroupSummary]:
        """Every group in a line, as its last pass left it (``Group.Summaries``, our
        extension): one call for ``infrakit group ls``, whatever the number of groups, and
        no call to any other plugin."""
        now = time.time()
        return [summary_of(self._controllers[gid], now) for gid in sorted(self._controllers)]

    async def previous_spec(self, id: str) -> GroupSpec | None:
        raw = await asyncio.to_thread(self.store.previous_spec, self._controller(id).group)
        return None if raw is None else _decode_spec(raw)

    async def events(self, id: str, since: float | None, after: int | None,
                     limit: int) -> list[GroupEvent]:
        """The group's history, oldest first (``Group.Events``, our extension)."""
        self._controller(id)
        return await asyncio.to_thread(self.store.events, id, since, after, limit)

    async def usage(self, id: str, since: float | None) -> list[UsageRecord]:
        """Member time of group ``id`` (every group's, destroyed ones included, when
        empty), per config, on the UTC days from the one holding ``since``
        (``Group.Usage``, our extension): what the store keeps and what the controllers
        have counted since their last write."""
        meters = [c.usage for gid, c in self._controllers.items() if not id or gid == id]
        return await usage_of(self.store, id or None, day_of(since) if since is not None
                              else 0, meters)


async def _pause(controller: GroupController, store: GroupStore, paused: bool,
                 verb: str) -> None:
    """Pause or resume ``controller``'s rolling update, durably, and say so in its events."""
    await asyncio.to_thread(store.set_paused, controller.group, paused)
    controller.set_paused(paused)
    controller.events.add("update paused" if paused else "update resumed",
                          "no member is replaced until it is resumed" if paused else
                          "members with an old config are replaced again", verb=verb)
    await controller.events.flush()


async def _members_fit(plugins: PluginLookup, gid: str, props: GroupProperties) -> None:
    """Refuse a spec whose members could never be provisioned: a member's spec, as the
    flavor prepares it (its Init), larger than a plugin accepts in one call. A flavor that
    cannot prepare one now, or is slow to, leaves it to the passes, which refuse each such
    member saying why."""
    lid = props.allocation.logical_ids[0] if props.allocation.logical_ids else None
    spec = Spec(properties=props.instance.properties, logical_id=lid,
                tags={GROUP_TAG: gid, CONFIG_TAG: config_sha(props)})
    try:
        prepared = await asyncio.wait_for(plugins.flavor(props.flavor.plugin).prepare(
            props.flavor.properties, spec, props.allocation, Index(group=gid)), PREPARE_WAIT)
    except (PluginError, asyncio.TimeoutError):
        return
    why = too_large(prepared, size_of(prepared))
    if why is not None:
        raise PluginError(f"Init: as flavor {props.flavor.plugin!r} prepares it, {why}; no "
                          "member could be provisioned")


async def _destroy_members(controller: GroupController, ids: list[str],
                           recorded: Callable[[], Awaitable[None]] | None) -> None:
    """Drain and destroy the members ``ids``; ``recorded`` runs once their destroys are
    recorded, before any is carried out (a shrink commits the smaller size there)."""
    # with their properties: the flavor drains them
    observed, _, _ = await controller.observe(judge=False, properties=True)
    members = {m.id: m.desc for m in observed}
    strangers = [i for i in ids if i not in members]
    if not ids or strangers:
        raise PluginError(f"Instances: {', '.join(map(repr, strangers)) or 'none given'}: "
                          f"not members of group '{controller.group}'")
    chosen = [members[i] for i in dict.fromkeys(ids)]
    ops = await controller.actuator.record_destroys(chosen)
    if recorded is not None:
        await recorded()
    failed = await controller.actuator.destroy_recorded(chosen, ops)
    for member in chosen:
        if member.id not in failed:
            controller.events.add("destroyed", "by request", member.id,
                                  verb="destroy-instances")
    await controller.events.flush()
    controller.wake()
    if failed:
        raise PluginError("; ".join(f"{iid}: {why}" for iid, why in failed.items()))
