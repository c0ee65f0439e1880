"""The default group plugin: Group/0.1.0 over durable specs and one controller per group.

It is a thin front: it keeps the committed specs in the store and one
:class:`~infrakit.plugins.group.controller.GroupController` per group, which does the rest.
It calls other plugins only through the lookup it is handed, so it runs the same over
sockets and, in tests, over plugin objects in the same process.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from infrakit.plugins.group.actuator import Fence
from infrakit.plugins.group.controller import STOP_WAIT, GroupController
from infrakit.plugins.group.spec import GroupProperties, parse_group, resized
from infrakit.plugins.group.storage import GroupStore
from infrakit.spi.calls import PluginLookup
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.group import GroupDescription, GroupSpec, GroupStatus

log = logging.getLogger("infrakit.group")

_decode_spec = msgspec.json.Decoder(GroupSpec).decode


class GroupPlugin:
    """Group/0.1.0: commit, describe, free, destroy and inspect groups.

    Committed specs live in ``store``, so a restart resumes every group; the server calls
    :meth:`start` before it accepts calls and :meth:`stop` after the last one.
    """

    def __init__(self, store: GroupStore, plugins: PluginLookup, poll: float,
                 fence: Fence | None = None) -> None:
        self.store = store
        self.plugins = plugins
        self.poll = poll
        self.fence = fence
        """Raises unless this process may act on providers (a manager's leadership)."""
        self._specs: dict[str, GroupSpec] = {}
        self._controllers: dict[str, GroupController] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        """One per group: the verbs that change a group take turns, so that the spec a
        controller runs is always the one stored last, whatever the callers' timing."""

    def _lock(self, gid: str) -> asyncio.Lock:
        return self._locks.setdefault(gid, asyncio.Lock())

    async def start(self) -> None:
        for gid, raw in (await asyncio.to_thread(self.store.load_groups)).items():
            spec = _decode_spec(raw)
            try:
                props = parse_group(spec)
            except PluginError as exc:
                log.error("group %s: stored spec no longer valid, not resumed: %s", gid, exc)
                continue
            self._watch(spec, props)
            log.info("group %s: resumed", gid)

    async def stop(self, wait: float = STOP_WAIT) -> None:
        """Stop every controller once the pass it is in has ended (or after ``wait``)."""
        await asyncio.gather(*(c.stop(wait) for c in self._controllers.values()))
        await self.plugins.close()

    def _watch(self, spec: GroupSpec, props: GroupProperties) -> None:
        self._specs[spec.id] = spec
        controller = self._controllers.get(spec.id)
        if controller is None:
            paused = self.store.paused(spec.id)
            controller = GroupController(spec.id, props, self.store, self.plugins, self.poll,
                                         paused, self.fence)
            self._controllers[spec.id] = controller
            controller.start()
        else:
            controller.update(props)

    def _forget(self, gid: str) -> None:
        del self._controllers[gid], self._specs[gid]

    def _controller(self, gid: str) -> GroupController:
        controller = self._controllers.get(gid)
        if controller is None:
            raise NotFoundError(f"Group '{gid}' is not being watched")
        return controller

    async def _validate(self, props: GroupProperties) -> None:
        """The flavor's and the instance plugin's own Validate, in the reference's order."""
        await self.plugins.flavor(props.flavor.plugin).validate(props.flavor.properties,
                                                                props.allocation)
        await self.plugins.instance(props.instance.plugin).validate(props.instance.properties)

    async def commit_group(self, spec: GroupSpec, pretend: bool) -> str:
        async with self._lock(spec.id):
            return await self._commit(spec, pretend)

    async def _commit(self, spec: GroupSpec, pretend: bool) -> str:
        props = parse_group(spec)
        await self._validate(props)
        controller = self._controllers.get(spec.id)
        details = (await controller.changes(props) if controller is not None
                   else f"Managing {props.target()} instances")
        if not pretend:
            await asyncio.to_thread(self.store.save_group, spec.id, msgspec.json.encode(spec))
            self._watch(spec, props)
        return details

    async def describe_group(self, id: str) -> GroupDescription:
        # as the reference answers: members without their properties
        members, _, decision = await self._controller(id).observe(judge=False)
        return GroupDescription(instances=[m.desc for m in members],
                                converged=decision.converged)

    async def describe_status(self, id: str) -> GroupStatus:
        return await self._controller(id).report()

    async def destroy_instances(self, id: str, instances: list[str], shrink: bool) -> str:
        async with self._lock(id):
            controller = self._controller(id)
            size = controller.props.allocation.size - len(set(instances))
            if shrink and controller.props.allocation.logical_ids:
                raise PluginError(f"Shrink: group '{id}' is allocated by LogicalIDs; commit a "
                                  "spec without the IDs to remove them")

            async def commit_smaller() -> None:
                await self._commit(resized(self._specs[id], size), False)

            await controller.destroy_members(instances, commit_smaller if shrink else None)
        what = f"reducing the group size to {size}" if shrink else "to be replaced"
        return f"Destroyed {len(set(instances))} instances, {what}"

    async def pause_update(self, id: str) -> str:
        controller = self._controller(id)
        await asyncio.to_thread(self.store.set_paused, id, True)
        controller.set_paused(True)
        return f"Paused the rolling update of group '{id}'"

    async def resume_update(self, id: str) -> str:
        controller = self._controller(id)
        await asyncio.to_thread(self.store.set_paused, id, False)
        controller.set_paused(False)
        return f"Resumed the rolling update of group '{id}'"

    async def cancel_update(self, id: str) -> str:
        """Roll back: commit again the spec that was committed before the current one."""
        async with self._lock(id):
            self._controller(id)
            raw = await asyncio.to_thread(self.store.previous_spec, id)
            if raw is None:
                raise PluginError(f"Group '{id}' has no earlier spec to go back to")
            details = await self._commit(_decode_spec(raw), False)
        await self.resume_update(id)
        return f"Rolled back to the previous spec: {details}"

    async def free_group(self, id: str) -> None:
        async with self._lock(id):
            await self._controller(id).stop()
            self._forget(id)
            await asyncio.to_thread(self.store.delete_group, id)

    async def destroy_group(self, id: str) -> None:
        async with self._lock(id):
            await self._controller(id).destroy_group()
            self._forget(id)
            await asyncio.to_thread(self.store.delete_group, id)

    async def inspect_groups(self) -> list[GroupSpec]:
        return [self._specs[gid] for gid in sorted(self._specs)]
