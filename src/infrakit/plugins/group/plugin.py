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
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Protocol

import msgspec

from infrakit.plugins.group.actuator import Fence
from infrakit.plugins.group.controller import STOP_WAIT, GroupController
from infrakit.plugins.group.metrics import COLLECTOR
from infrakit.plugins.group.plan import CONFIG_TAG, GROUP_TAG
from infrakit.plugins.group.preview import commit_summary, plan_change, plan_new
from infrakit.plugins.group.reach import Reachability
from infrakit.plugins.group.reads import GroupReads, decode_spec
from infrakit.plugins.group.shielded import ToTheEnd
from infrakit.plugins.group.sizing import size_of, too_large
from infrakit.plugins.group.spec import GroupProperties, config_sha, parse_group, resized
from infrakit.plugins.group.storage import GroupStore
from infrakit.plugins.group.usage import register_collector
from infrakit.plugins.group.views import GroupViews
from infrakit.spi.access import actor_name
from infrakit.spi.calls import PluginLookup
from infrakit.spi.errors import PluginError
from infrakit.spi.group import (
    GroupPlan,
    GroupSpec,
)
from infrakit.spi.types import Index, Spec

log = logging.getLogger("infrakit.group")

PREPARE_WAIT = 10.0
"""Seconds a commit waits for the flavor to prepare a member's spec, to measure it."""


class Watcher(Protocol):
    """Something that watches the groups for as long as a group plugin runs them (a
    manager's alerts): started once every stored group is resumed, stopped before the
    controllers stop."""

    async def start(self, groups: GroupPlugin) -> None: ...

    async def stop(self) -> None: ...


class GroupPlugin(GroupReads):
    """Group/0.1.0: commit, describe, free, destroy and inspect groups.

    Committed specs live in ``store``, so a restart resumes every group; the server calls
    :meth:`start` before it accepts calls and :meth:`stop` after the last one.
    """

    def __init__(self, store: GroupStore, plugins: PluginLookup, poll: float,
                 fence: Fence | None = None, watcher: Watcher | None = None,
                 group_fence: Callable[[str], Fence] | None = None) -> None:
        super().__init__(store)
        self.reach = Reachability(plugins)
        """Which plugins the groups' calls did not reach, and why."""
        self.plugins: PluginLookup = self.reach
        self.poll = poll
        self.fence, self.group_fence = fence, group_fence
        """Raise unless this process may act on providers (a manager's leadership); the
        second, when managers share the groups, gives each group's own."""
        self.watcher = watcher
        self._locks: dict[str, asyncio.Lock] = {}
        """One per group: the verbs that change a group take turns, so that the spec a
        controller runs is always the one stored last, whatever the callers' timing."""
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

    async def start(self, resume: bool = True) -> None:
        """Resume every stored group, or none (managers sharing groups: :meth:`resume`)."""
        COLLECTOR.watched[id(self)] = self._controllers
        register_collector()
        if resume:
            for gid, raw in (await asyncio.to_thread(self.store.load_groups)).items():
                await self.resume(gid, raw)
        if self.watcher is not None:
            await self.watcher.start(self)

    async def resume(self, gid: str, raw: bytes) -> None:
        """Watch the stored group ``gid`` (spec ``raw``) again, as it was left."""
        try:
            spec = decode_spec(raw)
            props = parse_group(spec)
        except (msgspec.DecodeError, PluginError) as exc:  # the others resume
            self._unloaded[gid] = (f"its spec stored in {self.store} cannot be read or "
                                   f"is no longer valid, so it was not resumed: {exc}")
            log.error("group %s: %s", gid, self._unloaded[gid])
            return
        destroying = await asyncio.to_thread(self.store.destroying, gid)
        self._watch(spec, props, destroying, resumed=True)
        await _remember_previous(self.store, self._controllers[gid])
        log.info("group %s: %s", gid, "being destroyed: 'infrakit group destroy' "
                 "finishes it" if destroying else "resumed")

    async def release(self, gid: str, wait: float = STOP_WAIT) -> None:
        """Stop watching ``gid`` after its pass, leaving it as stored: another leads it."""
        async with self._lock(gid):
            self._unloaded.pop(gid, None)
            if (controller := self._controllers.get(gid)) is not None:
                await controller.stop(wait)
                self._forget(gid)

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
            fence = self.group_fence(spec.id) if self.group_fence else self.fence
            controller = GroupController(spec.id, props, self.store, self.plugins, self.poll,
                                         paused, fence, resumed)
            controller.destroying = destroying
            controller.created = self.store.created(spec.id)
            controller.events.publish = self.views.published
            self._controllers[spec.id] = controller
            controller.start()
        else:
            controller.update(props)

    def _forget(self, gid: str) -> None:
        del self._controllers[gid], self._specs[gid]

    async def _validate(self, props: GroupProperties) -> None:
        """The flavor's and the instance plugin's own Validate, in the reference's order."""
        await self.plugins.flavor(props.flavor.plugin).validate(props.flavor.properties,
                                                                props.allocation)
        await self.plugins.instance(props.instance.plugin).validate(props.instance.properties)

    async def commit_group(self, spec: GroupSpec, pretend: bool) -> str:
        async with self._lock(spec.id):
            return await self._commit(spec, pretend)

    async def plan_group(self, spec: GroupSpec) -> GroupPlan:
        """What committing ``spec`` would do (``Group.PlanGroup``, our extension): the
        fields that change and what will happen to the members; checked as a commit is."""
        async with self._lock(spec.id):
            props, controller = await self._checked(spec)
            if controller is None:
                return await plan_new(self.plugins, spec.id, props)
            return await plan_change(controller, props)

    async def _checked(self, spec: GroupSpec) -> tuple[GroupProperties, GroupController | None]:
        """``spec`` checked as a commit checks it; its properties and group's controller."""
        props = parse_group(spec)
        controller = self._controllers.get(spec.id)
        if controller is not None and controller.destroying:
            raise PluginError(f"Group '{spec.id}' is being destroyed; run 'infrakit group "
                              f"destroy {spec.id}' to finish, then commit it anew")
        await self._validate(props)
        await _members_fit(self.plugins, spec.id, props)
        return props, controller

    async def _commit(self, spec: GroupSpec, pretend: bool, verb: str = "commit") -> str:
        props, controller = await self._checked(spec)
        details = await commit_summary(controller, self.plugins, spec.id, props)
        if not pretend:
            await asyncio.to_thread(self.store.save_group, spec.id, msgspec.json.encode(spec))
            self._unloaded.pop(spec.id, None)
            self._watch(spec, props)
            events = self._controllers[spec.id].events
            events.add("committed", details.splitlines()[0], verb=verb,
                       details={"changes": details})
            await events.flush()
        return details

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
            details = await self._commit(decode_spec(raw), False, "cancel-update")
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



async def _remember_previous(store: GroupStore, controller: GroupController) -> None:
    """The health check of the spec before the current one: members made from it during an
    update that a restart interrupted are judged by it still (and their usage is priced by
    its Instance block)."""
    raw = await asyncio.to_thread(store.previous_spec, controller.group)
    if raw is None:
        return
    with contextlib.suppress(PluginError, msgspec.DecodeError):
        old = parse_group(decode_spec(raw))
        controller.health.remember(config_sha(old), old.flavor)
        controller.usage.know(config_sha(old), msgspec.json.encode(old.instance))


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
